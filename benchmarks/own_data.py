"""Your own data: the default pipeline, untuned, on files as a user would give them (issue 10).

    python benchmarks/own_data.py --data-dir ../shared/data [--parts grouping,unknowns,no_oos,objective]

Parts (all by default):

* ``grouping``: BANKING77 (CSV folder: train.csv + test.csv, 77 intents, no domains, no
  out-of-scope class; val = 10% of train.csv, seeded, stratified) and CLINC150 written out
  as CSV files (text,label,domain) and read back with its domain column withheld. One flat
  head vs the assembly with automatic grouping (and, for CLINC150, with the true 10 domains)
  vs the same with a generalist.
* ``unknowns``: an assembly built from BANKING77 alone (no out-of-scope examples) against
  CLINC150's test queries outside its banking and credit-card domains and CLINC150's
  out-of-scope test queries; and with 10 BANKING77 intents held out of training.
* ``no_oos``: CLINC150 assembled without any of its out-of-scope items.
* ``objective``: experts on a weak encoder (``hashing``) with an ``mpnet`` generalist under the
  default escalation objective, against the generalist alone and the old fixed 13% budget.

Every system uses the library defaults unless the part says otherwise. Vectors come from the
embedding cache (encoded once, before any timing), so "fit s" is training and calibration
time, not encoding. Writes benchmarks/results/own_data.{json,md} and own_data_curve.png.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import environment  # noqa: E402

import manyfold  # noqa: E402
from manyfold import AssemblyConfig, assemble, evaluate, load_dataset  # noqa: E402
from manyfold._baselines import FlatClassifier  # noqa: E402
from manyfold._demo import pick_generalist_encoder  # noqa: E402
from manyfold._metrics import auroc  # noqa: E402
from manyfold.data import Dataset  # noqa: E402
from manyfold.encoders import cached_encoder, get_encoder  # noqa: E402

SMALL = "minilm"  # the experts' encoder (--small)
PARTS = ("grouping", "unknowns", "no_oos", "objective")
OOS = "out_of_scope"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def write_clinc_csv(data_dir: str, folder: Path) -> Path:
    """CLINC150 as a user would hand it over: train/val/test CSV files with text,label,domain (oos: domain empty)."""
    ds = load_dataset("clinc150", data_dir)
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("train", "val", "test"):
        s = ds.split(split)
        with open(folder / f"{split}.csv", "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(["text", "label", "domain"])
            for text, lab in zip(s.items, s.labels.tolist()):
                w.writerow([text, "oos" if lab == OOS else lab, "" if lab == OOS else ds.label_to_domain[lab]])
    return folder


def drop_labels(ds: Dataset, labels: set[str], splits: tuple[str, ...] = ("train", "val")) -> Dataset:
    """``ds`` without the items of ``labels`` in ``splits`` (a derived, in-memory dataset)."""
    new = {}
    for name, s in ds.splits.items():
        new[name] = s.take(np.nonzero(~np.isin(s.labels, list(labels)))[0]) if name in splits else s
    l2d = {k: v for k, v in ds.label_to_domain.items() if k not in labels} if ds.label_to_domain else {}
    # the out-of-scope label stays the data's: the test split still holds out-of-scope items
    return Dataset(ds.name, new, l2d, ds.oos_label, ds.modality, ds.info)


def warm(ds: Dataset, specs: list[str]) -> None:
    items = [it for s in ds.splits.values() for it in s.items]
    for spec in specs:
        for part in spec[len("concat:"):].split("+") if spec.startswith("concat:") else [spec]:
            t0 = time.perf_counter()
            cached_encoder(get_encoder(part)).encode(items)
            log(f"  {part}: {len(items)} items ready in {time.perf_counter() - t0:.0f} s")


def routing_topk(asm: Any, X: np.ndarray, y: np.ndarray) -> float:
    """Share of in-scope items whose true label's expert is among the experts they are routed to (top-k)."""
    out = asm.forward(X, None, escalate=False)
    names = asm.router.experts_
    ins = np.isin(y, asm.labels_)
    hit = [asm.label_to_expert_[lab] in {names[k] for k in out.expert_idx[i]} for i, lab in enumerate(y.tolist()) if ins[i]]
    return float(np.mean(hit))


def flat_row(ds: Dataset, enc: Any) -> dict[str, Any]:
    tr, va, te = ds.split("train"), ds.split("val"), ds.split("test")
    relabel = (lambda y: np.where(y == ds.oos_label, OOS, y)) if ds.oos_label else (lambda y: y)
    t0 = time.perf_counter()
    flat = FlatClassifier(oos_label=OOS).fit(enc.encode(list(tr.items)), relabel(tr.labels),
                                              X_val=enc.encode(list(va.items)), y_val=relabel(va.labels))
    fit_s = time.perf_counter() - t0
    rep = flat.report(enc.encode(list(te.items)), relabel(te.labels))
    return {"system": f"one flat head ({SMALL})", "experts": 1, **rep, "fit_seconds": round(fit_s, 2),
            "routing_topk": None, "escalation_rate": 0.0}


def asm_rows(ds: Dataset, tag: str, gen: str | None, **kw: Any) -> list[dict[str, Any]]:
    te = ds.split("test")
    t0 = time.perf_counter()
    asm = assemble(ds, encoder=SMALL, generalist=gen, **kw)
    fit_s = time.perf_counter() - t0
    X = asm.encoder.encode(list(te.items))
    y = np.where(te.labels == ds.oos_label, OOS, te.labels) if ds.oos_label else te.labels
    rows = []
    for esc in ((False, True) if gen else (False,)):
        rep = evaluate(asm, list(te.items), y, escalate=esc)
        rows.append({"system": f"assembly, {tag}" + (" + generalist" if esc else ""), "experts": len(asm.experts),
                     "in_scope_accuracy_closed": rep["in_scope_accuracy_closed"], "in_scope_accuracy": rep["in_scope_accuracy"],
                     "oos_auroc": rep["oos_auroc"], "oos_recall": rep["oos_recall"], "escalation_rate": rep["escalation_rate"],
                     "routing_topk": routing_topk(asm, X, y), "fit_seconds": round(fit_s, 2),
                     "grouping": asm.provenance_["grouping"], "calibration": {k: v for k, v in asm.calibration_.items() if k != "curve"}})
    return rows


def part_grouping(args: argparse.Namespace, tmp: Path, gen: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    bank = load_dataset(str(Path(args.data_dir) / "banking77"), val_share=0.1, seed=0)
    clinc_dir = write_clinc_csv(args.data_dir, tmp / "clinc150_csv")
    clinc_auto = load_dataset(str(clinc_dir), domain_col="")
    clinc_dom = load_dataset(str(clinc_dir))
    for key, ds, extra in (("banking77", bank, []), ("clinc150", clinc_auto, [clinc_dom])):
        log(f"{key}: {ds}")
        warm(ds, [SMALL, gen])
        enc = cached_encoder(get_encoder(SMALL))
        rows = [flat_row(ds, enc)]
        auto = asm_rows(ds, "automatic grouping", gen)
        rows += auto
        if auto[0]["experts"] == 1:
            rows += asm_rows(ds, "10 groups", gen, n_experts=10)
        for d in extra:
            rows += asm_rows(d, f"the true {len(d.domains)} domains", gen)
        flat_acc = rows[0]["in_scope_accuracy_closed"]
        out[key] = {"dataset": repr(ds), "rows": rows, "experts_chosen": auto[0]["experts"],
                    "auto_minus_flat_closed_points": round(100 * (auto[0]["in_scope_accuracy_closed"] - flat_acc), 3),
                    "check_auto_within_0.5_points_of_flat": auto[0]["in_scope_accuracy_closed"] >= flat_acc - 0.005}
        log(f"{key}: auto grouping {auto[0]['experts']} experts, closed acc {auto[0]['in_scope_accuracy_closed']:.4f} "
            f"vs flat {flat_acc:.4f}")
    return out


def _scores(asm: Any, items: list[str], esc: bool) -> tuple[np.ndarray, np.ndarray]:
    out = asm.forward(asm.encoder.encode(items), items, escalate=esc)
    return out.oos_score, out.is_oos


def part_unknowns(args: argparse.Namespace, gen: str) -> dict[str, Any]:
    bank = load_dataset(str(Path(args.data_dir) / "banking77"), val_share=0.1, seed=0)
    clinc = load_dataset("clinc150", args.data_dir)
    te_c = clinc.split("test")
    far = [t for t, lab in zip(te_c.items, te_c.labels.tolist())
           if lab == OOS or clinc.label_to_domain[lab] not in ("banking", "credit_cards")]
    n_oos = int((te_c.labels == OOS).sum())
    warm(bank, [SMALL, gen])
    asm = assemble(bank, encoder=SMALL, generalist=gen)
    known = list(bank.split("test").items)
    res: dict[str, Any] = {"assembly": {"experts": len(asm.experts), "grouping": asm.provenance_["grouping"],
                                        "calibration": {k: v for k, v in asm.calibration_.items() if k != "curve"}},
                           "n_known_test": len(known), "n_clinc_outside": len(far), "n_clinc_outside_oos_items": n_oos}
    for esc in (False, True):
        s_known, c_known = _scores(asm, known, esc)
        s_far, c_far = _scores(asm, far, esc)
        res["clinc_outside" + ("_escalating" if esc else "_experts_only")] = {
            "auroc": auroc(np.r_[s_known, s_far], np.r_[np.zeros(len(known), bool), np.ones(len(far), bool)]),
            "recall_at_own_threshold": float(c_far.mean()), "false_oos_rate_on_banking77_test": float(c_known.mean())}
    # ten intents never seen in training
    rng = np.random.default_rng(0)
    held = sorted(rng.choice(bank.labels, size=10, replace=False).tolist())
    part = drop_labels(bank, set(held))
    asm10 = assemble(part, encoder=SMALL, generalist=gen)
    te = bank.split("test")
    is_held = np.isin(te.labels, held)
    res["held_out_intents"] = {"labels": held, "n_held_out_test": int(is_held.sum()), "n_known_test": int((~is_held).sum())}
    for esc in (False, True):
        s, c = _scores(asm10, list(te.items), esc)
        res["held_out_intents"]["escalating" if esc else "experts_only"] = {
            "auroc": auroc(s, is_held), "recall_at_own_threshold": float(c[is_held].mean()),
            "false_oos_rate_on_known": float(c[~is_held].mean())}
    esc_key = "clinc_outside_escalating"
    res["check_clinc_outside_auroc_ge_0.97"] = res[esc_key]["auroc"] >= 0.97
    res["check_held_out_auroc_ge_0.90"] = res["held_out_intents"]["escalating"]["auroc"] >= 0.90
    log(f"unknowns: clinc outside AUROC {res[esc_key]['auroc']:.4f}, held-out AUROC "
        f"{res['held_out_intents']['escalating']['auroc']:.4f}")
    return res


def part_no_oos(args: argparse.Namespace, gen: str) -> dict[str, Any]:
    clinc = load_dataset("clinc150", args.data_dir)
    no_oos = drop_labels(clinc, {OOS})
    warm(clinc, [SMALL, gen])
    t0 = time.perf_counter()
    asm = assemble(no_oos, encoder=SMALL, generalist=gen)
    fit_s = time.perf_counter() - t0
    te = clinc.split("test")
    res: dict[str, Any] = {"fit_seconds": round(fit_s, 2), "calibration": {k: v for k, v in asm.calibration_.items() if k != "curve"}}
    for esc in (False, True):
        rep = evaluate(asm, list(te.items), te.labels, escalate=esc)
        res["escalating" if esc else "experts_only"] = {k: rep[k] for k in (
            "in_scope_accuracy_closed", "in_scope_accuracy", "oos_auroc", "oos_recall", "escalation_rate", "n_oos")}
    res["check_oos_auroc_ge_0.965"] = res["escalating"]["oos_auroc"] >= 0.965
    log(f"no_oos: AUROC {res['escalating']['oos_auroc']:.4f} (experts only {res['experts_only']['oos_auroc']:.4f})")
    return res


def part_objective(args: argparse.Namespace, out_dir: Path) -> dict[str, Any]:
    clinc = load_dataset("clinc150", args.data_dir)
    warm(clinc, ["hashing", "mpnet"])
    te = clinc.split("test")
    ins = te.labels != OOS
    res: dict[str, Any] = {"experts_encoder": "hashing", "generalist_encoder": "mpnet"}
    systems = {"knee (default)": AssemblyConfig(), "fixed budget 13% (before)":
               AssemblyConfig(escalation_objective="budget", max_escalation_rate=0.13),
               "knee, capped at 20%": AssemblyConfig(max_escalation_rate=0.20)}
    gen_obj = None
    curves = {}
    for name, cfg in systems.items():
        asm = assemble(clinc, encoder="hashing", generalist=gen_obj or "mpnet", config=cfg)
        gen_obj = asm.generalist  # fitted once, shared
        rep = evaluate(asm, list(te.items), te.labels, escalate=True)
        small = evaluate(asm, list(te.items), te.labels, escalate=False)
        cal = asm.calibration_
        res[name] = {"in_scope_accuracy_closed": rep["in_scope_accuracy_closed"], "in_scope_accuracy": rep["in_scope_accuracy"],
                     "experts_only_closed": small["in_scope_accuracy_closed"], "escalation_rate": rep["escalation_rate"],
                     "oos_auroc": rep["oos_auroc"], "escalation_budget": cal["escalation_budget"],
                     "budget_binds": cal["budget_binds"], "val_in_scope_accuracy": cal["val_in_scope_accuracy"]}
        curves[name] = (cal["curve"], cal["escalation_budget"], cal["val_in_scope_accuracy"])
    g = gen_obj
    pg = g.predict_proba(list(te.items))
    keep = g.labels_ != OOS
    res["generalist_alone_closed"] = float((g.labels_[keep][pg[:, keep].argmax(1)][ins] == te.labels[ins]).mean())
    knee = res["knee (default)"]
    res["check_knee_within_0.5_points_of_generalist"] = knee["in_scope_accuracy_closed"] >= res["generalist_alone_closed"] - 0.005
    log(f"objective: knee {knee['in_scope_accuracy_closed']:.4f} at {knee['escalation_rate']:.3f} escalated; "
        f"generalist alone {res['generalist_alone_closed']:.4f}")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        curve = curves["knee (default)"][0]
        ax.plot(np.array(curve["rate"]) * 100, np.array(curve["accuracy"]) * 100, "-", color="0.4", label="validation curve")
        for (name, (c, b, acc)), m in zip(curves.items(), "o^s"):
            i = c["budget"].index(b) if b in c["budget"] else None
            rate = c["rate"][i] if i is not None else b
            ax.plot(100 * rate, 100 * acc, m, ms=9, label=f"{name}: {100 * acc:.1f}% at {100 * rate:.0f}%")
        ax.set_xlabel("in-scope validation items escalated (%)")
        ax.set_ylabel("in-scope validation accuracy, OOS on (%)")
        ax.set_title("CLINC150: hashing experts + mpnet generalist")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
        fig.tight_layout()
        fig.savefig(out_dir / "own_data_curve.png", dpi=110)
        res["plot"] = "own_data_curve.png"
    except ImportError:
        res["plot"] = None
    return res


def _run_line(part: dict[str, Any]) -> str:
    return (f"Command: `{part.get('command_line')}` ({part.get('date')}, load at start {part.get('load_at_start')}, "
            f"{part.get('seconds')} s)")


def _pct(v: Any) -> str:
    return "n/a" if v is None else f"{100 * v:.2f}%"


def markdown(res: dict[str, Any]) -> str:
    L = ["# Your own data: the default pipeline on files, untuned", "",
         f"Machine: {res['machine']['cores']} cores, {res['machine']['cpu']}; versions: {res['versions']}. "
         "Each part below names the command that made it, its date and the load at its start.", "",
         f"Small encoder: `{res['small']}`; generalist: `{res['generalist']}`. Library defaults everywhere "
         "(escalation objective `knee`, no cap). *closed*: argmax over known labels; *open*: an in-scope item "
         "called out-of-scope counts as an error; *routing top-k*: the true label's expert among the experts an item "
         "is routed to. Fit seconds exclude encoding (cached vectors); they were measured while other jobs shared the two "
         "cores (see each part's load at start), so compare them within a table, not across runs.", ""]
    if "grouping" in res:
        L += ["## Automatic grouping vs one flat head vs the true domains", "", _run_line(res["grouping"]), ""]
        for key, r in res["grouping"].items():
            if not isinstance(r, dict):
                continue
            L += [f"### {key}: {r['dataset']}", "", f"Experts chosen by automatic grouping: **{r['experts_chosen']}**; "
                  f"auto - flat (closed): {r['auto_minus_flat_closed_points']:+.2f} points "
                  f"({'PASS' if r['check_auto_within_0.5_points_of_flat'] else 'FAIL'}: at most 0.5 below).", "",
                  "| system | experts | closed acc | open acc | OOS AUROC | routing top-k | escalated | fit s |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
            for row in r["rows"]:
                au = row.get("oos_auroc")
                L.append(f"| {row['system']} | {row['experts']} | {_pct(row['in_scope_accuracy_closed'])} | "
                         f"{_pct(row['in_scope_accuracy'])} | {'n/a' if au is None else f'{au:.4f}'} | "
                         f"{_pct(row['routing_topk'])} | {_pct(row['escalation_rate'])} | {row['fit_seconds']} |")
            L.append("")
    if "unknowns" in res:
        u = res["unknowns"]
        L += ["## Out of scope without out-of-scope examples: BANKING77 alone", "", _run_line(u), "",
              f"Assembly from BANKING77 only ({u['assembly']['experts']} experts, out-of-scope method "
              f"`{u['assembly']['calibration'].get('oos_method')}`). Negatives: BANKING77 test ({u['n_known_test']}). ",
              "", "| unknowns | path | AUROC | recall at own threshold | false OOS on known |", "| --- | --- | ---: | ---: | ---: |"]
        for k, lab in (("clinc_outside_experts_only", "experts only"), ("clinc_outside_escalating", "escalating")):
            v = u[k]
            L.append(f"| CLINC150 test outside banking/credit cards + its OOS ({u['n_clinc_outside']}) | {lab} | "
                     f"{v['auroc']:.4f} | {_pct(v['recall_at_own_threshold'])} | {_pct(v['false_oos_rate_on_banking77_test'])} |")
        h = u["held_out_intents"]
        for k in ("experts_only", "escalating"):
            v = h[k]
            L.append(f"| 10 BANKING77 intents held out of training ({h['n_held_out_test']}) | {k.replace('_', ' ')} | "
                     f"{v['auroc']:.4f} | {_pct(v['recall_at_own_threshold'])} | {_pct(v['false_oos_rate_on_known'])} |")
        L += ["", f"Held-out intents: {', '.join(h['labels'])}.",
              f"Checks: CLINC150 outside AUROC >= 0.97: {'PASS' if u['check_clinc_outside_auroc_ge_0.97'] else 'FAIL'}; "
              f"held-out AUROC >= 0.90: {'PASS' if u['check_held_out_auroc_ge_0.90'] else 'FAIL'}.", ""]
    if "no_oos" in res:
        n = res["no_oos"]
        L += ["## CLINC150 assembled without any of its out-of-scope items", "", _run_line(n), "",
              "| path | closed acc | open acc | OOS AUROC | OOS recall | escalated |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
        for k in ("experts_only", "escalating"):
            v = n[k]
            L.append(f"| {k.replace('_', ' ')} | {_pct(v['in_scope_accuracy_closed'])} | {_pct(v['in_scope_accuracy'])} | "
                     f"{v['oos_auroc']:.4f} | {_pct(v['oos_recall'])} | {_pct(v['escalation_rate'])} |")
        L += ["", f"Out-of-scope method: `{n['calibration'].get('oos_method')}` ({n['calibration'].get('held_out_folds')} folds); "
              f"check OOS AUROC >= 0.965: {'PASS' if n['check_oos_auroc_ge_0.965'] else 'FAIL'}.", ""]
    if "objective" in res:
        o = res["objective"]
        L += ["## The escalation budget follows the objective: weak experts, strong generalist", "", _run_line(o), "",
              f"Experts on `{o['experts_encoder']}`, generalist on `{o['generalist_encoder']}` (CLINC150, test split). "
              f"Generalist alone (closed): **{_pct(o['generalist_alone_closed'])}**.", "",
              "| objective | closed acc | open acc | experts only (closed) | escalated (test) | budget chosen (val) | budget binds |",
              "| --- | ---: | ---: | ---: | ---: | ---: | --- |"]
        for name in ("knee (default)", "fixed budget 13% (before)", "knee, capped at 20%"):
            v = o[name]
            L.append(f"| {name} | {_pct(v['in_scope_accuracy_closed'])} | {_pct(v['in_scope_accuracy'])} | "
                     f"{_pct(v['experts_only_closed'])} | {_pct(v['escalation_rate'])} | {_pct(v['escalation_budget'])} | "
                     f"{'yes' if v['budget_binds'] else 'no'} |")
        L += ["", f"Check: default objective within 0.5 points of the generalist alone: "
              f"{'PASS' if o['check_knee_within_0.5_points_of_generalist'] else 'FAIL'}.", ""]
        if o.get("plot"):
            L += [f"![validation curve and chosen points]({o['plot']})", ""]
    return "\n".join(L)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated: {', '.join(PARTS)}")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    ap.add_argument("--small", default="minilm", help="the experts' encoder (a smoke run can use hashing)")
    ap.add_argument("--generalist", default=None, help="the generalist's encoder (default: the demo's choice)")
    args = ap.parse_args()
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    bad = sorted(set(parts) - set(PARTS))
    if bad:
        ap.error(f"unknown parts {bad}; valid choices: {', '.join(PARTS)}")
    import os

    import torch

    torch.set_num_threads(args.threads)
    load = os.getloadavg()
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    global SMALL
    SMALL = args.small
    gen, note = pick_generalist_encoder(args.generalist)
    if note:
        log(f"note: {note}")
    res: dict[str, Any] = {**environment(), "load_at_start": [round(x, 2) for x in load], "generalist": gen, "small": SMALL,
                           "manyfold": manyfold.__version__}
    path = out_dir / "own_data.json"
    if path.is_file():  # parts run separately accumulate in one result file
        old = json.loads(path.read_text())
        res.update({k: old[k] for k in PARTS if k in old and k not in parts})
    with tempfile.TemporaryDirectory() as tmp:
        for p in parts:
            t0 = time.perf_counter()
            log(f"part {p} ...")
            if p == "grouping":
                res[p] = part_grouping(args, Path(tmp), gen)
            elif p == "unknowns":
                res[p] = part_unknowns(args, gen)
            elif p == "no_oos":
                res[p] = part_no_oos(args, gen)
            else:
                res[p] = part_objective(args, out_dir)
            res[p]["seconds"] = round(time.perf_counter() - t0, 1)
            res[p]["command_line"] = res["command"]
            res[p]["date"] = res["date"]
            res[p]["load_at_start"] = res["load_at_start"]
            path.write_text(json.dumps(res, indent=2, default=str) + "\n")
    (out_dir / "own_data.md").write_text(markdown(res))
    print(markdown(res))


if __name__ == "__main__":
    main()
