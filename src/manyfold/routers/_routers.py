"""The routers: linear (learned), centroid (nearest label mean), kNN (nearest examples)."""

from __future__ import annotations

import numpy as np

from .._exceptions import ConfigError
from .._heads import HeadSpec, head_logits, train_head
from ._base import Router

__all__ = ["LinearRouter", "CentroidRouter", "KNNRouter"]


def _normalise(X: np.ndarray) -> np.ndarray:
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)


class LinearRouter(Router):
    """A multinomial logistic gate over labels (L-BFGS, L2 ``l2``), marginalised to experts."""

    def __init__(self, *, l2: float = 1e-5, max_iter: int = 300, seed: int = 0) -> None:
        self.l2 = l2
        self.max_iter = max_iter
        self.seed = seed

    def _fit_labels(self, X: np.ndarray, yi: np.ndarray) -> None:
        self.params_ = train_head(X, yi, len(self.labels_), HeadSpec("linear", l2=self.l2, max_iter=self.max_iter, seed=self.seed))

    def _label_scores(self, X: np.ndarray) -> np.ndarray:
        return head_logits(self.params_, X)

    def _arrays(self) -> dict[str, np.ndarray]:
        return dict(self.params_)

    def _set_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        self.params_ = {k: np.asarray(v, np.float32) for k, v in arrays.items()}


class CentroidRouter(Router):
    """Cosine similarity to each label's mean vector; no training beyond averaging.

    ``scale`` multiplies the cosines before the softmax (then the validation
    temperature refines it).
    """

    def __init__(self, *, scale: float = 20.0) -> None:
        self.scale = scale

    def _fit_labels(self, X: np.ndarray, yi: np.ndarray) -> None:
        if self.scale <= 0:
            raise ConfigError(f"scale must be > 0, got {self.scale!r}")
        c = np.zeros((len(self.labels_), X.shape[1]), np.float32)
        np.add.at(c, yi, _normalise(X))
        self.centroids_ = _normalise(c).astype(np.float32)

    def _label_scores(self, X: np.ndarray) -> np.ndarray:
        return self.scale * (_normalise(X) @ self.centroids_.T)

    def _arrays(self) -> dict[str, np.ndarray]:
        return {"centroids": self.centroids_}

    def _set_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        self.centroids_ = np.asarray(arrays["centroids"], np.float32)


class KNNRouter(Router):
    """The labels of the ``k`` most cosine-similar training examples vote (similarity-weighted).

    Keeps the training vectors (``memory_``); scores are the log of the smoothed
    vote shares so that the validation temperature can sharpen or flatten them.
    """

    def __init__(self, *, k: int = 10, smoothing: float = 0.01) -> None:
        self.k = k
        self.smoothing = smoothing

    def _fit_labels(self, X: np.ndarray, yi: np.ndarray) -> None:
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
