"""Routing at scale: 10 to 10,000 synthetic experts, eager in memory or lazily loaded (LRU).

Each synthetic expert is a real :class:`~manyfold.experts.HeadExpert` (a
linear head over 3 generated labels on random 384-d features) whose weights
are set in closed form (nearest-class-mean: ``W = s * mu``, ``b = -s/2 |mu|^2``)
rather than by L-BFGS: one L-BFGS fit costs ~0.1-0.6 s on this shared
machine, so 10,000 of them would take longer than the whole benchmark. The
inference path (``predict_proba``) is the library's own. The router is the
library's :class:`~manyfold.routers.CentroidRouter` at expert granularity (one
centroid per expert). A request is: route, top-2, run the two experts' heads,
combine. Two routing paths are timed: the library router's ``predict_proba``
(+ ``top_k``) and :class:`FlatScan` (same scores, contiguous matrix, no
marginalisation); the lazy store is timed with FlatScan. Traffic is Zipf-distributed over experts (a few hot experts, a long
tail), which is what makes a bounded LRU useful.
"""

from __future__ import annotations

import gc
import tempfile
import time
import tracemalloc
from typing import Any

import numpy as np

from .._lazy import LazyExpertStore
from ..experts import HeadExpert
from ..routers import CentroidRouter, top_k
from ._metrics import percentile, summarise

__all__ = ["synthetic_experts", "run_scaling"]

DIM = 384
LABELS_PER_EXPERT = 3


def synthetic_experts(n: int, seed: int = 0, dim: int = DIM) -> tuple[list[HeadExpert], np.ndarray, np.ndarray]:
    """``n`` HeadExperts, the expert centres ``(n, dim)`` and label means ``(n, 3, dim)`` (all unit-scale)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    means = centres[:, None, :] + 0.5 * rng.standard_normal((n, LABELS_PER_EXPERT, dim)).astype(np.float32) / np.sqrt(dim)
    experts = []
    params = HeadExpert("x").get_params()
    for i in range(n):
        name = f"e{i:05d}"
        labels = [f"{name}.l{j}" for j in range(LABELS_PER_EXPERT)]
        mu = means[i]
        config = {"type": "HeadExpert", "params": {**params, "name": name}, "labels": labels, "temperature": 1.0,
                  "n_features_in": dim, "card": {"name": name, "description": "synthetic", "domain": None,
                                                  "labels": labels, "metrics": {}, "size": dim * 3 + 3,
                                                  "lineage": {"source": "closed-form nearest-class-mean"}}}
        arrays = {"W": (20.0 * mu.T).astype(np.float32), "b": (-10.0 * (mu * mu).sum(1)).astype(np.float32)}
        experts.append(HeadExpert.from_state(config, arrays))
    return experts, centres, means


def _queries(centres: np.ndarray, means: np.ndarray, m: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed + 1)
    n = len(centres)
    ranks = np.minimum(rng.zipf(1.3, size=m) - 1, n - 1)
    perm = rng.permutation(n)  # which experts are hot is random
    e = perm[ranks]
    lab = rng.integers(0, LABELS_PER_EXPERT, size=m)
    X = means[e, lab] + 0.3 * rng.standard_normal((m, centres.shape[1])).astype(np.float32) / np.sqrt(centres.shape[1])
    return X.astype(np.float32), e


class FlatScan:
    """Expert-granularity centroid routing without the label-to-expert marginalisation.

    Same scores as the fitted :class:`CentroidRouter` (cosine x scale / temperature),
    but one contiguous ``(d, n)`` matrix and a top-2 partial sort: the scan over
    all centroids is the whole cost.
    """

    def __init__(self, router: CentroidRouter) -> None:
        self.experts_ = router.experts_
        self.Ct = np.ascontiguousarray(router.centroids_.T) * np.float32(router.scale / router.temperature_)

    def route(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        z = (x / max(float(np.linalg.norm(x)), 1e-12)) @ self.Ct
        k = min(2, z.shape[1])
        idx = np.argpartition(-z, k - 1, axis=1)[:, :k]
        top = np.take_along_axis(z, idx, 1)
        w = np.exp(top - top.max(1, keepdims=True))
        return idx, w / w.sum(1, keepdims=True)


def _route_one(router: Any, get: Any, x: np.ndarray) -> None:
    idx, w = router.route(x) if isinstance(router, FlatScan) else top_k(router.predict_proba(x), 2)
    names = router.experts_
    for slot in range(idx.shape[1]):
        get(names[idx[0, slot]]).predict_proba(x) * w[0, slot]


def _measure(router: Any, get: Any, X: np.ndarray, repeats: int) -> dict[str, Any]:
    p50s, p99s = [], []
    lat: list[float] = []
    for _ in range(repeats):
        ts = []
        for i in range(len(X)):
            t0 = time.perf_counter()
            _route_one(router, get, X[i:i + 1])
            ts.append(time.perf_counter() - t0)
        p50s.append(1e3 * percentile(ts, 50))
        p99s.append(1e3 * percentile(ts, 99))
        lat = ts
    return {"p50_ms": summarise(p50s), "p99_ms": summarise(p99s), "last_latencies_ms": [1e3 * t for t in lat]}


def _traced(fn: Any) -> tuple[Any, int]:
    gc.collect()
    tracemalloc.start()
    try:
        out = fn()
        cur, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return out, cur


def run_scaling(sizes: tuple[int, ...], *, n_requests: int = 300, repeats: int = 3, lazy_cap: int = 64,
                seed: int = 0, progress: Any = None) -> list[dict[str, Any]]:
    """One row per size: routing accuracy, single-request p50/p99 (eager and lazy), memory, LRU counters."""
    rows = []
    for n in sizes:
        (experts, centres, means), expert_bytes = _traced(lambda: synthetic_experts(n, seed))
        names = [e.name for e in experts]
        rng = np.random.default_rng(seed)
        Xr = np.repeat(centres, 2, axis=0) + 0.3 * rng.standard_normal((2 * n, DIM)).astype(np.float32) / np.sqrt(DIM)
        yr = np.repeat(np.array(names), 2)
        router, router_bytes = _traced(lambda: CentroidRouter().fit(Xr, yr, {v: v for v in names}))
        X, true_e = _queries(centres, means, n_requests, seed)
        routed = router.predict_proba(X).argmax(1)
        by_name = {e.name: e for e in experts}
        eager = _measure(router, by_name.__getitem__, X, repeats)
        scan = FlatScan(router)
        fast = _measure(scan, by_name.__getitem__, X, repeats)
        batch_t = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            top_k(router.predict_proba(X), 2)
            batch_t.append((time.perf_counter() - t0) / len(X) * 1e6)
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            store = LazyExpertStore(tmp, max_experts=lazy_cap)
            for e in experts:
                store.add(e)
            write_s = time.perf_counter() - t0
            lazy = _measure(scan, store.get, X, repeats)
            stats = store.stats()
            max_loaded = stats["loaded_bytes"]
        del experts, by_name
        rows.append({
            "n_experts": n,
            "routing_accuracy": float((routed == true_e).mean()),
            "eager_p50_ms": eager["p50_ms"], "eager_p99_ms": eager["p99_ms"],
            "flatscan_p50_ms": fast["p50_ms"], "flatscan_p99_ms": fast["p99_ms"],
            "lazy_p50_ms": lazy["p50_ms"], "lazy_p99_ms": lazy["p99_ms"],
            "router_batched_us_per_request": summarise(batch_t),
            "eager_expert_bytes_traced": int(expert_bytes), "router_bytes_traced": int(router_bytes),
            "lazy_cap_experts": lazy_cap, "lazy_loaded_bytes": int(max_loaded),
            "lazy_hits": stats["hits"], "lazy_misses": stats["misses"], "lazy_evictions": stats["evictions"],
            "lazy_hit_rate": stats["hits"] / max(stats["hits"] + stats["misses"], 1),
            "lazy_write_seconds": write_s, "latencies_ms": eager["last_latencies_ms"],
        })
        if progress is not None:
            progress.update(1)
    return rows
