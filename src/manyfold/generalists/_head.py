"""The big generalist as a flat head over every label on the biggest encoder."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .._components import register_component
from .._estimator import BaseEstimator, check_features, check_fitted
from .._exceptions import ConfigError
from .._features import confidence_features, label_centroids
from .._heads import HeadSpec, fit_temperature, head_logits, head_size, softmax, train_head

__all__ = ["HeadGeneralist", "resolve_encoder"]


def resolve_encoder(encoder: Any) -> Any:
    """An encoder object, or build one from its spec string."""
    if isinstance(encoder, str):
        from ..encoders import get_encoder

        return get_encoder(encoder)
    for attr in ("encode", "id", "spec", "dim"):
        if not hasattr(encoder, attr):
            raise ConfigError(f"encoder {encoder!r} is not an Encoder: it has no {attr!r}")
    return encoder


@register_component
class HeadGeneralist(BaseEstimator):
    """A monolith: one head over all labels (out-of-scope included when trained on it).

    ``encoder`` is an encoder object or spec (default ``"mpnet"``, the biggest
    shipped model). ``fit`` takes raw items, or precomputed ``features``.
    ``signals(items)`` returns its probabilities and the confidence features the
    assembly's second-stage out-of-scope detector uses.
    """

    def __init__(self, encoder: Any = "mpnet", *, kind: str = "linear", l2: float = 1e-5, hidden: int = 512,
                 max_iter: int = 300, seed: int = 0, oos_label: str = "out_of_scope") -> None:
        self.encoder = encoder
        self.oos_label = oos_label
        self.kind = kind
        self.l2 = l2
        self.hidden = hidden
        self.max_iter = max_iter
        self.seed = seed

    @property
    def encoder_(self) -> Any:
        if not hasattr(self, "_encoder"):
            self._encoder = resolve_encoder(self.encoder)
        return self._encoder

    def encode(self, items: Sequence[Any], *, show_progress: bool = False) -> np.ndarray:
        return self.encoder_.encode(items, show_progress=show_progress)

    def fit(self, items: Any = None, y: Any = None, *, features: Any = None, features_val: Any = None,
            items_val: Any = None, y_val: Any = None, show_progress: bool = False) -> HeadGeneralist:
        X = check_features(features if features is not None else self.encode(items, show_progress=show_progress))
        y = np.asarray(y).astype(str)
        if len(y) != len(X):
            raise ConfigError(f"got {len(X)} items but {len(y)} labels")
        self.labels_ = np.array(sorted(set(y.tolist())), dtype=str)
        index = {lab: i for i, lab in enumerate(self.labels_.tolist())}
        yi = np.array([index[v] for v in y.tolist()], dtype=np.int64)
        spec = HeadSpec(kind=self.kind, l2=self.l2, hidden=self.hidden, max_iter=self.max_iter, seed=self.seed)
        self.params_ = train_head(X, yi, len(self.labels_), spec)
        self.centroids_ = label_centroids(X, yi, len(self.labels_))
        self.n_features_in_ = X.shape[1]
        self.encoder_id_ = self.encoder_.id
        self.encoder_spec_ = self.encoder_.spec
        self.temperature_ = 1.0
        if y_val is not None:
            Xv = check_features(features_val if features_val is not None else self.encode(items_val), X.shape[1])
            yv = np.asarray(y_val).astype(str)
            keep = np.isin(yv, self.labels_)
            self.temperature_ = fit_temperature(head_logits(self.params_, Xv[keep]), np.array([index[v] for v in yv[keep]]))
        self.size_ = head_size(self.params_)
        return self

    def predict_proba_features(self, X: np.ndarray) -> np.ndarray:
        check_fitted(self, "params_")
        X = check_features(X, self.n_features_in_)
        return softmax(head_logits(self.params_, X) / self.temperature_)

    def predict_proba(self, items: Sequence[Any]) -> np.ndarray:
        return self.predict_proba_features(self.encode(items))

    def predict(self, items: Sequence[Any]) -> np.ndarray:
        return self.labels_[self.predict_proba(items).argmax(1)]

    def signals_features(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities, and per row: in-scope confidence features plus ``log p(out_of_scope)``."""
        proba = self.predict_proba_features(X)
        ins = self.labels_ != self.oos_label
        p_in = proba[:, ins] / np.maximum(proba[:, ins].sum(1, keepdims=True), 1e-12)
        p_oos = proba[:, ~ins].sum(1, keepdims=True)
        feats = np.concatenate([confidence_features(p_in, X, self.centroids_[ins]), np.log(np.clip(p_oos, 1e-9, 1))], 1)
        return proba, feats.astype(np.float32)

    def signals(self, items: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
        """``(proba over labels_, confidence features)`` for a batch of items."""
        return self.signals_features(self.encode(items))

    def to_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        check_fitted(self, "params_")
        params = self.get_params()
        params["encoder"] = self.encoder_spec_
        config = {"type": "HeadGeneralist", "params": params, "labels": self.labels_.tolist(),
                  "temperature": self.temperature_, "n_features_in": self.n_features_in_,
                  "encoder_id": self.encoder_id_, "size": self.size_}
        return config, {**self.params_, "centroids": self.centroids_}

    @classmethod
    def from_state(cls, config: dict[str, Any], arrays: dict[str, np.ndarray]) -> HeadGeneralist:
        est = cls(**config["params"])
        est.labels_ = np.array(config["labels"], dtype=str)
        est.temperature_ = float(config["temperature"])
        est.n_features_in_ = int(config["n_features_in"])
        est.encoder_id_ = config["encoder_id"]
        est.encoder_spec_ = config["params"]["encoder"]
        est.size_ = int(config["size"])
        est.centroids_ = arrays["centroids"]
        est.params_ = {k: v for k, v in arrays.items() if k != "centroids"}
        return est
