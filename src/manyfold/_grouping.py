"""Automatic grouping of labels into experts, for data that has no domain column.

Each label is summarised by the unit-norm mean of its items' vectors (its
centroid); labels whose centroids point the same way are put in one expert by
spherical k-means (cosine similarity, k-means++ seeding, several seeded
restarts, the best objective kept). Pure numpy and deterministic for a seed.

How many experts, when not given: every k from 2 to
``min(max_experts, n_labels // 2)`` is tried and the k whose grouping has the
highest mean cosine silhouette over the label centroids wins (ties go to the
smaller k). A silhouette compares, for each label, its mean cosine distance to
the other labels of its group with that to the nearest other group, so it
rewards groups that are tight and far apart. With fewer than 4 labels there is
no k to try and all labels form one expert.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._estimator import check_features
from ._exceptions import ConfigError

__all__ = ["LabelGrouping", "group_labels"]

_METHOD = "spherical-kmeans on label centroids"
_N_INIT = 8
_MAX_ITER = 100


@dataclass(frozen=True)
class LabelGrouping:
    """Which expert owns each label, and how that was decided.

    ``label_to_expert``: every label -> its expert's name. ``chosen``:
    ``"auto"`` (k picked by silhouette) or ``"given"``. ``scores``: the mean
    cosine silhouette of each k tried (``{}`` unless ``chosen == "auto"`` and
    there were at least 4 labels).
    """

    label_to_expert: dict[str, str]
    n_experts: int
    method: str
    chosen: str
    scores: dict[int, float] = field(default_factory=dict)

    @property
    def groups(self) -> dict[str, list[str]]:
        """Expert name -> its sorted labels, experts in name order."""
        out: dict[str, list[str]] = {}
        for lab in sorted(self.label_to_expert):
            out.setdefault(self.label_to_expert[lab], []).append(lab)
        return dict(sorted(out.items()))

    def to_dict(self) -> dict[str, Any]:
        """JSON-able (for the manifest); ``scores`` keys become strings, as JSON needs."""
        return {
            "label_to_expert": dict(sorted(self.label_to_expert.items())),
            "n_experts": int(self.n_experts),
            "method": self.method,
            "chosen": self.chosen,
            "scores": {str(k): float(v) for k, v in sorted(self.scores.items())},
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LabelGrouping:
        """The inverse of :meth:`to_dict`."""
        return cls(
            label_to_expert={str(k): str(v) for k, v in d["label_to_expert"].items()},
            n_experts=int(d["n_experts"]),
            method=str(d["method"]),
            chosen=str(d["chosen"]),
            scores={int(k): float(v) for k, v in d.get("scores", {}).items()},
        )


def _unit_rows(M: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(M, axis=1, keepdims=True)
    return np.divide(M, norms, out=np.zeros_like(M), where=norms > 0)


def _group_sums(X: np.ndarray, yi: np.ndarray, n: int) -> np.ndarray:
    """Row sums of ``X`` per group ``yi`` (every group 0..n-1 present); sorted reduceat, not the slow np.add.at."""
    order = np.argsort(yi, kind="stable")
    starts = np.searchsorted(yi[order], np.arange(n))
    return np.add.reduceat(X[order], starts, axis=0)


def _kmeans_once(C: np.ndarray, k: int, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """One spherical k-means run from a k-means++ seeding: (assignment, sum of cosines to the centres)."""
    n = len(C)
    first = int(rng.integers(n))
    centres = [C[first]]
    # squared euclidean distance between unit vectors = 2 - 2 cos
    d2 = np.maximum(2.0 - 2.0 * (C @ C[first]), 0.0)
    chosen = {first}
    for _ in range(1, k):
        total = d2.sum()
        if total > 1e-12:
            nxt = int(rng.choice(n, p=d2 / total))
        else:  # every label sits on a centre already: take any label not chosen yet
            nxt = int(rng.choice([i for i in range(n) if i not in chosen]))
        chosen.add(nxt)
        centres.append(C[nxt])
        d2 = np.minimum(d2, np.maximum(2.0 - 2.0 * (C @ C[nxt]), 0.0))
    M = np.array(centres)
    assign = np.full(n, -1)
    for _ in range(_MAX_ITER):
        sims = C @ M.T
        new = sims.argmax(1)
        # no empty group: each empty one takes the label worst served by a group of two or more
        for j in range(k):
            if not (new == j).any():
                own = sims[np.arange(n), new]
                sizes = np.bincount(new, minlength=k)
                movable = np.nonzero(sizes[new] > 1)[0]
                new[movable[own[movable].argmin()]] = j
        if np.array_equal(new, assign):
            break
        assign = new
        M = _unit_rows(_group_sums(C, assign, k))
    return assign, float((C * M[assign]).sum())


def _spherical_kmeans(C: np.ndarray, k: int, seed: int) -> np.ndarray:
    """The best of several seeded runs (highest total cosine to the centres)."""
    if k == 1:
        return np.zeros(len(C), dtype=np.int64)
    if k == len(C):
        return np.arange(len(C))
    rng = np.random.default_rng(seed)
    best: tuple[float, np.ndarray] | None = None
    for _ in range(_N_INIT):
        assign, obj = _kmeans_once(C, k, rng)
        if best is None or obj > best[0] + 1e-9:
            best = (obj, assign)
    return best[1]  # type: ignore[index]


def _silhouette(C: np.ndarray, assign: np.ndarray) -> float:
    """Mean cosine silhouette of the rows of ``C`` (a label alone in its group scores 0)."""
    D = 1.0 - np.clip(C @ C.T, -1.0, 1.0)
    k = int(assign.max()) + 1
    onehot = np.eye(k)[assign]  # (n, k)
    sizes = onehot.sum(0)
    mean_to = (D @ onehot)  # sum of distances to each group
    own = sizes[assign]
    a = np.where(own > 1, mean_to[np.arange(len(C)), assign] / np.maximum(own - 1, 1), 0.0)
    other = mean_to / sizes
    other[np.arange(len(C)), assign] = np.inf
    b = other.min(1)
    denom = np.maximum(a, b)
    s = np.where((own > 1) & (denom > 0), (b - a) / np.where(denom > 0, denom, 1.0), 0.0)
    return float(s.mean())


def _names(labels: list[str], assign: np.ndarray, prefix: str) -> dict[str, str]:
    """Groups named ``prefix-01`` ... in the order of their sorted smallest label."""
    k = int(assign.max()) + 1
    smallest = {j: min(lab for lab, a in zip(labels, assign.tolist()) if a == j) for j in range(k)}
    order = sorted(range(k), key=lambda j: smallest[j])
    width = max(2, len(str(k)))
    name_of = {j: f"{prefix}-{r + 1:0{width}d}" for r, j in enumerate(order)}
    return {lab: name_of[int(a)] for lab, a in zip(labels, assign.tolist())}


def _check_int(value: Any, name: str, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
        raise ConfigError(f"{name} must be an integer >= {lo}, got {value!r}")
    return int(value)


def group_labels(X: Any, y: Any, *, n_experts: int | None = None, seed: int = 0, max_experts: int = 16,
                 name_prefix: str = "group") -> LabelGrouping:
    """Group the labels of ``y`` into experts by the direction of their items' vectors.

    ``X`` (n, d): features of the training items (the small encoder's vectors);
    ``y`` (n,): their labels, in-scope only (the out-of-scope label is not a
    label to give an expert). ``n_experts`` fixes the number of experts
    (1..number of labels); ``None`` picks it by silhouette (see the module
    docstring). Experts are named ``f"{name_prefix}-01"``, ``-02``, ... in the
    order of the smallest label in each group. Deterministic for a ``seed``.
    """
    from .experts import check_name

    X = check_features(X)
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != len(X):
        raise ConfigError(f"X has {len(X)} rows but y has shape {y.shape}; give one label per row")
    if not len(y):
        raise ConfigError("cannot group labels of zero items")
    seed = _check_int(seed, "seed", 0)
    max_experts = _check_int(max_experts, "max_experts", 1)
    if not isinstance(name_prefix, str):
        raise ConfigError(f"name_prefix must be a str, got {type(name_prefix).__name__}")
    check_name(f"{name_prefix}-01", "expert")  # the names it makes must be valid expert names
    labels, yi = np.unique(y.astype(str), return_inverse=True)
    labels = labels.tolist()
    n_labels = len(labels)
    C = _unit_rows(_group_sums(X, yi.reshape(-1), n_labels).astype(np.float64))
    scores: dict[int, float] = {}
    if n_experts is not None:
        if isinstance(n_experts, bool) or not isinstance(n_experts, (int, np.integer)) or not 1 <= n_experts <= n_labels:
            raise ConfigError(f"n_experts must be an integer from 1 to the number of labels ({n_labels}), got {n_experts!r}")
        k, chosen = int(n_experts), "given"
        assign = _spherical_kmeans(C, k, seed)
    else:
        chosen = "auto"
        k, assign = 1, np.zeros(n_labels, dtype=np.int64)
        best = -np.inf
        for kk in range(2, min(max_experts, n_labels // 2) + 1):
            a = _spherical_kmeans(C, kk, seed)
            scores[kk] = round(_silhouette(C, a), 6)
            if scores[kk] > best:
                best, k, assign = scores[kk], kk, a
    return LabelGrouping(label_to_expert=_names(labels, assign, name_prefix), n_experts=k, method=_METHOD,
                         chosen=chosen, scores=scores)
