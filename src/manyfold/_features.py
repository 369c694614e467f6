"""Confidence and out-of-scope signals computed from a stage's outputs."""

from __future__ import annotations

import numpy as np

__all__ = ["normalise_rows", "label_centroids", "confidence_features"]


def normalise_rows(X: np.ndarray) -> np.ndarray:
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)


def label_centroids(X: np.ndarray, yi: np.ndarray, n_labels: int) -> np.ndarray:
    """Unit-norm mean of the unit-norm vectors of each label."""
    c = np.zeros((n_labels, X.shape[1]), np.float32)
    np.add.at(c, yi, normalise_rows(np.asarray(X, np.float32)))
    return normalise_rows(c).astype(np.float32)


def confidence_features(proba: np.ndarray, X: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Per row: log max probability, entropy, best and second-best centroid cosine.

    These are the classic out-of-scope signals (max-softmax, entropy, distance
    to the known classes); a small calibrated model combines them.
    """
    p = np.clip(proba, 1e-12, 1.0)
    sims = normalise_rows(np.asarray(X, np.float32)) @ centroids.T
    top2 = -np.partition(-sims, 1, axis=1)[:, :2] if sims.shape[1] > 1 else np.repeat(sims, 2, axis=1)
    return np.stack(
        [np.log(p.max(1)), -(p * np.log(p)).sum(1), top2.max(1), top2.min(1)],
        axis=1,
    ).astype(np.float32)
