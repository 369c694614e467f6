"""MNIST + Fashion-MNIST as one model: a digits expert and a clothing expert trained independently, a router
over them on raw pixels, two clothing classes never seen in training, and the image generalist behind them (issue 11).

    python benchmarks/image_assembly.py --data-dir ../shared/data [--expert-seconds 150] [--generalist-size 64]
        [--threads 2] [--quick]

The data, built in memory as one :class:`manyfold.data.Dataset` (labels ``digit_0`` .. ``digit_9`` and
``fashion_<class>``, domains ``digits`` and ``fashion``): each loader's own splits (train = the first 55,000
training images, val = the last 5,000, test = the 10,000 test images) of both sets, with Fashion-MNIST's
``Shirt`` and ``Bag`` removed from train and val entirely: 18 known labels. Their 2,000 test images are the
unknowns (labelled out-of-scope in the test split).

The assembly is the library's own: ``manyfold.assemble(dataset, expert_params={"max_seconds": S}, ...)`` with
the image defaults - raw pixels (28x28) as the routing encoder, a linear router, one ``CNNExpert`` per domain
(each trained only on its own labels, capped at ``--expert-seconds``), the image generalist (a linear head on
frozen EfficientNet-Lite0 features at ``--generalist-size`` px, not its 224 px training resolution) and the
escalation policy with its default ``knee`` objective. The training data hold no out-of-scope items, so
out-of-scope detection is calibrated with ``oos_calibration="held_out_labels"`` (labels held out in folds
play the unknowns). The generalist's features go through the embedding cache (``MANYFOLD_HOME/cache/embeddings``:
Fashion-MNIST's are shared with ``benchmarks/image_backbones.py``); the pixels are not cached (cheaper to compute).

Reported, on the test split, through ``manyfold.evaluate`` and, per subset, ``Assembly.forward`` +
``manyfold._metrics.evaluate_arrays`` (what ``evaluate`` runs): routing accuracy on known items (target >= 99.5%);
in-scope accuracy of the assembly on each set against each expert alone on its own test items (target: within
0.3 points); out-of-scope AUROC of the unknowns against the known test items (target >= 0.80), per unknown class
too, and their recall at the assembly's own thresholds; the escalation sweep (confidence threshold from nothing
to everything escalated): accuracy against escalation rate and cost in ms per item (the experts' stage, batched,
plus the escalated share of the generalist's, both measured here with uncached encoders).

``--quick``: a smoke run of a minute or two (150 train / 50 val / 100 test images per label, 20 s per expert),
written to ``image_assembly_quick.*``, not a result. Writes benchmarks/results/image_assembly.{json,md,png}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import environment, pyplot  # noqa: E402
from image_backbones import DEFAULT_DATA, batched_ms, single_ms, timed  # noqa: E402

UNKNOWN = ("Shirt", "Bag")
TARGETS = {"routing_accuracy": 0.995, "within_points": 0.3, "oos_auroc": 0.80}
QUICK_CAP = {"train": 150, "val": 50, "test": 100}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def cap(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """At most ``n`` items of every label (seeded), in their original order."""
    rng = np.random.default_rng(seed)
    keep = [rng.permutation(np.nonzero(labels == lab)[0])[:n] for lab in np.unique(labels)]
    return np.sort(np.concatenate(keep))


def combined(data_dir: str, quick: bool) -> tuple[Any, np.ndarray]:
    """The MNIST + Fashion-MNIST dataset (Shirt and Bag only in the test split, as out-of-scope) and the test
    split's true labels (``fashion_Shirt`` / ``fashion_Bag`` where the dataset says out-of-scope)."""
    from manyfold.data import FASHION_MNIST_CLASSES, OOS_LABEL, Dataset, Split, load_mnist

    mn = load_mnist(data_dir, kind="mnist", download=False, progress=False)
    fa = load_mnist(data_dir, kind="fashion-mnist", download=False, progress=False)
    splits, truth = {}, None
    for s in ("train", "val", "test"):
        a, b = mn.split(s), fa.split(s)
        items = np.concatenate([a.items, b.items])
        raw = np.concatenate([np.char.add("digit_", a.labels), np.char.add("fashion_", b.labels)])
        unknown = np.isin(raw, [f"fashion_{c}" for c in UNKNOWN])
        keep = np.ones(len(raw), bool) if s == "test" else ~unknown
        if quick:
            keep &= np.isin(np.arange(len(raw)), cap(raw, QUICK_CAP[s], {"train": 0, "val": 1, "test": 2}[s]))
        items, raw, unknown = items[keep], raw[keep], unknown[keep]
        splits[s] = Split(items, np.where(unknown, OOS_LABEL, raw))
        if s == "test":
            truth = raw
    l2d = {f"digit_{d}": "digits" for d in range(10)}
    l2d.update({f"fashion_{c}": "fashion" for c in FASHION_MNIST_CLASSES if c not in UNKNOWN})
    info = {"built_from": ["mnist", "fashion-mnist"], "left_out": [f"fashion_{c}" for c in UNKNOWN], "quick": quick}
    return Dataset("mnist+fashion-mnist", splits, l2d, OOS_LABEL, "image", info), truth


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", default=str(DEFAULT_DATA), help="folder holding mnist/ and fashion-mnist/")
    ap.add_argument("--expert-seconds", type=float, default=150.0, help="training-time cap of each CNN expert (0: none)")
    ap.add_argument("--generalist-size", type=int, default=64, help="EfficientNet-Lite0 input resolution (pixels)")
    ap.add_argument("--sweep-points", type=int, default=15)
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    ap.add_argument("--quick", action="store_true", help="a smoke run of a minute or two (not a result)")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = ap.parse_args()
    if args.quick:
        args.expert_seconds = min(args.expert_seconds or 20.0, 20.0)

    import torch

    torch.set_num_threads(args.threads)
    import manyfold
    from manyfold._metrics import auroc, evaluate_arrays
    from manyfold._policy import NEVER
    from manyfold.encoders import EfficientNetLite0Encoder, EmbeddingCache, cached_encoder
    from manyfold.generalists import HeadGeneralist

    t_start = time.perf_counter()
    report: dict[str, Any] = {"env": environment(), "load_at_start": [round(v, 2) for v in os.getloadavg()],
                              "quick": args.quick, "threads": args.threads, "generalist_size": args.generalist_size,
                              "expert_seconds": args.expert_seconds or None, "unknown_classes": list(UNKNOWN)}
    ds, truth = combined(args.data_dir, args.quick)
    te = ds.split("test")
    y = te.labels
    oos = ds.oos_label
    report["data"] = {k: len(v) for k, v in ds.splits.items()} | {"labels": len(ds.labels), "domains": ds.domains,
                                                                  "n_unknown_test": int((y == oos).sum())}
    log(f"{ds}")

    # -- the generalist's features first (timed apart; the assembly then reads them from the cache) ------------
    raw = EfficientNetLite0Encoder(size=args.generalist_size)
    probe = te.items[:256]
    raw.encode(probe[:16])
    _, wall, cpu = timed(lambda: raw.encode(probe))
    report["generalist_features"] = {"ms_per_image": round(1e3 * wall / len(probe), 3),
                                     "cpu_ms_per_image": round(1e3 * cpu / len(probe), 3), "encoder": raw.id}
    n_all = sum(len(s) for s in ds.splits.values())
    log(f"EfficientNet-Lite0 at {args.generalist_size}px: {1e3 * wall / len(probe):.2f} ms/image: {n_all} images would take "
        f"{n_all * wall / len(probe) / 60:.1f} min uncached")
    gen_enc = cached_encoder(raw, EmbeddingCache())
    bar = sys.stderr.isatty()
    _, wall, cpu = timed(lambda: [gen_enc.encode(list(ds.split(s).items), show_progress=bar) for s in ("train", "val", "test")])
    report["generalist_features"].update({"images": n_all, "computed_now": gen_enc.misses, "from_cache": gen_enc.hits,
                                          "wall_seconds": round(wall, 1), "cpu_seconds": round(cpu, 1)})
    log(f"generalist features: {gen_enc.misses} computed, {gen_enc.hits} from the cache, {wall:.0f} s")

    # -- the assembly, by the library's own path -----------------------------------------------------------------
    config = manyfold.AssemblyConfig(oos_calibration="held_out_labels")
    gen = HeadGeneralist(gen_enc, oos_label=config.oos_label)
    asm, wall, cpu = timed(lambda: manyfold.assemble(
        ds, generalist=gen, cache=False, config=config, show_progress=bar,
        expert_params={"max_seconds": args.expert_seconds} if args.expert_seconds else None))
    assert len(asm.labels_) == 18 or args.quick, asm.labels_
    experts = {e.name: {"labels": e.labels_.tolist(), "train_seconds": e.card_.lineage["train_seconds"],
                        "epochs": e.card_.lineage["epochs"], "best_epoch": e.card_.lineage["best_epoch"],
                        "stopped": e.card_.lineage["stopped"], "val_accuracy": round(e.card_.metrics["val_accuracy"], 5),
                        "parameters": e.card_.size} for e in asm.experts}
    report["assembly"] = {"repr": repr(asm), "labels": asm.labels_.tolist(), "fit_wall_seconds": round(wall, 1),
                          "fit_cpu_seconds": round(cpu, 1), "experts": experts, "top_k": config.top_k,
                          "calibration": {k: v for k, v in asm.calibration_.items() if k != "curve"}}
    log(f"assembled in {wall:.0f} s (CPU {cpu:.0f} s): {asm}; experts {experts}")

    # -- each expert alone, on its own test items -----------------------------------------------------------------
    sets = {"mnist": np.char.startswith(y.astype(str), "digit_"),
            "fashion": np.char.startswith(y.astype(str), "fashion_")}
    alone = {}
    for name, rows in (("digits", sets["mnist"]), ("fashion", sets["fashion"])):
        e = asm.expert(name)
        alone[name] = round(float((e.predict(te.items[rows]) == y[rows]).mean()), 5)
    report["experts_alone"] = alone
    log(f"experts alone: {alone}")

    # -- the assembly: the library's evaluate (headline), then per subset from the same forward pass -------------
    headline = {}
    for esc in (False, True):
        rep = manyfold.evaluate(asm, te.items, y, escalate=esc)
        headline["escalate" if esc else "experts_only"] = {k: v for k, v in rep.items() if k != "not_measured"}
        log(f"evaluate(escalate={esc}): " + ", ".join(f"{k} {rep[k]}" for k in (
            "in_scope_accuracy_closed", "in_scope_accuracy", "routing_accuracy", "oos_auroc", "oos_recall",
            "escalation_rate")))
    report["evaluate"] = headline
    items = list(te.items)
    X = asm.encoder.encode(items)
    G = asm.generalist.encode(items)  # from the cache

    def gsig(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return asm.generalist.signals_features(G[rows])

    known = y != oos
    subsets = {"mnist": sets["mnist"], "fashion_known": sets["fashion"], "known": known, "all": np.ones(len(y), bool)}
    for c in UNKNOWN:
        subsets[f"known+{c}"] = known | (truth == f"fashion_{c}")
    by_mode: dict[str, dict[str, Any]] = {}
    for esc in (False, True):
        out = asm.forward(X, items, escalate=esc, generalist_signals=gsig)
        full = evaluate_arrays(asm, out, y)
        ref = headline["escalate" if esc else "experts_only"]
        for k in ("in_scope_accuracy", "oos_auroc", "routing_accuracy", "escalation_rate"):  # the same numbers
            assert abs(full[k] - ref[k]) < 1e-9, (k, full[k], ref[k])
        by_mode["escalate" if esc else "experts_only"] = {
            name: evaluate_arrays(asm, out.take(np.nonzero(rows)[0]), y[rows]) for name, rows in subsets.items()}
    report["subsets"] = by_mode

    # -- escalation sweep: the confidence threshold from nothing to everything escalated -------------------------
    saved = asm.policy_
    stage = asm._small_stage(X, config.top_k, items)  # does not depend on the thresholds: computed once for the sweep
    conf = stage[3].max(1)
    ths = [0.0, *np.quantile(conf[known], np.linspace(0, 1, args.sweep_points)[1:-1]).tolist(), NEVER]
    sweep = []
    try:
        asm._small_stage = lambda *a, **k: stage  # type: ignore[method-assign]
        for th in ths:
            asm.policy_ = saved.with_thresholds(escalate_oos_threshold=NEVER, confidence_threshold=float(th))
            out = asm.forward(X, items, escalate=True, generalist_signals=gsig)
            k_rep = evaluate_arrays(asm, out.take(np.nonzero(known)[0]), y[known])
            a_rep = evaluate_arrays(asm, out, y)
            sweep.append({"threshold": float(th), "escalation_rate": k_rep["escalation_rate"],
                          "in_scope_accuracy_closed": k_rep["in_scope_accuracy_closed"],
                          "in_scope_accuracy": k_rep["in_scope_accuracy"], "oos_auroc": a_rep["oos_auroc"],
                          "oos_recall": a_rep["oos_recall"]})
    finally:
        del asm._small_stage
        asm.policy_ = saved
    g_acc = float((asm.generalist.labels_[asm.generalist.predict_proba_features(G[known]).argmax(1)] == y[known]).mean())
    report["sweep"] = sweep
    report["generalist_alone_known_accuracy"] = round(g_acc, 5)

    # -- cost (uncached encoders): the experts' stage, the generalist, and the assembly at its own operating point --
    sample = te.items[:2000] if not args.quick else te.items[:500]
    calls = 100 if not args.quick else 20
    small = {"batched": batched_ms(lambda b: asm.predict(b, escalate=False), sample),
             "single": single_ms(lambda b: asm.predict(b, escalate=False), sample, calls)}
    big = {"batched": batched_ms(lambda b: asm.generalist.signals_features(raw.encode(b)), sample, batch=500),
           "single": single_ms(lambda b: asm.generalist.signals_features(raw.encode(b)), sample, max(10, calls // 4))}
    asm.generalist._encoder = raw  # the assembly as a server runs it, without the cache
    try:
        policy = {"batched": batched_ms(lambda b: asm.predict(b, escalate=True), sample)}
    finally:
        asm.generalist._encoder = gen_enc
    report["cost"] = {"experts_stage": small, "generalist": big, "assembly_at_policy": policy}
    s_ms, g_ms = small["batched"]["ms_per_image"], big["batched"]["ms_per_image"]
    for p in sweep:
        p["ms_per_item"] = round(s_ms + p["escalation_rate"] * g_ms, 4)
    log(f"cost ms/item batched: experts' stage {s_ms}, generalist {g_ms}, assembly at its policy {policy['batched']}")

    # -- per unknown class AUROC (stage 1 and the policy's), and the targets ------------------------------------
    per_class = {}
    for mode, reps in by_mode.items():
        per_class[mode] = {c: {"oos_auroc": reps[f"known+{c}"]["oos_auroc"], "recall": reps[f"known+{c}"]["oos_recall"]}
                           for c in UNKNOWN}
    report["unknown_per_class"] = per_class
    e0, e1 = by_mode["experts_only"], by_mode["escalate"]
    checks = {
        "routing_accuracy": {"value": e0["known"]["routing_accuracy"], "target": TARGETS["routing_accuracy"]},
        "mnist_within_0.3_points": {"value": e0["mnist"]["in_scope_accuracy_closed"], "expert_alone": alone["digits"],
                                    "gap_points": round(100 * (alone["digits"] - e0["mnist"]["in_scope_accuracy_closed"]), 3)},
        "fashion_within_0.3_points": {"value": e0["fashion_known"]["in_scope_accuracy_closed"], "expert_alone": alone["fashion"],
                                      "gap_points": round(100 * (alone["fashion"] - e0["fashion_known"]["in_scope_accuracy_closed"]), 3)},
        "oos_auroc": {"value": e1["all"]["oos_auroc"], "experts_only": e0["all"]["oos_auroc"], "target": TARGETS["oos_auroc"]},
    }
    checks["routing_accuracy"]["met"] = checks["routing_accuracy"]["value"] >= TARGETS["routing_accuracy"]
    for k in ("mnist_within_0.3_points", "fashion_within_0.3_points"):
        checks[k]["met"] = checks[k]["gap_points"] <= TARGETS["within_points"]
    checks["oos_auroc"]["met"] = checks["oos_auroc"]["value"] >= TARGETS["oos_auroc"]
    report["checks"] = checks
    report["total_seconds"] = round(time.perf_counter() - t_start, 1)
    report["load_at_end"] = [round(v, 2) for v in os.getloadavg()]
    write(report, Path(args.out), "image_assembly_quick" if args.quick else "image_assembly")
    log(f"done in {report['total_seconds']:.0f} s: " + json.dumps({k: v["met"] for k, v in checks.items()}))


def write(report: dict[str, Any], out_dir: Path, stem: str) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{stem}.json").write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    env, a, ch = report["env"], report["assembly"], report["checks"]
    e0, e1 = report["subsets"]["experts_only"], report["subsets"]["escalate"]
    pct = lambda v: "n/a" if v is None else f"{100 * v:.2f}%"  # noqa: E731
    met = lambda c: "met" if c["met"] else "**NOT met**"  # noqa: E731
    d = report["data"]
    lines = [
        "# MNIST + Fashion-MNIST as one model" + (" - QUICK SMOKE RUN, not a result" if report["quick"] else ""),
        "",
        f"`{env['command']}` - {env['date']} - {env['machine']['cpu']}, {report['threads']} torch threads "
        f"(machine: {env['machine']['cores']} cores; load average at start {report['load_at_start'][0]:.2f}, at end "
        f"{report['load_at_end'][0]:.2f}); {report['total_seconds']:.0f} s in all.",
        "",
        f"Data: both loaders' splits (train {d['train']:,}, val {d['val']:,}, test {d['test']:,} images), "
        f"{d['labels']} known labels (`digit_0`..`digit_9`, `fashion_<class>`) in two domains; Fashion-MNIST's "
        f"{' and '.join(report['unknown_classes'])} left out of training entirely: their {d['n_unknown_test']:,} test "
        "images are the unknowns. Built with `manyfold.assemble` on the in-memory dataset: pixels (28x28) routing, "
        f"a linear router, one `CNNExpert` per domain trained on its own labels only (capped at "
        f"{report['expert_seconds'] or 0:.0f} s each), top-{a['top_k']} mixture, the image generalist (linear head on "
        f"frozen EfficientNet-Lite0 features at **{report['generalist_size']} px**), the default `knee` escalation "
        f"objective, out-of-scope calibrated from held-out labels (`{a['calibration'].get('oos_method')}`: the "
        f"training data have no out-of-scope items). Assembling took {a['fit_wall_seconds']:.0f} s "
        f"(CPU {a['fit_cpu_seconds']:.0f} s) after the generalist's features "
        f"({report['generalist_features']['computed_now']:,} computed in {report['generalist_features']['wall_seconds']:.0f} s, "
        f"{report['generalist_features']['from_cache']:,} from the cache).",
        "",
        "| expert | labels | train s | epochs (best) | stopped | val acc | alone on its own test items |",
        "|---|---:|---:|---|---|---:|---:|",
    ]
    for name, e in a["experts"].items():
        lines.append(f"| {name} | {len(e['labels'])} | {e['train_seconds']:.0f} | {e['epochs']} ({e['best_epoch']}) | "
                     f"{e['stopped']} | {pct(e['val_accuracy'])} | {pct(report['experts_alone'][name])} |")
    lines += [
        "",
        "## Targets",
        "",
        f"- Routing accuracy on known test items: **{pct(ch['routing_accuracy']['value'])}** (target >= 99.5%: "
        f"{met(ch['routing_accuracy'])}).",
        f"- In-scope accuracy, experts only, closed set (no out-of-scope calls): MNIST **{pct(ch['mnist_within_0.3_points']['value'])}** "
        f"vs the digits expert alone {pct(ch['mnist_within_0.3_points']['expert_alone'])} "
        f"({ch['mnist_within_0.3_points']['gap_points']:+.2f} points lost; target <= 0.3: {met(ch['mnist_within_0.3_points'])}); "
        f"Fashion-MNIST (8 known classes) **{pct(ch['fashion_within_0.3_points']['value'])}** vs the fashion expert alone "
        f"{pct(ch['fashion_within_0.3_points']['expert_alone'])} ({ch['fashion_within_0.3_points']['gap_points']:+.2f} "
        f"points lost; {met(ch['fashion_within_0.3_points'])}).",
        f"- Out-of-scope AUROC, {' and '.join(report['unknown_classes'])} test images against all known test images: "
        f"**{ch['oos_auroc']['value']:.4f}** with escalation at the assembly's own thresholds, "
        f"{ch['oos_auroc']['experts_only']:.4f} experts only (target >= 0.80: {met(ch['oos_auroc'])}).",
        "",
        "| on the test split | experts only | with escalation (the policy's) |",
        "|---|---:|---:|",
    ]
    rows = [
        ("MNIST in-scope accuracy, closed", lambda r: pct(r["mnist"]["in_scope_accuracy_closed"])),
        ("MNIST in-scope accuracy (out-of-scope calls count as wrong)", lambda r: pct(r["mnist"]["in_scope_accuracy"])),
        ("Fashion (known) in-scope accuracy, closed", lambda r: pct(r["fashion_known"]["in_scope_accuracy_closed"])),
        ("Fashion (known) in-scope accuracy (out-of-scope calls count as wrong)",
         lambda r: pct(r["fashion_known"]["in_scope_accuracy"])),
        ("all known: in-scope accuracy (out-of-scope calls count as wrong)", lambda r: pct(r["known"]["in_scope_accuracy"])),
        ("routing accuracy (known)", lambda r: pct(r["known"]["routing_accuracy"])),
        ("escalated share of known items", lambda r: pct(r["known"]["escalation_rate"])),
        ("out-of-scope AUROC (unknowns vs known)", lambda r: f"{r['all']['oos_auroc']:.4f}"),
        ("out-of-scope recall at the assembly's threshold", lambda r: pct(r["all"]["oos_recall"])),
        ("out-of-scope precision", lambda r: pct(r["all"]["oos_precision"])),
    ]
    for c in report["unknown_classes"]:
        rows.append((f"{c}: AUROC vs known / recall", lambda r, c=c: f"{r[f'known+{c}']['oos_auroc']:.4f} / "
                                                                     f"{pct(r[f'known+{c}']['oos_recall'])}"))
    for name, fn in rows:
        lines.append(f"| {name} | {fn(e0)} | {fn(e1)} |")
    c = report["cost"]
    sw = report["sweep"]
    lines += [
        "",
        f"The policy's calibration: {json.dumps({k: a['calibration'].get(k) for k in ('escalation_budget', 'val_escalation_rate', 'val_in_scope_accuracy', 'val_unknown_recall_simulated', 'held_out_folds')})}.",
        "",
        "## Escalation sweep",
        "",
        f"The confidence threshold swept from nothing to everything escalated (escalation on possible out-of-scope "
        f"off), on the known test items; cost = the experts' stage ({c['experts_stage']['batched']['ms_per_image']:.3f} "
        f"ms/item in batches of 1,000; one item {c['experts_stage']['single']['p50_ms']:.2f} ms p50) + the escalated share "
        f"x the generalist ({c['generalist']['batched']['ms_per_image']:.3f} ms/item in batches of 500; one item "
        f"{c['generalist']['single']['p50_ms']:.2f} ms p50), uncached. The assembly at its own operating point, measured "
        f"end to end: {c['assembly_at_policy']['batched']['ms_per_image']:.3f} ms/item. The generalist alone scores "
        f"{pct(report['generalist_alone_known_accuracy'])} on the known test items.",
        "",
        "| escalated | in-scope acc, closed | in-scope acc (OOS calls wrong) | OOS AUROC | OOS recall | ms/item |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for p in sw:
        lines.append(f"| {pct(p['escalation_rate'])} | {pct(p['in_scope_accuracy_closed'])} | {pct(p['in_scope_accuracy'])} | "
                     f"{p['oos_auroc']:.4f} | {pct(p['oos_recall'])} | {p['ms_per_item']:.3f} |")
    lines += ["", f"Plot: `{stem}.png` (accuracy against escalation rate and against cost)."]
    (out_dir / f"{stem}.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    plt = pyplot()
    if plt is None:
        log("matplotlib is not installed: no plot")
        return
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    rate = [100 * p["escalation_rate"] for p in sw]
    ms = [p["ms_per_item"] for p in sw]
    own = e1["known"]
    own_ms = c["experts_stage"]["batched"]["ms_per_image"] + own["escalation_rate"] * c["generalist"]["batched"]["ms_per_image"]
    for ax, xs, x_own, xl in ((axes[0], rate, 100 * own["escalation_rate"], "escalated known test items (%)"),
                              (axes[1], ms, own_ms, "cost (ms per item, batched)")):
        ax.plot(xs, [100 * p["in_scope_accuracy_closed"] for p in sw], marker="o", ms=3, label="closed set")
        ax.plot(xs, [100 * p["in_scope_accuracy"] for p in sw], marker="s", ms=3, label="out-of-scope calls count as wrong")
        ax.plot([x_own], [100 * own["in_scope_accuracy"]], "r*", ms=12, label="the assembly's own policy")
        ax.axhline(100 * report["generalist_alone_known_accuracy"], color="grey", ls=":", label="generalist alone (closed)")
        ax.set_xlabel(xl)
        ax.set_ylabel("in-scope accuracy on known test items (%)")
        ax.grid(alpha=0.3)
    g_ms = c["generalist"]["batched"]["ms_per_image"]
    axes[1].plot([g_ms], [100 * report["generalist_alone_known_accuracy"]], "kD", ms=6, label="generalist alone")
    axes[1].legend(fontsize=7, loc="best")
    axes[0].legend(fontsize=7, loc="best")
    fig.suptitle(f"MNIST + Fashion-MNIST assembly: escalation to EfficientNet-Lite0 ({report['generalist_size']} px)")
    fig.tight_layout()
    fig.savefig(out_dir / f"{stem}.png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
