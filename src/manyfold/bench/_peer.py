"""The peer: semantic-router's IndexedRouter for domain routing, on the same local encoder.

One :class:`semantic_router.Route` per domain holds that domain's training
utterances; the index is semantic-router's in-process ``LocalIndex``; the
dense encoder is our (cached) small encoder wrapped as a semantic-router
``DenseEncoder``, so both routers see identical vectors. The router's
confidence is Platt-calibrated on the validation split (out-of-scope items
labelled ``None``) and a query whose confidence is under 0.5 routes nowhere,
which we read as out-of-scope. Nothing leaves the machine.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ._metrics import percentile, summarise

__all__ = ["available", "run_peer"]


def available() -> str | None:
    """``None`` when semantic-router can be imported, else why not."""
    try:
        import semantic_router  # noqa: F401
        from semantic_router.encoders.base import DenseEncoder  # noqa: F401
    except Exception as exc:  # pragma: no cover - depends on the environment
        return f"{type(exc).__name__}: {exc}"
    return None


def _wrap(encoder: Any) -> Any:
    from semantic_router.encoders.base import DenseEncoder

    class ManyfoldDense(DenseEncoder):  # type: ignore[misc, valid-type]
        """Our encoder as a semantic-router dense encoder; counts the seconds spent encoding."""

        inner: Any = None
        seconds: float = 0.0

        def __call__(self, docs: list[Any]) -> list[list[float]]:
            t0 = time.perf_counter()
            X = np.asarray(self.inner.encode(list(docs)), np.float32)
            self.seconds += time.perf_counter() - t0
            return X.tolist()

    return ManyfoldDense(name=f"manyfold:{encoder.id}", inner=encoder)


def run_peer(ds: Any, encoder: Any, *, n_single: int, repeats: int, batch: int = 64) -> dict[str, Any]:
    """Fit, evaluate (domain routing, OOS) and time semantic-router; see the module docstring."""
    import semantic_router
    from semantic_router import IndexedRouter, Route

    oos = ds.oos_label
    tr, va, te = ds.split("train"), ds.split("val"), ds.split("test")
    enc = _wrap(encoder)
    t0 = time.perf_counter()
    ytr = np.asarray(tr.labels).astype(str)
    routes = [Route(name=d, utterances=[tr.items[i] for i in np.nonzero(np.isin(
        ytr, [lab for lab, dd in ds.label_to_domain.items() if dd == d]))[0]]) for d in ds.domains]
    router = IndexedRouter(encoder=enc, routes=routes, top_k=5, aggregation="mean")
    yv = [None if v == oos else ds.label_to_domain[v] for v in np.asarray(va.labels).astype(str).tolist()]
    report = router.fit(list(va.items), yv)
    router.confidence_threshold = 0.5
    fit_s = time.perf_counter() - t0
    y = np.asarray(te.labels).astype(str)
    picks = [router(q).name for q in te.items]
    pred = np.array([p if p is not None else "" for p in picks])
    ins, t = y != oos, y == oos
    true_dom = np.array([ds.label_to_domain.get(v, "") for v in y.tolist()])
    # single-request routing overhead: the call minus the time inside the encoder (vectors are cached)
    sample = list(te.items[:n_single])
    p50s, lat = [], []
    for _ in range(repeats):
        ts = []
        for q in sample:
            enc.seconds = 0.0
            t0 = time.perf_counter()
            router(q)
            ts.append(time.perf_counter() - t0 - enc.seconds)
        p50s.append(1e3 * percentile(ts, 50))
        lat = ts
    bt = []
    qs = list(te.items[:batch])
    for _ in range(repeats):
        enc.seconds = 0.0
        t0 = time.perf_counter()
        router.evaluate(qs, [None] * len(qs))
        bt.append(1e3 * (time.perf_counter() - t0 - enc.seconds) / len(qs))
    return {
        "version": getattr(semantic_router, "__version__", "?"),
        "routing_accuracy": float((pred[ins] == true_dom[ins]).mean()),
        "oos_recall": float((pred[t] == "").mean()) if t.any() else float("nan"),
        "in_scope_no_route_rate": float((pred[ins] == "").mean()),
        "val_fit_accuracy": report.accuracy, "val_ece": report.ece, "fit_seconds": fit_s,
        "overhead_single_ms": summarise(p50s), "overhead_single_latencies_ms": [1e3 * v for v in lat],
        "overhead_batched_ms_per_request": summarise(bt),
        "test_domains": pred.tolist(),  # the routed domain of every test item ("" = no route: out-of-scope)
    }
