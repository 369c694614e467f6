"""The routers: linear (learned), centroid (nearest label mean), kNN (nearest examples)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .._components import register_component
from .._exceptions import ConfigError
from .._heads import HeadSpec, head_logits, train_head
from ._base import Router

__all__ = ["LinearRouter", "CentroidRouter", "KNNRouter"]


def _normalise(X: np.ndarray) -> np.ndarray:
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)


@register_component
class LinearRouter(Router):
    """A multinomial logistic gate over labels (L-BFGS, L2 ``l2``), marginalised to experts.

    ``warm_start=True``: a refit starts from the previous weights of the labels
    it already knew (new labels start at zero) and runs at most
    ``warm_max_iter`` L-BFGS iterations, so adding one expert to a 150-label
    router costs seconds instead of a fit from scratch. The loss is
    convex, so the warm start lands near the same optimum.
    """

    def __init__(self, *, l2: float = 1e-5, max_iter: int = 300, seed: int = 0, warm_start: bool = False,
                 warm_max_iter: int = 50) -> None:
        self.l2 = l2
        self.max_iter = max_iter
        self.seed = seed
        self.warm_start = warm_start
        self.warm_max_iter = warm_max_iter

    def fit(self, X: Any, y: Any, label_to_expert: dict[str, str], *, X_val: Any = None, y_val: Any = None,
            sample_weight: Any = None) -> "LinearRouter":
        self._previous = (self.labels_, self.params_) if self.warm_start and hasattr(self, "params_") else None
        try:
            super().fit(X, y, label_to_expert, X_val=X_val, y_val=y_val, sample_weight=sample_weight)
        finally:
            del self._previous
        return self

    def _fit_labels(self, X: np.ndarray, yi: np.ndarray, sample_weight: np.ndarray | None = None) -> None:
        init = None
        if self._previous is not None and self._previous[1]["W"].shape[0] == X.shape[1]:
            old_labels, old = self._previous
            where = {lab: i for i, lab in enumerate(old_labels.tolist())}
            cols = np.array([where.get(lab, -1) for lab in self.labels_.tolist()])
            known = cols >= 0
            init = {"W": np.zeros((X.shape[1], len(self.labels_)), np.float32), "b": np.zeros(len(self.labels_), np.float32)}
            init["W"][:, known] = old["W"][:, cols[known]]
            init["b"][known] = old["b"][cols[known]]
        iters = self.max_iter if init is None else min(self.max_iter, self.warm_max_iter)
        spec = HeadSpec("linear", l2=self.l2, max_iter=iters, seed=self.seed)
        self.params_ = train_head(X, yi, len(self.labels_), spec, init=init, sample_weight=sample_weight)

    def _label_scores(self, X: np.ndarray) -> np.ndarray:
        return head_logits(self.params_, X)

    def _arrays(self) -> dict[str, np.ndarray]:
        return dict(self.params_)

    def _set_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        self.params_ = {k: np.asarray(v, np.float32) for k, v in arrays.items()}


@register_component
class CentroidRouter(Router):
    """Cosine similarity to each label's mean vector; no training beyond averaging.

    ``scale`` multiplies the cosines before the softmax (then the validation
    temperature refines it).
    """

    def __init__(self, *, scale: float = 20.0) -> None:
        self.scale = scale

    def _fit_labels(self, X: np.ndarray, yi: np.ndarray, sample_weight: np.ndarray | None = None) -> None:
        if self.scale <= 0:
            raise ConfigError(f"scale must be > 0, got {self.scale!r}")
        c = np.zeros((len(self.labels_), X.shape[1]), np.float32)
        w = np.ones(len(X), np.float32) if sample_weight is None else sample_weight
        np.add.at(c, yi, _normalise(X) * w[:, None])
        self.centroids_ = _normalise(c).astype(np.float32)
        self._scan = None

    def _label_scores(self, X: np.ndarray) -> np.ndarray:
        # one contiguous (d, labels) matrix with the scale folded in: the scan is the whole cost
        if getattr(self, "_scan", None) is None:
            self._scan = np.ascontiguousarray(self.centroids_.T) * np.float32(self.scale)
        return _normalise(X) @ self._scan

    def _arrays(self) -> dict[str, np.ndarray]:
        return {"centroids": self.centroids_}

    def _set_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        self.centroids_ = np.asarray(arrays["centroids"], np.float32)
        self._scan = None


@register_component
class KNNRouter(Router):
    """The labels of the ``k`` most cosine-similar training examples vote (similarity-weighted).

    Keeps the training vectors (``memory_``); scores are the log of the smoothed
    vote shares so that the validation temperature can sharpen or flatten them.
    """

    def __init__(self, *, k: int = 10, smoothing: float = 0.01) -> None:
        self.k = k
        self.smoothing = smoothing

    def _fit_labels(self, X: np.ndarray, yi: np.ndarray, sample_weight: np.ndarray | None = None) -> None:
        # prototypes (routing summaries) are remembered like items; their weights do not change the vote
        if not isinstance(self.k, int) or self.k < 1:
            raise ConfigError(f"k must be a positive integer, got {self.k!r}")
        self.memory_ = _normalise(X).astype(np.float32)
        self.memory_labels_ = yi.astype(np.int64)

    def _label_scores(self, X: np.ndarray) -> np.ndarray:
        sims = _normalise(X) @ self.memory_.T
        k = min(self.k, sims.shape[1])
        idx = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        w = np.maximum(np.take_along_axis(sims, idx, 1), 0.0)
        votes = np.zeros((len(X), len(self.labels_)), np.float32)
        np.add.at(votes, (np.repeat(np.arange(len(X)), k), self.memory_labels_[idx].ravel()), w.ravel())
        votes = votes / np.maximum(votes.sum(1, keepdims=True), 1e-12)
        return np.log(votes + self.smoothing)

    def _arrays(self) -> dict[str, np.ndarray]:
        return {"memory": self.memory_, "memory_labels": self.memory_labels_}

    def _set_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        self.memory_ = np.asarray(arrays["memory"], np.float32)
        self.memory_labels_ = np.asarray(arrays["memory_labels"], np.int64)
