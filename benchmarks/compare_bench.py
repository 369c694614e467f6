"""Do two ``manyfold bench`` result files agree on every accuracy figure? (Timings may differ.)

    python benchmarks/compare_bench.py benchmarks/results/bench_clinc150.json /tmp/rerun/bench_clinc150.json

Compares, for every system, in-scope accuracy, macro-F1, OOS recall and AUROC, domain routing accuracy and
escalation rates; the APGR figures; the data-efficiency accuracies; and the scaling routing accuracies.
Prints each figure that differs and exits 1 if any does, else prints how many were compared and exits 0.
"""

from __future__ import annotations

import json
import math
import sys
from typing import Any

KEYS = ("in_scope_accuracy", "macro_f1", "oos_recall", "oos_auroc", "routing_accuracy", "escalation_rate",
        "escalation_rate_all")


def figures(res: dict[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, r in res["systems"].items():
        for k in KEYS:
            if k in r:
                out[f"systems.{name}.{k}"] = r[k]
    for k, v in res["apgr"].items():
        if isinstance(v, dict):
            for kk, vv in v.items():
                out[f"apgr.{k}.{kk}"] = vv
        elif isinstance(v, (int, float)):
            out[f"apgr.{k}"] = v
    for r in res["data_efficiency"]:
        for k in ("in_scope_accuracy", "macro_f1", "oos_auroc"):
            out[f"data_efficiency.{r['encoder']}.{r['n_per_intent']}.{k}"] = r[k]
    for r in res["scaling"]:
        out[f"scaling.{r['n_experts']}.routing_accuracy"] = r["routing_accuracy"]
    return out


def same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__)
        return 2
    a, b = (figures(json.load(open(p))) for p in argv)
    diff = [k for k in sorted(set(a) | set(b)) if not same(a.get(k), b.get(k))]
    for k in diff:
        print(f"{k}: {a.get(k)!r} != {b.get(k)!r}")
    print(f"{len(set(a) | set(b))} accuracy figures compared, {len(diff)} differ")
    return 1 if diff else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
