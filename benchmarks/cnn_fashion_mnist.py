"""A small CNN trained from scratch on the CPU: Fashion-MNIST (or MNIST) accuracy against wall time (issue 11).

    python benchmarks/cnn_fashion_mnist.py --data-dir ../shared/data [--dataset fashion-mnist|mnist]
        [--seeds 0,1,2] [--time-budget 300] [--threads 2]

For each seed: a :class:`manyfold.experts.CNNExpert` with the library defaults is
trained on the 60,000 training images minus 6,000 held out (seeded, stratified)
for early stopping and calibration, and scored on the untouched 10,000 test
images. ``--time-budget`` is passed as the expert's ``max_seconds`` (the
learning-rate schedule anneals by then; 0 = no cap). Reported per seed: test
accuracy, training wall seconds, epochs, and the learning curve (cumulative
training seconds, val accuracy, test accuracy per epoch; scoring the test set
after each epoch is not counted as training time); then the median over seeds.

Serving: the first seed's expert is saved in a fresh registry (a temp dir) and
loaded in a fresh process, which times ``predict_proba`` on one 28x28 image
(p50/p95 over 200 calls) and batched throughput (images/s, batches of 1,000).

Targets: Fashion-MNIST >= 92.0% test accuracy in <= 300 s on 2 threads; MNIST >= 99.0%.
Timings depend on the machine and on its load: run it on a quiet machine.
Writes benchmarks/results/cnn_<dataset>.{json,md} and cnn_<dataset>_curve.png.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import environment, pyplot  # noqa: E402

N_HOLDOUT = 6000
TARGETS = {"fashion-mnist": 0.92, "mnist": 0.99}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def stratified_holdout(labels: np.ndarray, n_holdout: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, held-out indices): ``n_holdout`` items, each label in proportion, seeded."""
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    quota = np.floor(counts * n_holdout / len(labels)).astype(int)
    order = np.argsort(-(counts * n_holdout / len(labels) - quota), kind="stable")
    quota[order[: n_holdout - quota.sum()]] += 1  # largest remainders get the leftovers
    held = np.concatenate([rng.permutation(np.nonzero(labels == c)[0])[:q] for c, q in zip(classes, quota)])
    mask = np.zeros(len(labels), dtype=bool)
    mask[held] = True
    return np.nonzero(~mask)[0], np.sort(held)


def load(data_dir: str, kind: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """All 60,000 training images (whatever train/val split the loader makes) and the test split."""
    from manyfold.data import load_mnist

    ds = load_mnist(data_dir, kind=kind, download=False, progress=False)
    parts = [ds.split(s) for s in ("train", "val") if s in ds.split_names]
    x = np.concatenate([np.asarray(p.items) for p in parts])
    y = np.concatenate([p.labels for p in parts])
    test = ds.split("test")
    return x, y, np.asarray(test.items), test.labels


def run_seed(x: np.ndarray, y: np.ndarray, x_te: np.ndarray, y_te: np.ndarray, seed: int, budget: float,
             overrides: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    from manyfold.experts import CNNExpert

    tr, ho = stratified_holdout(y, N_HOLDOUT, seed)
    curve: list[dict[str, Any]] = []
    cpu_paused = [0.0]

    def on_epoch(record: dict[str, Any], logits_of: Any) -> None:
        c = time.process_time()
        cpu = c - c0 - cpu_paused[0]
        test_acc = float((np.asarray(model_labels())[logits_of(x_te).argmax(1)] == y_te).mean())
        curve.append({"epoch": record["epoch"], "seconds": record["seconds"], "cpu_seconds": round(cpu, 2),
                      "train_loss": record["train_loss"], "val_accuracy": record.get("val_accuracy"),
                      "test_accuracy": round(test_acc, 5)})
        log(f"seed {seed} epoch {record['epoch']}: {record['seconds']:.0f}s (CPU {cpu:.0f}s) loss "
            f"{record['train_loss']:.4f} val {record.get('val_accuracy', float('nan')):.4f} test {test_acc:.4f}")
        cpu_paused[0] += time.process_time() - c

    expert = CNNExpert(f"cnn-seed{seed}", seed=seed, max_seconds=budget or None, **overrides)

    def model_labels() -> np.ndarray:
        return expert.labels_

    t0 = time.perf_counter()
    c0 = time.process_time()
    expert.fit(x[tr], y[tr], items_val=x[ho], y_val=y[ho], on_epoch=on_epoch)
    wall = time.perf_counter() - t0
    cpu = time.process_time() - c0 - cpu_paused[0]
    t1 = time.perf_counter()
    acc = float((expert.predict(x_te) == y_te).mean())
    lin = expert.card_.lineage
    res = {
        "seed": seed, "test_accuracy": round(acc, 5), "val_accuracy": round(expert.card_.metrics["val_accuracy"], 5),
        "train_seconds": lin["train_seconds"], "fit_wall_seconds_incl_test_scoring": round(wall, 2),
        "fit_cpu_seconds": round(cpu, 1), "epochs": lin["epochs"], "best_epoch": lin["best_epoch"],
        "stopped": lin["stopped"], "temperature": round(expert.temperature_, 4), "parameters": expert.card_.size,
        "test_predict_seconds": round(time.perf_counter() - t1, 2), "curve": curve,
    }
    return res, expert


_SERVE = textwrap.dedent("""
    import json, sys, time
    import numpy as np
    t0 = time.perf_counter()
    import torch
    from manyfold._registry import Registry
    import_s = time.perf_counter() - t0
    root, entry, images = sys.argv[1], json.loads(sys.argv[2]), np.load(sys.argv[3])
    t0 = time.perf_counter()
    expert = Registry(root)._get(entry)
    load_s = time.perf_counter() - t0
    one = images[:1]
    for _ in range(10):
        expert.predict_proba(one)
    lat = []
    for _ in range(200):
        t = time.perf_counter(); expert.predict_proba(one); lat.append(time.perf_counter() - t)
    expert.predict_proba(images[:1000])
    t = time.perf_counter(); n = 0
    for s in range(0, len(images), 1000):
        n += len(expert.predict_proba(images[s:s + 1000]))
    batch_s = time.perf_counter() - t
    print(json.dumps({"import_seconds": import_s, "load_seconds": load_s, "p50_ms": 1e3 * float(np.percentile(lat, 50)),
                      "p95_ms": 1e3 * float(np.percentile(lat, 95)), "images_per_s": n / batch_s, "n": n}))
""")


def serve_check(expert: Any, images: np.ndarray, threads: int) -> dict[str, Any]:
    """Save in a fresh registry, load in a fresh process, time one-image and batched prediction."""
    from manyfold._registry import Registry

    with tempfile.TemporaryDirectory() as tmp:
        reg = Registry(Path(tmp) / "registry")
        entry = reg._put("expert", expert.to_state())  # the object store an assembly's experts go to
        np.save(Path(tmp) / "images.npy", images)
        env = dict(os.environ, OMP_NUM_THREADS=str(threads))
        out = subprocess.run([sys.executable, "-c", _SERVE, str(reg.root), json.dumps(entry), str(Path(tmp) / "images.npy")],
                             capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"the serving subprocess failed:\n{out.stderr}")
    res = json.loads(out.stdout.strip().splitlines()[-1])
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in res.items()}


def write(report: dict[str, Any], out_dir: Path, kind: str) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"cnn_{kind}"
    (out_dir / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    s = report["summary"]
    lines = [
        f"# CNN expert from scratch on {kind}",
        "",
        f"`{report['env']['command']}` - {report['env']['date']} - {report['env']['machine']['cpu']}, "
        f"{report['threads']} torch threads (machine: {report['env']['machine']['cores']} cores; load average at start "
        + (", ".join(f"{v:.2f}" for v in report["load_at_start"]) if report.get("load_at_start") else "not recorded")
        + ").",
        "",
        f"Parameters: `{json.dumps(report['params'])}` ({report['seeds'][0]['parameters']:,} weights). "
        f"Train: 60,000 minus {N_HOLDOUT:,} held out (seeded, stratified) for early stopping and calibration; "
        "test: the 10,000 test images.",
        "",
        "| seed | test acc | val acc | train s | epochs (best) | stopped | CPU s |",
        "|---:|---:|---:|---:|---:|---|---:|",
    ]
    for r in report["seeds"]:
        lines.append(f"| {r['seed']} | {r['test_accuracy']:.4f} | {r['val_accuracy']:.4f} | {r['train_seconds']:.0f} | "
                     f"{r['epochs']} ({r['best_epoch']}) | {r['stopped']} | {r['fit_cpu_seconds']:.0f} |")
    lines += [
        "",
        f"**Median test accuracy {s['median_test_accuracy']:.4f}** (target {s['target_accuracy']:.3f}: "
        f"{'met' if s['meets_accuracy'] else 'NOT met'}), median training time {s['median_train_seconds']:.0f} s "
        + (f"(budget {report['time_budget']:.0f} s: {'met' if s['meets_time'] else 'NOT met'})."
           if report["time_budget"] else "(no time budget).") + (
            f" Median CPU seconds {s['median_cpu_seconds']:.0f}." if "median_cpu_seconds" in s else ""),
        "",
    ]
    if report.get("serving"):
        v = report["serving"]
        lines += [
            "Serving (saved in a fresh registry, loaded in a fresh process): "
            f"import {v['import_seconds']:.2f} s, load {v['load_seconds']:.2f} s, one image p50 {v['p50_ms']:.2f} ms (p95 {v['p95_ms']:.2f} ms), "
            f"batches of 1,000: {v['images_per_s']:,.0f} images/s.",
            "",
        ]
    lines.append(f"Curve: `{stem}_curve.png` (accuracy against cumulative training seconds).")
    (out_dir / f"{stem}.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    plt = pyplot()
    if plt is None:
        log("matplotlib is not installed: no curve")
        return
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for r in report["seeds"]:
        secs = [c["seconds"] for c in r["curve"]]
        ax.plot(secs, [c["test_accuracy"] for c in r["curve"]], marker="o", label=f"test, seed {r['seed']}")
        ax.plot(secs, [c["val_accuracy"] for c in r["curve"]], linestyle="--", alpha=0.6, label=f"val, seed {r['seed']}")
    ax.axhline(TARGETS[kind], color="grey", linestyle=":", label=f"target {TARGETS[kind]:.2f}")
    if report["time_budget"]:
        ax.axvline(report["time_budget"], color="red", linestyle=":", label="time budget")
    ax.set_xlabel("training seconds (cumulative)")
    ax.set_ylabel("accuracy")
    ax.set_title(f"CNNExpert on {kind}, {report['threads']} threads")
    ax.set_ylim(max(0.0, min(c["test_accuracy"] for r in report["seeds"] for c in r["curve"]) - 0.01), 1.0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(out_dir / f"{stem}_curve.png", dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", default=None, help="folder holding mnist/ and fashion-mnist/")
    ap.add_argument("--dataset", default="fashion-mnist", choices=sorted(TARGETS))
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--time-budget", type=float, default=300.0, help="max training seconds per seed (0: no cap)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    ap.add_argument("--params", default="{}", help='JSON overrides of CNNExpert parameters, e.g. \'{"epochs": 8}\'')
    ap.add_argument("--no-serve", action="store_true", help="skip the fresh-process serving check")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = ap.parse_args()
    load_at_start = list(os.getloadavg())

    import torch

    torch.set_num_threads(args.threads)
    from manyfold.experts import CNNExpert

    overrides = json.loads(args.params)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    x, y, x_te, y_te = load(args.data_dir, args.dataset)
    log(f"{args.dataset}: {len(x)} train+val images, {len(x_te)} test; seeds {seeds}; {args.threads} threads")
    results, first = [], None
    for seed in seeds:
        res, expert = run_seed(x, y, x_te, y_te, seed, args.time_budget, overrides)
        log(f"seed {seed}: test {res['test_accuracy']:.4f} in {res['train_seconds']:.0f}s ({res['epochs']} epochs)")
        results.append(res)
        first = first or expert
    accs = [r["test_accuracy"] for r in results]
    secs = [r["train_seconds"] for r in results]
    target = TARGETS[args.dataset]
    budget = args.time_budget or float("inf")
    params = CNNExpert("x", **overrides).get_params()
    params.pop("name")
    params.pop("seed")
    report: dict[str, Any] = {
        "env": environment(), "load_at_start": load_at_start, "dataset": args.dataset, "threads": args.threads, "time_budget": args.time_budget,
        "params": params, "n_holdout": N_HOLDOUT, "seeds": results,
        "summary": {
            "median_test_accuracy": float(np.median(accs)), "min_test_accuracy": float(min(accs)),
            "max_test_accuracy": float(max(accs)), "median_train_seconds": float(np.median(secs)),
            "median_cpu_seconds": float(np.median([r["fit_cpu_seconds"] for r in results])),
            "target_accuracy": target, "meets_accuracy": bool(np.median(accs) >= target),
            "meets_time": bool(np.median(secs) <= budget),
        },
    }
    if not args.no_serve and first is not None:
        report["serving"] = serve_check(first, x_te, args.threads)
        log(f"serving: {report['serving']}")
    write(report, Path(args.out), args.dataset)
    log(f"median test accuracy {report['summary']['median_test_accuracy']:.4f}, "
        f"median train {report['summary']['median_train_seconds']:.0f}s -> {args.out}")


if __name__ == "__main__":
    main()
