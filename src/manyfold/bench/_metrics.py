"""Benchmark metrics with known answers: RouteLLM-style APGR, gap recovery, timing summaries.

Quality-vs-cost curves are lists of points ``(share sent to the big model,
quality)``. With ``q_small`` the quality when nothing is sent and ``q_big``
the quality of the big model alone, the *performance gap recovered* at a
share is ``PGR = (q - q_small) / (q_big - q_small)``; **APGR** is the area
under PGR over shares 0..1 (trapezoids). A router that sends a random share
recovers the gap linearly: APGR = 0.5. A perfect router that first sends the
items the small model gets wrong and the big one gets right does better
(e.g. small right on half, big on all: APGR = 0.75).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["quality_curve", "pgr", "apgr", "share_to_recover", "summarise", "percentile"]


def quality_curve(score: Any, small_correct: Any, big_correct: Any, *, points: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Shares and mean quality when the items with the highest ``score`` go to the big model.

    Ties in ``score`` are broken by position (stable). Returns ``n + 1`` points
    (shares ``0, 1/n, ..., 1``), or ``points`` evenly spaced ones.
    """
    s = np.asarray(score, dtype=np.float64)
    a = np.asarray(small_correct, dtype=np.float64)
    b = np.asarray(big_correct, dtype=np.float64)
    n = len(s)
    if n == 0 or len(a) != n or len(b) != n:
        raise ValueError("score, small_correct and big_correct must be non-empty and of equal length")
    order = np.argsort(-s, kind="stable")
    gain = np.concatenate([[0.0], np.cumsum(b[order] - a[order])])
    shares = np.arange(n + 1) / n
    quality = (a.sum() + gain) / n
    if points is not None:
        ks = np.unique(np.round(np.linspace(0, n, points)).astype(int))
        return shares[ks], quality[ks]
    return shares, quality


def pgr(quality: Any, q_small: float, q_big: float) -> np.ndarray:
    """Performance gap recovered: ``(q - q_small) / (q_big - q_small)`` (NaN when there is no gap)."""
    q = np.asarray(quality, dtype=np.float64)
    gap = q_big - q_small
    if abs(gap) < 1e-12:
        return np.full(q.shape, np.nan)
    return (q - q_small) / gap


def _with_ends(shares: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(shares, kind="stable")
    x, y = shares[order], values[order]
    if x[0] > 0:
        x, y = np.concatenate([[0.0], x]), np.concatenate([[y[0]], y])
    if x[-1] < 1:
        x, y = np.concatenate([x, [1.0]]), np.concatenate([y, [y[-1]]])
    return x, y


def apgr(shares: Any, quality: Any, q_small: float, q_big: float) -> float:
    """Area under the PGR-vs-share curve on [0, 1] (trapezoids; the curve is held flat past its ends)."""
    x, y = _with_ends(np.asarray(shares, np.float64), pgr(quality, q_small, q_big))
    if np.isnan(y).any():
        return float("nan")
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2))


def share_to_recover(shares: Any, quality: Any, q_small: float, q_big: float, target: float) -> float:
    """Smallest share at which PGR reaches ``target`` (linear interpolation between points); NaN if never."""
    x, y = _with_ends(np.asarray(shares, np.float64), pgr(quality, q_small, q_big))
    if np.isnan(y).any():
        return float("nan")
    hit = np.nonzero(y >= target - 1e-12)[0]
    if not len(hit):
        return float("nan")
    i = int(hit[0])
    if i == 0 or y[i] == y[i - 1]:
        return float(x[i])
    return float(x[i - 1] + (target - y[i - 1]) * (x[i] - x[i - 1]) / (y[i] - y[i - 1]))


def percentile(values: Any, q: float) -> float:
    """The ``q``-th percentile (linear interpolation); NaN for no values."""
    v = np.asarray(values, dtype=np.float64)
    return float(np.percentile(v, q)) if v.size else float("nan")


def summarise(values: Any) -> dict[str, float]:
    """Median, min and max of repeated measurements (NaN-free input), and how many."""
    v = np.asarray(values, dtype=np.float64)
    if not v.size:
        return {"median": float("nan"), "min": float("nan"), "max": float("nan"), "n": 0}
    return {"median": float(np.median(v)), "min": float(v.min()), "max": float(v.max()), "n": int(v.size)}
