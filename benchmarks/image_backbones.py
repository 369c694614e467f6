"""Small vs big backbone on images: a head on frozen EfficientNet-Lite0 features vs a CNN from scratch vs
logistic regression on pixels, on Fashion-MNIST, from 10 labelled images per class to all of them (issue 11).

    python benchmarks/image_backbones.py --data-dir ../shared/data [--sizes 10,100,1000,all] [--seeds 0,1,2]
        [--seeds-up-to 100] [--backbone-size 64] [--cnn-seconds 300] [--threads 2] [--quick]

Data: the 60,000 Fashion-MNIST training images minus 6,000 held out (seeded, stratified, as in
``benchmarks/cnn_fashion_mnist.py``) leave 54,000; each size is a seeded, stratified subset of them
(``all`` = all 54,000). The same 6,000 held-out images are every method's validation data (early stopping
of the CNN, temperature of the heads), at every size. Test: the 10,000 test images, untouched.

Methods, each with the library's defaults:

* ``backbone``: the image generalist, a :class:`manyfold.generalists.HeadGeneralist` (linear head) on frozen
  EfficientNet-Lite0 features at ``--backbone-size`` pixels (64 by default; the assembly's image default).
  Features of all 70,000 images are computed once and kept in the embedding cache
  (``MANYFOLD_HOME/cache/embeddings``, keyed by encoder id incl. size and by image content), which
  ``benchmarks/image_assembly.py`` and ``manyfold assemble fashion-mnist`` share. Its training time is the head's
  fit plus the features of its training and validation images at the per-image cost measured at the start of
  the run on uncached images (so it does not depend on what the cache held).
* ``cnn``: :class:`manyfold.experts.CNNExpert` from scratch, the library defaults at 54,000 images. With fewer
  images an epoch is only a few steps, so the schedule is scaled (:func:`cnn_schedule`, written down in the
  result): smaller batches, more epochs, more patience. Every size is capped at ``--cnn-seconds`` of training.
* ``pixels``: logistic regression on raw pixels, a linear :class:`manyfold.experts.HeadExpert` on
  :class:`manyfold.encoders.PixelEncoder` vectors (784 values in [0, 1]).

Reported per method and size (per seed, and the mean over seeds): test accuracy, training wall and CPU
seconds. Inference cost per method, on the model trained on the most data (it does not depend on the
training size): ms per image in batches of 1,000 and one image at a time (p50), with uncached encoders.
Sizes up to ``--seeds-up-to`` images per class run every seed of ``--seeds`` (small subsets vary most); larger
sizes run the first seed. ``--quick``: a smoke run of a minute or two (10 and 100 per class, 1,000 held out,
1,000 test images, a 15 s CNN cap), written to ``image_backbones_quick.*``, not a result.

Writes benchmarks/results/image_backbones.{json,md,png}. Timings depend on the machine and its load: run it
on a quiet machine (the load average at the start and the end are recorded).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import environment, pyplot  # noqa: E402
from cnn_fashion_mnist import load, log, stratified_holdout  # noqa: E402

N_HOLDOUT = 6000
METHODS = ("backbone", "cnn", "pixels")
NAMES = {"backbone": "head on frozen EfficientNet-Lite0 features", "cnn": "CNN from scratch", "pixels": "logistic regression on pixels"}
DEFAULT_DATA = Path(os.environ.get("MANYFOLD_TEST_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """``fn()``, its wall seconds and its CPU seconds (all threads of this process)."""
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w, time.process_time() - c


def subset(labels: np.ndarray, pool: np.ndarray, per_class: int | None, seed: int) -> np.ndarray:
    """``per_class`` items of every label drawn from the indices ``pool`` (seeded); ``None``: all of ``pool``."""
    if per_class is None:
        return np.sort(pool)
    rng = np.random.default_rng([seed, per_class])
    return np.sort(np.concatenate([rng.permutation(pool[labels[pool] == c])[:per_class] for c in np.unique(labels)]))


def cnn_schedule(n: int) -> dict[str, int]:
    """The CNN's schedule for ``n`` training images: the library defaults (batch 256, 8 epochs, patience 3) from
    4,096 images on; below that, batches of n/16 (at least 16) and enough epochs for about 600 steps (at most 30:
    every epoch also scores the 6,000 validation images), with a quarter of them as patience."""
    bs = 256 if n >= 4096 else max(16, n // 16)
    steps = math.ceil(n / bs)
    epochs = min(30, max(8, math.ceil(600 / steps)))
    return {"batch_size": bs, "epochs": epochs, "patience": max(3, epochs // 4)}


def single_ms(fn: Callable[[np.ndarray], Any], images: np.ndarray, calls: int) -> dict[str, float]:
    """p50 / p95 milliseconds of ``fn`` on one image at a time (after 3 warm-up calls)."""
    for i in range(3):
        fn(images[i:i + 1])
    lat = []
    for i in range(calls):
        t = time.perf_counter()
        fn(images[i % len(images):i % len(images) + 1])
        lat.append(time.perf_counter() - t)
    return {"p50_ms": round(1e3 * float(np.percentile(lat, 50)), 3), "p95_ms": round(1e3 * float(np.percentile(lat, 95)), 3)}


def batched_ms(fn: Callable[[np.ndarray], Any], images: np.ndarray, batch: int = 1000) -> dict[str, float]:
    """Milliseconds per image (wall and CPU) of ``fn`` on ``images`` in batches of ``batch`` (after one warm-up batch)."""
    fn(images[:min(batch, 64)])
    _, wall, cpu = timed(lambda: [fn(images[s:s + batch]) for s in range(0, len(images), batch)])
    return {"ms_per_image": round(1e3 * wall / len(images), 4), "cpu_ms_per_image": round(1e3 * cpu / len(images), 4),
            "n": int(len(images)), "batch": batch}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", default=str(DEFAULT_DATA), help="folder holding fashion-mnist/")
    ap.add_argument("--sizes", default="10,100,1000,all", help="images per class, comma separated; 'all' = 54,000")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--seeds-up-to", type=int, default=100, help="sizes up to this many per class run every seed")
    ap.add_argument("--backbone-size", type=int, default=64, help="EfficientNet-Lite0 input resolution (pixels)")
    ap.add_argument("--cnn-seconds", type=float, default=300.0, help="training-time cap of every CNN (0: none)")
    ap.add_argument("--test-subset", type=int, default=0, help="score on this many test images (seeded; 0: all 10,000)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    ap.add_argument("--quick", action="store_true", help="a smoke run of a minute or two (not a result)")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = ap.parse_args()
    n_holdout = N_HOLDOUT
    if args.quick:
        args.sizes, args.seeds, args.cnn_seconds = "10,100", "0", 15.0
        args.test_subset, n_holdout = args.test_subset or 1000, 1000

    import torch

    torch.set_num_threads(args.threads)
    from manyfold.encoders import EfficientNetLite0Encoder, EmbeddingCache, PixelEncoder, cached_encoder
    from manyfold.experts import CNNExpert, HeadExpert
    from manyfold.generalists import HeadGeneralist

    report: dict[str, Any] = {"env": environment(), "load_at_start": [round(v, 2) for v in os.getloadavg()],
                              "quick": args.quick, "threads": args.threads, "backbone_size": args.backbone_size,
                              "cnn_seconds": args.cnn_seconds or None, "n_holdout": n_holdout}
    x, y, x_te, y_te = load(args.data_dir, "fashion-mnist")
    tr, ho = stratified_holdout(y, n_holdout, 0)
    if args.test_subset and args.test_subset < len(x_te):
        keep = np.sort(np.random.default_rng(0).permutation(len(x_te))[:args.test_subset])
        x_te, y_te = x_te[keep], y_te[keep]
    report["n_test"] = int(len(x_te))
    sizes: list[int | None] = [None if s.strip() == "all" else int(s) for s in args.sizes.split(",") if s.strip()]
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    plan = [(n, s) for n in sizes for s in (seeds if n is not None and n <= args.seeds_up_to else seeds[:1])]
    needed = np.unique(np.concatenate([subset(y, tr, n, s) for n, s in plan] + [ho]))
    log(f"fashion-mnist: {len(tr)} train, {len(ho)} held out, {len(x_te)} test; runs (per class, seed): {plan}")

    # -- the backbone's cost, measured first on uncached images; then every feature, through the cache -----------
    raw = EfficientNetLite0Encoder(size=args.backbone_size)
    probe = x_te[:512] if not args.quick else x_te[:128]
    raw.encode(probe[:16])  # builds the model
    _, wall, cpu = timed(lambda: raw.encode(probe))
    feat_ms, feat_cpu_ms = 1e3 * wall / len(probe), 1e3 * cpu / len(probe)
    report["backbone_features"] = {"ms_per_image": round(feat_ms, 3), "cpu_ms_per_image": round(feat_cpu_ms, 3),
                                   "measured_on": len(probe), "encoder": raw.id}
    n_feat = len(needed) + len(x_te)
    log(f"EfficientNet-Lite0 at {args.backbone_size}px: {feat_ms:.2f} ms/image ({feat_cpu_ms:.2f} CPU ms): "
        f"{n_feat} images would take {n_feat * feat_ms / 1e3 / 60:.1f} min uncached")
    enc = cached_encoder(raw, EmbeddingCache())
    bar = sys.stderr.isatty()
    (F_tr, F_te), wall, cpu = timed(lambda: (enc.encode(x[needed], show_progress=bar), enc.encode(x_te, show_progress=bar)))
    row_of = {int(i): r for r, i in enumerate(needed.tolist())}
    report["backbone_features"].update({"images": n_feat, "computed_now": enc.misses, "from_cache": enc.hits,
                                        "wall_seconds": round(wall, 1), "cpu_seconds": round(cpu, 1)})
    log(f"features: {enc.misses} computed, {enc.hits} from the cache, {wall:.0f} s")

    def feats(idx: np.ndarray) -> np.ndarray:
        return F_tr[[row_of[int(i)] for i in idx]]

    pix = PixelEncoder()
    X_te_pix = pix.encode(x_te)
    runs: list[dict[str, Any]] = []
    last: dict[str, Any] = {}
    for n, seed in plan:
        idx = subset(y, tr, n, seed)
        size_name = "all" if n is None else str(n)
        base = {"per_class": size_name, "n_train": int(len(idx)), "seed": seed}
        # logistic regression on pixels (pixel encoding counted as training time)
        m, wall, cpu = timed(lambda: HeadExpert("pixels", kind="linear").fit(
            pix.encode(x[idx]), y[idx], X_val=pix.encode(x[ho]), y_val=y[ho]))
        acc = float((m.labels_[m.predict_proba(X_te_pix).argmax(1)] == y_te).mean())
        runs.append({**base, "method": "pixels", "test_accuracy": round(acc, 5), "train_seconds": round(wall, 2),
                     "train_cpu_seconds": round(cpu, 2)})
        last["pixels"] = m
        # the head on frozen features (features of train + val items at the measured per-image cost)
        g, wall, cpu = timed(lambda: HeadGeneralist(raw.spec).fit(y=y[idx], features=feats(idx), features_val=feats(ho),
                                                                  y_val=y[ho]))
        acc = float((g.labels_[g.predict_proba_features(F_te).argmax(1)] == y_te).mean())
        n_fx = len(idx) + len(ho)
        runs.append({**base, "method": "backbone", "test_accuracy": round(acc, 5),
                     "train_seconds": round(wall + n_fx * feat_ms / 1e3, 2),
                     "train_cpu_seconds": round(cpu + n_fx * feat_cpu_ms / 1e3, 2),
                     "head_seconds": round(wall, 2), "feature_seconds": round(n_fx * feat_ms / 1e3, 2)})
        last["backbone"] = g
        # the CNN from scratch
        sched = cnn_schedule(len(idx))
        cnn = CNNExpert("cnn", seed=seed, max_seconds=args.cnn_seconds or None, **sched)
        _, wall, cpu = timed(lambda: cnn.fit(x[idx], y[idx], items_val=x[ho], y_val=y[ho]))
        acc = float((cnn.predict(x_te) == y_te).mean())
        lin = cnn.card_.lineage
        runs.append({**base, "method": "cnn", "test_accuracy": round(acc, 5), "train_seconds": round(wall, 2),
                     "train_cpu_seconds": round(cpu, 2), "schedule": sched, "epochs": lin["epochs"],
                     "best_epoch": lin["best_epoch"], "stopped": lin["stopped"]})
        last["cnn"] = cnn
        log(f"{size_name}/class seed {seed}: " + ", ".join(f"{r['method']} {r['test_accuracy']:.4f} ({r['train_seconds']:.0f} s)"
                                                           for r in runs[-3:]))
    report["runs"] = runs

    # -- inference cost per method (uncached encoders), on the models trained on the most data -----------------
    sample = x_te[:2000] if not args.quick else x_te[:500]
    calls = 100 if not args.quick else 20
    predictors = {
        "pixels": lambda b: last["pixels"].predict_proba(pix.encode(b)),
        "backbone": lambda b: last["backbone"].predict_proba_features(raw.encode(b)),
        "cnn": lambda b: last["cnn"].predict_proba(b),
    }
    report["inference"] = {}
    for meth, fn in predictors.items():
        report["inference"][meth] = {"batched": batched_ms(fn, sample), "single": single_ms(fn, sample, calls)}
        log(f"inference {meth}: {report['inference'][meth]}")
    report["summary"] = summarise(runs, sizes)
    report["load_at_end"] = [round(v, 2) for v in os.getloadavg()]
    report["choice"] = choose_text(report)
    write(report, Path(args.out), "image_backbones_quick" if args.quick else "image_backbones")
    log(report["choice"])


def summarise(runs: list[dict[str, Any]], sizes: list[int | None]) -> dict[str, dict[str, dict[str, Any]]]:
    """``{size: {method: mean/min/max accuracy, mean train seconds, seeds}}``."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for n in sizes:
        key = "all" if n is None else str(n)
        out[key] = {}
        for meth in METHODS:
            rs = [r for r in runs if r["per_class"] == key and r["method"] == meth]
            accs = [r["test_accuracy"] for r in rs]
            out[key][meth] = {"accuracy": round(float(np.mean(accs)), 5), "min": min(accs), "max": max(accs),
                              "train_seconds": round(float(np.mean([r["train_seconds"] for r in rs])), 2),
                              "train_cpu_seconds": round(float(np.mean([r["train_cpu_seconds"] for r in rs])), 2),
                              "seeds": [r["seed"] for r in rs], "n_train": rs[0]["n_train"]}
            if meth == "backbone":
                for part in ("head_seconds", "feature_seconds"):
                    out[key][meth][part] = round(float(np.mean([r[part] for r in rs])), 2)
    return out


def choose_text(report: dict[str, Any]) -> str:
    """The 'which to choose when' paragraph, written from the measured numbers."""
    s, inf = report["summary"], report["inference"]
    keys = list(s)
    pct = lambda v: f"{100 * v:.1f}%"  # noqa: E731

    def best(k: str) -> str:
        return max(METHODS, key=lambda m: s[k][m]["accuracy"])

    parts = []
    first, lastk = keys[0], keys[-1]
    label = lambda k: "all 54,000 images" if k == "all" else f"{int(k):,} images per class"  # noqa: E731
    b0 = best(first)
    parts.append(f"With {label(first)} the {NAMES[b0]} is the most accurate ("
                 + ", ".join(f"{m} {pct(s[first][m]['accuracy'])}" for m in METHODS) + ").")
    # where does the CNN overtake the backbone head (if it does)?
    cross = next((k for k in keys if s[k]["cnn"]["accuracy"] > s[k]["backbone"]["accuracy"]), None)
    at_last = f"at {label(lastk)}: {pct(s[lastk]['cnn']['accuracy'])} vs {pct(s[lastk]['backbone']['accuracy'])}"
    if cross is None:
        parts.append(f"The CNN from scratch does not overtake the backbone head at any measured size ({at_last}).")
    elif cross == first:
        parts.append(f"The CNN from scratch is ahead of the backbone head from the smallest size on ({at_last}).")
    else:
        parts.append(f"The CNN from scratch overtakes the backbone head at {label(cross)} "
                     f"({pct(s[cross]['cnn']['accuracy'])} vs {pct(s[cross]['backbone']['accuracy'])})"
                     + (f"; {at_last}." if cross != lastk else "."))
    lr_gap = [s[k][best(k)]["accuracy"] - s[k]["pixels"]["accuracy"] for k in keys]
    if all(g > 0 for g in lr_gap):
        parts.append(f"Logistic regression on pixels trails the best method at every size (by "
                     f"{100 * min(lr_gap):.1f} to {100 * max(lr_gap):.1f} points).")
    else:
        parts.append("Logistic regression on pixels is the best method at "
                     + ", ".join(label(k) for k, g in zip(keys, lr_gap) if g <= 0) + ".")
    cost = {m: inf[m]["batched"]["ms_per_image"] for m in METHODS}
    one = {m: inf[m]["single"]["p50_ms"] for m in METHODS}
    ratio = cost["backbone"] / cost["cnn"]
    parts.append("Serving cost per image, batched / one at a time: " + "; ".join(
        f"{m} {cost[m]:.3g} / {one[m]:.3g} ms" for m in METHODS)
        + f" (the backbone costs {ratio:.1f}x the CNN batched and {one['backbone'] / one['cnn']:.1f}x one image at a time).")
    tr = {m: s[lastk][m]["train_seconds"] for m in METHODS}
    parts.append(f"Training on {label(lastk)}: backbone {tr['backbone']:.0f} s (features included), CNN {tr['cnn']:.0f} s, "
                 f"pixels {tr['pixels']:.0f} s.")
    # the advice follows the numbers
    cnn_cheaper = cost["cnn"] < cost["backbone"]
    serve = "cheaper" if cnn_cheaper else "more expensive"
    if cross is None:
        advice = ("Choose the backbone head at every measured data size"
                  + ("; the CNN only where its lower serving cost matters more than the accuracy it gives up." if cnn_cheaper
                     else "."))
    elif cross == first:
        advice = f"Choose the CNN from scratch: it is the more accurate at every measured size, and {serve} to serve."
    elif not all(s[k]["cnn"]["accuracy"] > s[k]["backbone"]["accuracy"] for k in keys[keys.index(cross):]):
        ahead = [label(k) for k in keys if s[k]["cnn"]["accuracy"] > s[k]["backbone"]["accuracy"]]
        advice = (f"The ranking does not settle with data size (the CNN is ahead at {', '.join(ahead)} only): choose by "
                  f"the table, and note the CNN is {serve} to serve.")
    else:
        below = keys[keys.index(cross) - 1]
        quick = s[first]["backbone"]["train_seconds"] < s[first]["cnn"]["train_seconds"]
        advice = (f"Choose the backbone head when labelled data are scarce (up to about {label(below)})"
                  + (f", where it also trains faster ({s[first]['backbone']['train_seconds']:.0f} s vs "
                     f"{s[first]['cnn']['train_seconds']:.0f} s at {label(first)})" if quick else "")
                  + f"; choose the CNN from scratch from about {label(cross)} on, where it is more accurate and {serve} "
                  "to serve.")
    if all(g > 0 for g in lr_gap):
        advice += " Logistic regression on pixels is a floor, or the choice only where microseconds per image matter."
    parts.append("**" + advice + "**")
    return " ".join(parts)


def write(report: dict[str, Any], out_dir: Path, stem: str) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    env, s, inf = report["env"], report["summary"], report["inference"]
    lines = [
        "# Small vs big backbone on images (Fashion-MNIST)" + (" - QUICK SMOKE RUN, not a result" if report["quick"] else ""),
        "",
        f"`{env['command']}` - {env['date']} - {env['machine']['cpu']}, {report['threads']} torch threads "
        f"(machine: {env['machine']['cores']} cores; load average at start {report['load_at_start'][0]:.2f}, "
        f"at end {report['load_at_end'][0]:.2f}).",
        "",
        f"Train: seeded stratified subsets of the 54,000 Fashion-MNIST training images left after holding out "
        f"{report['n_holdout']:,} (seeded, stratified), which are every method's validation data at every size (CNN early "
        f"stopping, head temperatures). Test: {report['n_test']:,} test images, untouched. "
        f"Backbone: EfficientNet-Lite0 (ImageNet weights, frozen) at **{report['backbone_size']} px** "
        f"(not its 224 px training resolution), global-average-pooled 1280-d features, a linear head (the library's "
        f"image generalist). CNN: `CNNExpert` defaults, schedule scaled for small sets (below), training capped at "
        f"{report['cnn_seconds']:.0f} s per run. Pixels: a linear head on the 784 raw pixels.",
        "",
        "| images per class | method | test accuracy (mean; min-max over seeds) | seeds | train s (wall) | train CPU s | of which |",
        "|---:|---|---:|---|---:|---:|---|",
    ]
    for k, row in s.items():
        for m in METHODS:
            r = row[m]
            spread = f"; {100 * r['min']:.2f}-{100 * r['max']:.2f}" if len(r["seeds"]) > 1 else ""
            split = (f"head {r['head_seconds']:.1f} s + features {r['feature_seconds']:.1f} s" if m == "backbone" else "")
            lines.append(f"| {k} | {NAMES[m]} | {100 * r['accuracy']:.2f}%{spread} | {','.join(map(str, r['seeds']))} | "
                         f"{r['train_seconds']:.1f} | {r['train_cpu_seconds']:.1f} | {split} |")
    bf = report["backbone_features"]
    lines += [
        "",
        f"Backbone training time = the head's fit + EfficientNet features of its training and validation images at "
        f"{bf['ms_per_image']:.2f} ms per image ({bf['cpu_ms_per_image']:.2f} CPU ms), measured on {bf['measured_on']} "
        f"uncached images at the start of this run. This run computed {bf['computed_now']:,} of the {bf['images']:,} "
        f"images' features ({bf['from_cache']:,} came from the embedding cache) in {bf['wall_seconds']:.0f} s.",
        "",
        "Inference (the model trained on the most data; uncached encoders; the cost does not depend on the training size):",
        "",
        "| method | ms/image, batches of 1,000 | CPU ms/image | one image p50 ms | p95 ms |",
        "|---|---:|---:|---:|---:|",
    ]
    for m in METHODS:
        b, o = inf[m]["batched"], inf[m]["single"]
        lines.append(f"| {NAMES[m]} | {b['ms_per_image']:.3f} | {b['cpu_ms_per_image']:.3f} | {o['p50_ms']:.2f} | {o['p95_ms']:.2f} |")
    cnn_rows = [r for r in report["runs"] if r["method"] == "cnn"]
    lines += ["", "CNN schedule per size (`cnn_schedule`: library defaults from 4,096 images on; fewer images get smaller "
              "batches, more epochs and patience):", "",
              "| images per class | seed | batch | epochs (max) | patience | epochs run (best) | stopped |", "|---:|---:|---:|---:|---:|---|---|"]
    for r in cnn_rows:
        sc = r["schedule"]
        lines.append(f"| {r['per_class']} | {r['seed']} | {sc['batch_size']} | {sc['epochs']} | {sc['patience']} | "
                     f"{r['epochs']} ({r['best_epoch']}) | {r['stopped']} |")
    lines += ["", "## Which to choose when", "", "(Written by the script from the numbers above.)", "", report["choice"], "",
              f"Plot: `{stem}.png` (test accuracy against images per class, log scale; 'all' drawn at 5,400)."]
    (out_dir / f"{stem}.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    plt = pyplot()
    if plt is None:
        log("matplotlib is not installed: no plot")
        return
    fig, ax = plt.subplots(figsize=(7, 4.4))
    xs = [5400 if k == "all" else int(k) for k in s]
    for m, mark in zip(METHODS, "osd"):
        ys = [100 * s[k][m]["accuracy"] for k in s]
        ax.plot(xs, ys, marker=mark, label=NAMES[m])
        lo = [100 * s[k][m]["min"] for k in s]
        hi = [100 * s[k][m]["max"] for k in s]
        ax.fill_between(xs, lo, hi, alpha=0.15)
    ax.set_xscale("log")
    ax.set_xticks(xs)
    ax.set_xticklabels(["all\n(5,400)" if k == "all" else f"{int(k):,}" for k in s])
    ax.set_xlabel("labelled training images per class")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"Fashion-MNIST: backbone ({report['backbone_size']} px) vs CNN vs pixels")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(out_dir / f"{stem}.png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
