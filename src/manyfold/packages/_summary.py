"""The routing summary of an expert: where its inputs lie, without the inputs.

A router has to learn which region of the routing encoder's space belongs to
an expert. Shipping the training vectors would ship (an invertible image of)
the training data, so a package carries only, per label, at most ``per_label``
*prototypes*: centroids of spherical k-means clusters of that label's
unit-normalised vectors, each with a weight (the share of the label's items in
its cluster) and a spread (the mean cosine of the cluster's items to its
prototype), plus the label's item count. Every prototype averages at least
:data:`MIN_ITEMS` distinct vectors; nothing is stored per item.

What this still reveals is stated in ``docs/packages.md``: per-label counts, and
centroids that a determined attacker can partly invert (a centroid of three
items is not far from each of them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .._estimator import check_features
from .._exceptions import ArtifactError, ConfigError

__all__ = ["RoutingSummary", "summarize", "MIN_ITEMS"]

#: the fewest distinct item vectors a prototype may average (a smaller cluster is merged away)
MIN_ITEMS = 3
METHOD = "spherical k-means per label on unit-normalised vectors, >= 3 distinct items per prototype"
_N_INIT = 4
_MAX_ITER = 50
#: the most distinct rows of one label for which k-means keeps their Gram matrix (32 MiB)
_GRAM_MAX = 2048


def _unit_rows(M: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(M, axis=1, keepdims=True)
    return np.divide(M, norms, out=np.zeros_like(M), where=norms > 0)


def _distinct_rows(U: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(U, axis=0, return_counts=True)`` (the same rows in the same order), without its structured-dtype sort."""
    keys = U.T[::-1]  # np.lexsort sorts by its last key first: column 0, then 1, ...
    order = np.lexsort(keys[-4:])
    Us = U[order]
    if (Us[1:, :4] == Us[:-1, :4]).all(1).any():  # a tie on the first columns (duplicates): sort on all of them
        order = np.lexsort(keys)
        Us = U[order]
    starts = np.flatnonzero(np.r_[True, (Us[1:] != Us[:-1]).any(1)])
    return Us[starts], np.diff(np.r_[starts, len(U)])


def _gram(U: np.ndarray) -> np.ndarray | None:
    return U @ U.T if len(U) <= _GRAM_MAX else None


def _kmeans(U: np.ndarray, w: np.ndarray, k: int, rng: np.random.Generator, G: np.ndarray | None = None) -> np.ndarray:
    """Weighted spherical k-means of the unit rows ``U`` (best of a few k-means++ runs): the assignment.

    A centre is the unit-normalised weighted sum of its rows, kept as coefficients ``C`` (n, k)
    over the rows, so every cosine comes from the Gram matrix ``G = U @ U.T`` (None for a label
    of more than :data:`_GRAM_MAX` distinct rows: ``U @ (U.T @ C)`` instead).
    """
    n = len(U)
    if k == 1:
        return np.zeros(n, dtype=np.int64)

    def dots(C: np.ndarray) -> np.ndarray:  # cosines of every row to every (unnormalised) centre
        return G @ C if G is not None else U @ (U.T @ C)

    def scores(C: np.ndarray) -> np.ndarray:
        S = dots(C)
        norms = np.sqrt(np.maximum((C * S).sum(0), 0.0))
        return np.divide(S, norms, out=np.zeros_like(S), where=norms > 0)

    rows = np.arange(n)
    best: tuple[float, np.ndarray] | None = None
    for _ in range(_N_INIT):
        first = int(rng.integers(n))
        picked = [first]
        d2 = np.maximum(2.0 - 2.0 * (G[first] if G is not None else U @ U[first]), 0.0) * w
        for _ in range(1, k):
            total = d2.sum()
            if total > 1e-12:  # rng.choice(n, p=d2 / total), drawn the same way without its per-call checks
                cdf = np.cumsum(d2 / total)
                cdf /= cdf[-1]
                nxt = min(int(cdf.searchsorted(rng.random(), side="right")), n - 1)
            else:
                nxt = int(rng.integers(n))
            picked.append(nxt)
            d2 = np.minimum(d2, np.maximum(2.0 - 2.0 * (G[nxt] if G is not None else U @ U[nxt]), 0.0) * w)
        C = np.zeros((n, k))
        C[picked, np.arange(k)] = 1.0
        assign = np.full(n, -1)
        for _ in range(_MAX_ITER):
            S = scores(C)
            new = S.argmax(1)
            if np.array_equal(new, assign):
                break
            assign = new
            filled = np.bincount(assign, minlength=k) > 0
            C[:, filled] = 0.0  # an empty cluster keeps its centre
            C[rows, assign] = w
        else:
            S = scores(C)
        obj = float((w * S[rows, assign]).sum())
        if best is None or obj > best[0] + 1e-9:
            best = (obj, assign)
    return best[1]  # type: ignore[index]


def _label_prototypes(V: np.ndarray, k_max: int, rng: np.random.Generator, label: str) -> tuple[np.ndarray, ...]:
    """Prototypes, weights and spreads of one label's vectors ``V`` (every cluster >= MIN_ITEMS distinct rows)."""
    U = _unit_rows(V.astype(np.float64))
    distinct, mult = _distinct_rows(U)
    if len(distinct) < MIN_ITEMS:
        raise ConfigError(
            f"label {label!r} has {len(distinct)} distinct item vector(s); a routing summary needs at least "
            f"{MIN_ITEMS} per label (a prototype of fewer items is close to one item's embedding): add items or "
            "leave the label out")
    w = mult.astype(np.float64)
    k = max(1, min(k_max, len(distinct) // MIN_ITEMS))
    G = _gram(distinct) if k > 1 else None
    while True:
        assign = _kmeans(distinct, w, k, rng, G)
        sizes = np.bincount(assign, minlength=k)
        if k == 1 or sizes.min() >= MIN_ITEMS:
            break
        k -= 1  # a cluster of fewer than MIN_ITEMS distinct vectors: fewer, larger clusters
    used = np.unique(assign)
    protos, weights, spreads = [], [], []
    for j in used:
        m = assign == j
        centre = (distinct[m] * w[m, None]).sum(0)
        centre = centre / max(np.linalg.norm(centre), 1e-12)
        item_w = w[m]
        protos.append(centre)
        weights.append(item_w.sum() / w.sum())
        spreads.append(float((item_w * (distinct[m] @ centre)).sum() / item_w.sum()))
    return np.array(protos), np.array(weights), np.array(spreads)


def _frozen(a: Any, dtype: Any) -> np.ndarray:
    a = np.array(a, dtype=dtype, copy=True)
    a.setflags(write=False)
    return a


@dataclass(frozen=True, eq=False)
class RoutingSummary:
    """Per-label prototypes in the routing encoder's space (see the module docstring).

    ``prototypes`` (m, dim) float32 unit rows; ``label_index`` (m,) int32 into
    ``labels``; ``weights`` (m,) float32, the share of its label's items in each
    prototype's cluster (they sum to 1 per label); ``spreads`` (m,) float32, the
    mean cosine of the cluster's items to the prototype; ``counts`` (len(labels),)
    int64 items per label. Arrays are read-only copies.
    """

    labels: tuple[str, ...]
    counts: np.ndarray
    prototypes: np.ndarray
    label_index: np.ndarray
    weights: np.ndarray
    spreads: np.ndarray
    per_label: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", tuple(str(x) for x in self.labels))
        for name, dtype in (("counts", np.int64), ("prototypes", np.float32), ("label_index", np.int32),
                            ("weights", np.float32), ("spreads", np.float32)):
            object.__setattr__(self, name, _frozen(getattr(self, name), dtype))
        L, P = len(self.labels), self.prototypes
        problems = []
        if len(set(self.labels)) != L or L == 0:
            problems.append("labels must be a non-empty list of distinct names")
        if P.ndim != 2 or P.shape[0] == 0 or P.shape[1] == 0:
            problems.append(f"prototypes must be a non-empty 2-d array, got shape {P.shape}")
        m = P.shape[0] if P.ndim == 2 else -1
        for name in ("label_index", "weights", "spreads"):
            if getattr(self, name).shape != (m,):
                problems.append(f"{name} has shape {getattr(self, name).shape}, expected ({m},)")
        if self.counts.shape != (L,):
            problems.append(f"counts has shape {self.counts.shape}, expected ({L},)")
        if not problems:
            if self.label_index.min() < 0 or self.label_index.max() >= L:
                problems.append(f"label_index must lie in [0, {L})")
            elif set(self.label_index.tolist()) != set(range(L)):
                problems.append("every label needs at least one prototype")
            elif not (np.isfinite(P).all() and np.isfinite(self.weights).all() and np.isfinite(self.spreads).all()):
                problems.append("prototypes, weights and spreads must be finite")
            elif (self.counts < MIN_ITEMS).any() or np.bincount(self.label_index, minlength=L).max() > self.per_label:
                problems.append(f"each label needs >= {MIN_ITEMS} items and <= per_label={self.per_label} prototypes")
        if problems:
            raise ArtifactError("invalid routing summary: " + "; ".join(problems))

    @property
    def dim(self) -> int:
        return int(self.prototypes.shape[1])

    @property
    def n_prototypes(self) -> int:
        return int(self.prototypes.shape[0])

    def as_training_set(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(X, y, sample_weight)`` for a router: each prototype, its label, and how many items it stands for."""
        y = np.array(self.labels, dtype=str)[self.label_index]
        w = self.weights.astype(np.float64) * self.counts[self.label_index]
        return np.array(self.prototypes), y, w

    def to_arrays(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """``(meta, arrays)``: JSON-able metadata (labels, parameters) and the arrays to save as safetensors."""
        meta = {"labels": list(self.labels), "per_label": int(self.per_label), "seed": int(self.seed),
                "dim": self.dim, "n_prototypes": self.n_prototypes, "min_items_per_prototype": MIN_ITEMS,
                "method": METHOD}
        arrays = {"prototypes": np.array(self.prototypes), "label_index": np.array(self.label_index),
                  "weights": np.array(self.weights), "spreads": np.array(self.spreads),
                  "counts": np.array(self.counts)}
        return meta, arrays

    @classmethod
    def from_arrays(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> RoutingSummary:
        """Rebuild from :meth:`to_arrays`' output; anything missing or inconsistent is an :class:`ArtifactError`."""
        need = ("prototypes", "label_index", "weights", "spreads", "counts")
        missing = [k for k in need if k not in arrays]
        extra = sorted(set(arrays) - set(need))
        if missing or extra:
            raise ArtifactError(f"invalid routing summary: arrays missing {missing}, unexpected {extra}")
        labels = meta.get("labels") if isinstance(meta, dict) else None
        if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
            raise ArtifactError("invalid routing summary: 'labels' must be a list of strings")
        per_label, seed = meta.get("per_label"), meta.get("seed", 0)
        if isinstance(per_label, bool) or not isinstance(per_label, int) or per_label < 1:
            raise ArtifactError(f"invalid routing summary: per_label must be a positive integer, got {per_label!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ArtifactError(f"invalid routing summary: seed must be an integer, got {seed!r}")
        return cls(labels=tuple(labels), counts=arrays["counts"], prototypes=arrays["prototypes"],
                   label_index=arrays["label_index"], weights=arrays["weights"], spreads=arrays["spreads"],
                   per_label=per_label, seed=seed)


def summarize(X: Any, y: Any, *, per_label: int = 10, seed: int = 0, max_items: int | None = None) -> RoutingSummary:
    """The :class:`RoutingSummary` of features ``X`` (n, dim) in the routing encoder's space with labels ``y``.

    Per label: k = min(per_label, distinct items // 3, at least 1) spherical
    k-means clusters, shrunk until every cluster averages at least
    :data:`MIN_ITEMS` distinct vectors. A label with fewer than 3 distinct
    vectors is a :class:`ConfigError` (its prototype would be one item's embedding).
    ``max_items``: cluster at most this many items of a label (a seeded random
    sample, for speed on large labels; the counts stay the label's full counts).
    Deterministic for a given ``seed``.
    """
    if isinstance(per_label, bool) or not isinstance(per_label, (int, np.integer)) or per_label < 1:
        raise ConfigError(f"per_label must be a positive integer, got {per_label!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    if max_items is not None and (isinstance(max_items, bool) or not isinstance(max_items, (int, np.integer))
                                  or max_items < MIN_ITEMS):
        raise ConfigError(f"max_items must be None or an integer >= {MIN_ITEMS}, got {max_items!r}")
    X = check_features(X)
    y = np.asarray(y).astype(str)
    if y.ndim != 1 or len(y) != len(X):
        raise ConfigError(f"X has {len(X)} rows but y has {y.size} labels")
    if len(X) == 0 or X.shape[1] == 0:
        raise ConfigError(f"a routing summary needs a non-empty feature matrix, got shape {X.shape}")
    labels = sorted(set(y.tolist()))
    rng = np.random.default_rng(int(seed))
    protos, index, weights, spreads, counts = [], [], [], [], []
    for i, lab in enumerate(labels):
        V = X[y == lab]
        counts.append(len(V))
        if max_items is not None and len(V) > max_items:
            V = V[np.sort(rng.choice(len(V), int(max_items), replace=False))]
        p, w, s = _label_prototypes(V, int(per_label), rng, lab)
        protos.append(p)
        weights.append(w)
        spreads.append(s)
        index.append(np.full(len(p), i))
    return RoutingSummary(labels=tuple(labels), counts=np.array(counts), prototypes=np.concatenate(protos),
                          label_index=np.concatenate(index), weights=np.concatenate(weights),
                          spreads=np.concatenate(spreads), per_label=int(per_label), seed=int(seed))
