"""The benchmarked systems, fitted on the same splits and the same cached embeddings.

* monoliths: a flat head over every label (out-of-scope included) on the
  small encoder, on the big encoder, and the assembly's generalist alone;
* the assembly (linear router) at top-1 and top-2, with and without escalation;
* routing baselines inside the same assembly: a kNN router (refitted), random
  routing and oracle routing (the true domain), the last two through
  :class:`PresetRouter` with the linear assembly's calibrated policy.
"""

from __future__ import annotations

import copy
import time
from typing import Any

import numpy as np

from .._assembly import Assembly
from .._config import AssemblyConfig
from .._fit import calibrate_assembly
from .._metrics import auroc, evaluate_arrays, macro_f1
from ..experts import HeadExpert
from ..generalists import HeadGeneralist
from ..routers import KNNRouter, LinearRouter

__all__ = ["Features", "PresetRouter", "fit_assembly_systems", "fit_monolith", "eval_monolith", "eval_assembly"]


class Features:
    """Encoded splits of one encoder: ``X[split]`` (float32) and the encode time of each split."""

    def __init__(self, encoder: Any, ds: Any, splits: tuple[str, ...] = ("train", "val", "test"), *,
                 progress: bool = False) -> None:
        self.encoder = encoder
        self.X: dict[str, np.ndarray] = {}
        self.seconds: dict[str, float] = {}
        for s in splits:
            t0 = time.perf_counter()
            self.X[s] = np.asarray(encoder.encode(list(ds.split(s).items), show_progress=progress), np.float32)
            self.seconds[s] = time.perf_counter() - t0


class PresetRouter:
    """Stands in for a fitted router and returns given ``p(expert | x)`` rows (random / oracle routing).

    ``set(proba)`` before each ``forward``; the rows must be in the order of the
    ``X`` passed to it.
    """

    def __init__(self, base: Any) -> None:
        self.experts_ = base.experts_
        self.labels_ = base.labels_
        self._proba: np.ndarray | None = None

    def set(self, proba: np.ndarray) -> PresetRouter:
        self._proba = np.asarray(proba, np.float32)
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        if self._proba is None or len(self._proba) != len(X):
            raise ValueError("PresetRouter: call set(proba) with one row per item first")
        return self._proba


def _pool(ds: Any, F: Features, oos: str) -> tuple[np.ndarray, list[Any], np.ndarray]:
    """The calibration pool of :func:`manyfold._fit.refit_router`: in-scope val + train OOS + val OOS."""
    tr, va = ds.split("train"), ds.split("val")
    ytr, yva = np.asarray(tr.labels).astype(str), np.asarray(va.labels).astype(str)
    a, b, c = yva != oos, ytr == oos, yva == oos
    X = np.concatenate([F.X["val"][a], F.X["train"][b], F.X["val"][c]])
    items = [va.items[i] for i in np.nonzero(a)[0]] + [tr.items[i] for i in np.nonzero(b)[0]] + \
        [va.items[i] for i in np.nonzero(c)[0]]
    return X, items, np.concatenate([yva[a], np.full(b.sum() + c.sum(), oos)])


def _domain_experts(ds: Any) -> list[HeadExpert]:
    return [HeadExpert(d, kind="linear", domain=d) for d in ds.domains]


def fit_assembly_systems(ds: Any, Fs: Features, gen: HeadGeneralist, seed: int = 0) -> dict[str, Any]:
    """The linear-router assembly (top-2, calibrated), its top-1 recalibration, and the kNN-router one."""
    cfg2 = AssemblyConfig(top_k=2)
    tr, va = ds.split("train"), ds.split("val")
    l2e = {lab: ds.label_to_domain[lab] for lab in ds.labels}
    out: dict[str, Any] = {}
    t0 = time.perf_counter()
    asm = Assembly(Fs.encoder, LinearRouter(seed=seed), _domain_experts(ds), gen, cfg2)
    asm.fit(tr.items, tr.labels, va.items, va.labels, label_to_expert=l2e)
    out["linear_top2"] = (asm, time.perf_counter() - t0)
    t0 = time.perf_counter()
    top1 = copy.copy(asm)
    top1.config = AssemblyConfig(top_k=1)
    top1.counters = copy.copy(asm.counters)
    calibrate_assembly(top1, *_pool(ds, Fs, cfg2.oos_label))
    out["linear_top1"] = (top1, out["linear_top2"][1] + time.perf_counter() - t0)
    t0 = time.perf_counter()
    knn = Assembly(Fs.encoder, KNNRouter(), asm.experts, gen, cfg2)  # experts and generalist already fitted
    knn.fit(tr.items, tr.labels, va.items, va.labels, label_to_expert=l2e)
    out["knn_top2"] = (knn, time.perf_counter() - t0)
    return out


def fit_monolith(F: Features, ds: Any, gen: HeadGeneralist | None = None, seed: int = 0) -> tuple[HeadGeneralist, float]:
    """A flat head over all labels (out-of-scope as a class) on ``F``'s features; returns it and its fit seconds."""
    g = gen if gen is not None else HeadGeneralist(F.encoder, seed=seed, oos_label=ds.oos_label)
    t0 = time.perf_counter()
    g.fit(y=ds.split("train").labels, features=F.X["train"], features_val=F.X["val"], y_val=ds.split("val").labels)
    return g, time.perf_counter() - t0


def eval_monolith(g: HeadGeneralist, X: np.ndarray, y: Any, label_to_domain: dict[str, str], *, X_val: np.ndarray,
                  y_val: Any, target_false_oos_rate: float) -> dict[str, Any]:
    """Accuracy / macro-F1 / OOS recall and AUROC / domain of the predicted label, for a flat model at its strongest.

    Out-of-scope is a trained class; an item is called out-of-scope when
    ``p(out_of_scope)`` is above the threshold that wrongly calls
    ``target_false_oos_rate`` of the in-scope validation items out-of-scope
    (the assembly's rule, :mod:`manyfold._baselines`).
    """
    from .._baselines import oos_threshold

    y = np.asarray(y).astype(str)
    oos = g.oos_label
    oos_col = g.labels_ == oos
    yv = np.asarray(y_val).astype(str)
    thr = oos_threshold(g.predict_proba_features(X_val)[:, oos_col].sum(1)[yv != oos], target_false_oos_rate)
    proba = g.predict_proba_features(X)
    t, ins = y == oos, y != oos
    p_oos = proba[:, oos_col].sum(1)
    called = p_oos > thr
    keep = ~oos_col
    pred = np.where(called, oos, g.labels_[keep][proba[:, keep].argmax(1)])
    dom = np.array([label_to_domain.get(v, "") for v in pred.tolist()])
    true_dom = np.array([label_to_domain.get(v, "") for v in y.tolist()])
    closed = g.labels_[keep][proba[:, keep].argmax(1)]
    return {"in_scope_accuracy": float((pred[ins] == y[ins]).mean()), "macro_f1": macro_f1(y, pred),
            "in_scope_accuracy_closed": float((closed[ins] == y[ins]).mean()),
            "oos_recall": float(called[t].mean()) if t.any() else float("nan"),
            "oos_auroc": auroc(p_oos, t), "routing_accuracy": float((dom[ins] == true_dom[ins]).mean()),
            "escalation_rate": 0.0, "escalation_rate_all": 0.0}


def eval_assembly(asm: Assembly, X: np.ndarray, y: Any, gen_signals: Any, *, escalate: bool,
                  router_proba: np.ndarray | None = None) -> tuple[dict[str, Any], Any]:
    """The standard report of one forward pass over cached features (the generalist's from ``gen_signals``)."""
    if router_proba is not None:
        asm.router.set(router_proba)
    out = asm.forward(X, None, escalate=escalate, generalist_signals=gen_signals)
    return evaluate_arrays(asm, out, y), out


def preset_assembly(asm: Assembly) -> Assembly:
    """A shallow copy of ``asm`` whose router is a :class:`PresetRouter` (policy and experts shared)."""
    a = copy.copy(asm)
    a.router = PresetRouter(asm.router)
    a.counters = copy.copy(asm.counters)
    return a


def random_proba(n: int, n_experts: int, seed: int) -> np.ndarray:
    """Random routing: uniform random scores per row, normalised (top-k picks random experts)."""
    p = np.random.default_rng(seed).random((n, n_experts)).astype(np.float32)
    return p / p.sum(1, keepdims=True)


def oracle_proba(asm: Assembly, y: Any, fallback: np.ndarray) -> np.ndarray:
    """Oracle routing: all mass on the true domain's expert; out-of-scope rows keep ``fallback`` (the router's)."""
    y = np.asarray(y).astype(str)
    idx = {e: i for i, e in enumerate(asm.router.experts_.tolist())}
    p = fallback.astype(np.float32).copy()
    for r, lab in enumerate(y.tolist()):
        e = asm.label_to_expert_.get(lab)
        if e is not None:
            p[r] = 0.0
            p[r, idx[e]] = 1.0
    return p
