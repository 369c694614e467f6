"""Timings and memory: single-request latency, batched throughput, routing overhead, traced peaks.

Every timing is repeated (``repeats`` >= 3) and summarised as median / min / max
of the per-repeat statistic. Encoders here are the *raw* models (no cache):
latency and cost are real model compute on this machine.
"""

from __future__ import annotations

import copy
import gc
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import numpy as np

from ._metrics import percentile, summarise

__all__ = ["single_latency", "batched_throughput", "routing_overhead", "traced_peak", "state_bytes", "raw_copy"]


def single_latency(fn: Callable[[str], Any], texts: list[str], repeats: int) -> dict[str, Any]:
    """One request at a time: p50 / p99 / mean (ms) per repeat, summarised; plus the last repeat's latencies."""
    fn(texts[0])  # warm-up
    p50, p99, mean, last = [], [], [], []
    for _ in range(repeats):
        ts = []
        for q in texts:
            t0 = time.perf_counter()
            fn(q)
            ts.append(1e3 * (time.perf_counter() - t0))
        p50.append(percentile(ts, 50))
        p99.append(percentile(ts, 99))
        mean.append(float(np.mean(ts)))
        last = ts
    return {"p50_ms": summarise(p50), "p99_ms": summarise(p99), "mean_ms": summarise(mean), "latencies_ms": last}


def batched_throughput(fn: Callable[[list[str]], Any], texts: list[str], repeats: int) -> dict[str, float]:
    """Items per second for one batch of ``texts``, summarised over repeats."""
    fn(texts[:2])
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(texts)
        rates.append(len(texts) / (time.perf_counter() - t0))
    return summarise(rates)


def routing_overhead(asm: Any, X: np.ndarray, repeats: int, n_single: int) -> dict[str, Any]:
    """Per-request time of ``forward(escalate=False)`` minus the expert heads' own compute.

    What remains is router + top-k + mixing + out-of-scope scoring + policy.
    The heads are timed separately on the same rows they were routed.
    """
    def heads_time(x: np.ndarray, out: Any) -> float:
        t = 0.0
        for j in np.unique(out.expert_idx):
            rows = np.nonzero((out.expert_idx == j).any(1))[0]
            e = asm._route_experts[j]
            t0 = time.perf_counter()
            e.predict_proba(x[rows])
            t += time.perf_counter() - t0
        return t

    single, last = [], []
    for _ in range(repeats):
        ts = []
        for i in range(min(n_single, len(X))):
            x = X[i:i + 1]
            t0 = time.perf_counter()
            out = asm.forward(x, None, escalate=False)
            total = time.perf_counter() - t0
            ts.append(1e3 * (total - heads_time(x, out)))
        single.append(percentile(ts, 50))
        last = ts
    batched = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = asm.forward(X, None, escalate=False)
        total = time.perf_counter() - t0
        batched.append(1e3 * (total - heads_time(X, out)) / len(X))
    return {"single_p50_ms": summarise(single), "batched_ms_per_request": summarise(batched),
            "single_latencies_ms": last}


def traced_peak(fn: Callable[[], Any]) -> int:
    """Peak bytes allocated through Python's allocators (numpy included) while ``fn`` runs."""
    gc.collect()
    tracemalloc.start()
    try:
        fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return int(peak)


def state_bytes(*parts: Any) -> int:
    """Bytes of the weight arrays of fitted parts (anything with ``to_state``)."""
    total = 0
    for p in parts:
        if p is None:
            continue
        _, arrays = p.to_state()
        total += int(sum(np.asarray(a).nbytes for a in arrays.values()))
    return total


def raw_copy(asm: Any, small_raw: Any, gen_raw: Any) -> Any:
    """A shallow copy of an assembly that encodes with the raw (uncached) models."""
    a = copy.copy(asm)
    a.encoder = small_raw
    a.counters = copy.copy(asm.counters)
    if asm.generalist is not None:
        g = copy.copy(asm.generalist)
        g._encoder = gen_raw
        a.generalist = g
    return a
