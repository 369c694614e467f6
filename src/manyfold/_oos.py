"""A calibrated out-of-scope detector: logistic regression on confidence signals."""

from __future__ import annotations

from typing import Any

import numpy as np

from ._estimator import BaseEstimator, check_features, check_fitted
from ._exceptions import ConfigError
from ._heads import HeadSpec, head_logits, softmax, train_head

__all__ = ["OOSDetector"]


class OOSDetector(BaseEstimator):
    """``p(out of scope | signals)``: standardised features, class-balanced logistic regression.

    Fit it on held-out data the experts never saw (in-scope validation items
    as negatives, out-of-scope items as positives).
    """

    def __init__(self, *, l2: float = 1e-2) -> None:
        self.l2 = l2

    def fit(self, F: Any, is_oos: Any) -> OOSDetector:
        F = check_features(F, name="F")
        t = np.asarray(is_oos).astype(bool)
        if t.all() or not t.any():
            raise ConfigError("the out-of-scope detector needs both in-scope and out-of-scope examples")
        self.mean_ = F.mean(0)
        self.scale_ = np.maximum(F.std(0), 1e-6)
        Z = (F - self.mean_) / self.scale_
        w = np.where(t, 0.5 / t.sum(), 0.5 / (~t).sum()).astype(np.float32)
        self.params_ = train_head(Z, t.astype(np.int64), 2, HeadSpec("linear", l2=self.l2, max_iter=200), sample_weight=w)
        self.n_features_in_ = F.shape[1]
        return self

    def predict_proba(self, F: Any) -> np.ndarray:
        """Probability that each row is out of scope (1-d)."""
        check_fitted(self, "params_")
        F = check_features(F, self.n_features_in_, "F")
        return softmax(head_logits(self.params_, (F - self.mean_) / self.scale_))[:, 1]

    def to_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        check_fitted(self, "params_")
        return {"type": "OOSDetector", "params": self.get_params(), "n_features_in": self.n_features_in_}, {
            "mean": self.mean_.astype(np.float32),
            "scale": self.scale_.astype(np.float32),
            **self.params_,
        }

    @classmethod
    def from_state(cls, config: dict[str, Any], arrays: dict[str, np.ndarray]) -> OOSDetector:
        est = cls(**config["params"])
        est.n_features_in_ = int(config["n_features_in"])
        est.mean_, est.scale_ = arrays["mean"], arrays["scale"]
        est.params_ = {k: arrays[k] for k in ("W", "b")}
        return est
