"""Common machinery of routers: label-aware training, marginalisation, top-k."""

from __future__ import annotations

from typing import Any

import numpy as np

from .._estimator import BaseEstimator, check_features, check_fitted
from .._exceptions import ConfigError
from .._heads import fit_temperature

__all__ = ["Router", "top_k"]


def top_k(proba: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (n, k) of the k most probable experts, best first, and their renormalised weights."""
    k = max(1, min(int(k), proba.shape[1]))
    if k == proba.shape[1]:
        idx = np.argsort(-proba, axis=1)
    else:
        part = np.argpartition(-proba, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(proba, part, 1), axis=1)
        idx = np.take_along_axis(part, order, 1)
    w = np.take_along_axis(proba, idx, 1)
    w = w / np.maximum(w.sum(1, keepdims=True), 1e-12)
    return idx, w


class Router(BaseEstimator):
    """Base class: learns ``p(expert | x)``.

    Routers are *label-aware*: they are trained on the fine labels and the
    label scores are summed into expert scores through the label -> expert map
    (a mixture-of-experts gate that knows what each expert knows). Scores are
    calibrated with a temperature fitted on a validation split.

    Subclasses implement ``_fit_labels(X, yi, sample_weight)`` and
    ``_label_scores(X)`` (logits over ``labels_``). ``sample_weight`` lets a
    router learn from weighted prototypes (routing summaries of experts whose
    training data stayed with their owners) instead of items.

    After ``fit``: ``experts_`` (names, column order of ``predict_proba``),
    ``labels_``, ``label_expert_`` (index of each label's expert),
    ``temperature_``, ``n_features_in_``.
    """

    def fit(self, X: Any, y: Any, label_to_expert: dict[str, str], *, X_val: Any = None, y_val: Any = None,
            sample_weight: Any = None) -> Router:
        X = check_features(X)
        y = np.asarray(y).astype(str)
        if len(y) != len(X):
            raise ConfigError(f"X has {len(X)} rows but y has {len(y)} labels")
        if sample_weight is not None:
            sample_weight = np.asarray(sample_weight, np.float32).reshape(-1)
            if len(sample_weight) != len(X) or not np.isfinite(sample_weight).all() or (sample_weight < 0).any():
                raise ConfigError(f"sample_weight must be {len(X)} finite non-negative numbers")
        missing = sorted(set(y.tolist()) - set(label_to_expert))
        if missing:
            raise ConfigError(f"labels {missing[:5]} have no expert in label_to_expert")
        self.labels_ = np.array(sorted(set(y.tolist())), dtype=str)
        self.experts_ = np.array(sorted({label_to_expert[lab] for lab in self.labels_.tolist()}), dtype=str)
        eidx = {e: i for i, e in enumerate(self.experts_.tolist())}
        self.label_expert_ = np.array([eidx[label_to_expert[lab]] for lab in self.labels_.tolist()], dtype=np.int64)
        self.n_features_in_ = X.shape[1]
        lidx = {lab: i for i, lab in enumerate(self.labels_.tolist())}
        self.temperature_ = 1.0
        self._fit_labels(X, np.array([lidx[v] for v in y.tolist()], dtype=np.int64), sample_weight)
        if X_val is not None and y_val is not None:
            self.calibrate(X_val, y_val)
        return self

    def calibrate(self, X_val: Any, y_val: Any) -> Router:
        """Fit the temperature of the label scores on held-out in-scope data."""
        check_fitted(self, "labels_")
        Xv = check_features(X_val, self.n_features_in_, "X_val")
        yv = np.asarray(y_val).astype(str)
        keep = np.isin(yv, self.labels_)
        if keep.sum() >= 2:
            lidx = {lab: i for i, lab in enumerate(self.labels_.tolist())}
            self.temperature_ = fit_temperature(self._label_scores(Xv[keep]), np.array([lidx[v] for v in yv[keep]]))
        return self

    def label_proba(self, X: Any) -> np.ndarray:
        """Calibrated ``p(label | x)`` over ``labels_``."""
        check_fitted(self, "labels_")
        X = check_features(X, self.n_features_in_)
        z = self._label_scores(X) / self.temperature_
        z -= z.max(1, keepdims=True)
        np.exp(z, out=z)
        z /= z.sum(1, keepdims=True)
        return z

    def predict_proba(self, X: Any) -> np.ndarray:
        """``p(expert | x)`` over ``experts_``: label probabilities summed per expert."""
        return self._marginalise(self.label_proba(X))

    def _marginalise(self, pl: np.ndarray) -> np.ndarray:
        g = getattr(self, "_groups", None)
        if g is None or g[0] is not self.label_expert_:
            le = self.label_expert_
            if len(le) == len(self.experts_) and np.array_equal(le, np.arange(len(le))):
                g = (le, None, None)  # one label per expert, same order: nothing to sum
            else:  # label columns grouped by expert, summed by one reduceat over contiguous runs
                order = np.argsort(le, kind="stable")
                g = (le, order, np.flatnonzero(np.r_[True, np.diff(le[order]) != 0]))
            self._groups = g
        if g[1] is None:
            return pl
        return np.add.reduceat(pl[:, g[1]], g[2], axis=1)

    def predict(self, X: Any) -> np.ndarray:
        proba = self.predict_proba(X)
        return self.experts_[proba.argmax(1)]

    def route(self, X: Any, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Top-k expert indices and renormalised weights per row."""
        return top_k(self.predict_proba(X), k)

    # -- persistence ----------------------------------------------------------
    def to_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        check_fitted(self, "labels_")
        config = {
            "type": type(self).__name__,
            "params": self.get_params(),
            "labels": self.labels_.tolist(),
            "experts": self.experts_.tolist(),
            "label_expert": self.label_expert_.tolist(),
            "temperature": self.temperature_,
            "n_features_in": self.n_features_in_,
        }
        return config, self._arrays()

    @classmethod
    def from_state(cls, config: dict[str, Any], arrays: dict[str, np.ndarray]) -> Router:
        est = cls(**config["params"])
        est.labels_ = np.array(config["labels"], dtype=str)
        est.experts_ = np.array(config["experts"], dtype=str)
        est.label_expert_ = np.array(config["label_expert"], dtype=np.int64)
        est.temperature_ = float(config["temperature"])
        est.n_features_in_ = int(config["n_features_in"])
        est._set_arrays(arrays)
        return est

    # subclass hooks
    def _fit_labels(self, X: np.ndarray, yi: np.ndarray, sample_weight: np.ndarray | None) -> None:  # pragma: no cover
        raise NotImplementedError

    def _label_scores(self, X: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _arrays(self) -> dict[str, np.ndarray]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _set_arrays(self, arrays: dict[str, np.ndarray]) -> None:  # pragma: no cover - abstract
        raise NotImplementedError
