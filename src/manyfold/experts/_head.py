"""Small experts: a calibrated head (linear or MLP) over encoder features."""

from __future__ import annotations

import re
import time
from typing import Any

import numpy as np

from .._components import register_component
from .._estimator import BaseEstimator, check_features, check_fitted
from .._exceptions import ConfigError
from .._heads import HeadSpec, fit_temperature, head_logits, head_size, softmax, train_head
from ._card import ExpertCard

__all__ = ["HeadExpert", "LinearExpert", "MLPExpert", "check_name"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def check_name(name: Any, what: str = "expert") -> str:
    """A valid name, or a :class:`ConfigError` that says the rule.

    Expert names are any readable text of 1-64 characters (``体育`` and
    ``small talk`` included): printable, no leading or trailing space, no
    ``/`` or ``\\``, not ``.`` or ``..`` (they name files of the lazy expert
    store). Other names (assemblies: registry folders) are 1-64 of
    ``[A-Za-z0-9_.-]``, starting with a letter or digit.
    """
    if what == "expert":
        ok = (isinstance(name, str) and 1 <= len(name) <= 64 and name.isprintable() and name == name.strip()
              and "/" not in name and "\\" not in name and name not in (".", ".."))
        if not ok:
            raise ConfigError(f"invalid expert name {name!r}: use 1-64 printable characters, no leading or trailing "
                              "space, no '/' or '\\', not '.' or '..'")
        return name
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(
            f"invalid {what} name {name!r}: use 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit"
        )
    return name


@register_component
class HeadExpert(BaseEstimator):
    """A small specialist: a head over features that knows its own labels.

    Parameters are stored as given (scikit-learn contract). After ``fit``:
    ``labels_`` (its label set), ``params_`` (weights), ``temperature_``
    (calibrated on the validation data when given), ``card_`` (metadata),
    ``n_features_in_``.
    """

    def __init__(
        self,
        name: str,
        *,
        kind: str = "linear",
        l2: float = 1e-5,
        hidden: int = 256,
        max_iter: int = 300,
        seed: int = 0,
        description: str = "",
        domain: str | None = None,
    ) -> None:
        self.name = name
        self.kind = kind
        self.l2 = l2
        self.hidden = hidden
        self.max_iter = max_iter
        self.seed = seed
        self.description = description
        self.domain = domain

    # -- training ---------------------------------------------------------
    def fit(
        self,
        X: Any,
        y: Any,
        *,
        X_val: Any = None,
        y_val: Any = None,
        soft_targets: Any = None,
        labels: Any = None,
        lineage: dict[str, Any] | None = None,
    ) -> HeadExpert:
        """Fit on features ``X`` and string labels ``y``.

        ``soft_targets`` (n, len(labels)) trains on a teacher's probabilities
        instead (distillation); then ``labels`` gives their column order.
        Validation data, when given, calibrates the temperature and fills
        ``card_.metrics``.
        """
        check_name(self.name)
        spec = HeadSpec(kind=self.kind, l2=self.l2, hidden=self.hidden, max_iter=self.max_iter, seed=self.seed)
        X = check_features(X)
        y = np.asarray(y).astype(str)
        if len(y) != len(X):
            raise ConfigError(f"X has {len(X)} rows but y has {len(y)} labels")
        t0 = time.perf_counter()
        self.labels_ = np.array(sorted(set(y.tolist())) if labels is None else list(labels), dtype=str)
        if len(self.labels_) < 1:
            raise ConfigError(f"expert {self.name!r} needs at least one label")
        index = {lab: i for i, lab in enumerate(self.labels_.tolist())}
        unknown = sorted(set(y.tolist()) - set(index))
        if unknown:
            raise ConfigError(f"labels {unknown[:5]} are not in the expert's label set")
        yi = np.array([index[v] for v in y.tolist()], dtype=np.int64)
        if len(self.labels_) == 1:  # a one-label expert is always sure of its label
            self.params_ = {"W": np.zeros((X.shape[1], 1), np.float32), "b": np.zeros(1, np.float32)}
        else:
            self.params_ = train_head(X, yi, len(self.labels_), spec, soft_targets=soft_targets)
        self.n_features_in_ = X.shape[1]
        self.temperature_ = 1.0
        metrics: dict[str, float] = {"train_accuracy": float((self._logits(X).argmax(1) == yi).mean())}
        if X_val is not None and y_val is not None and len(y_val):
            Xv = check_features(X_val, self.n_features_in_, "X_val")
            yv = np.asarray(y_val).astype(str)
            keep = np.isin(yv, self.labels_)
            if keep.any():
                yvi = np.array([index[v] for v in yv[keep].tolist()])
                logits = self._logits(Xv[keep])
                self.temperature_ = fit_temperature(logits, yvi)
                metrics["val_accuracy"] = float((logits.argmax(1) == yvi).mean())
                metrics["n_val"] = int(keep.sum())
        self.card_ = ExpertCard(
            name=self.name,
            description=self.description,
            domain=self.domain,
            labels=tuple(self.labels_.tolist()),
            metrics=metrics,
            size=head_size(self.params_),
            lineage={
                "source": "distilled" if soft_targets is not None else "supervised",
                "n_train": int(len(X)),
                "head": self.kind,
                "train_seconds": round(time.perf_counter() - t0, 3),
                **(lineage or {}),
            },
        )
        return self

    # -- inference --------------------------------------------------------
    def _logits(self, X: np.ndarray) -> np.ndarray:
        return head_logits(self.params_, X)

    def predict_proba(self, X: Any) -> np.ndarray:
        """Calibrated probabilities over ``labels_`` (columns in that order)."""
        check_fitted(self, "params_")
        X = check_features(X, self.n_features_in_)
        return softmax(self._logits(X) / self.temperature_)

    def predict(self, X: Any) -> np.ndarray:
        proba = self.predict_proba(X)
        return self.labels_[proba.argmax(1)]

    # -- persistence ------------------------------------------------------
    def to_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        check_fitted(self, "params_")
        config = {
            "type": "HeadExpert",
            "params": self.get_params(),
            "labels": self.labels_.tolist(),
            "temperature": self.temperature_,
            "n_features_in": self.n_features_in_,
            "card": self.card_.to_dict(),
        }
        return config, dict(self.params_)

    @classmethod
    def from_state(cls, config: dict[str, Any], arrays: dict[str, np.ndarray]) -> HeadExpert:
        est = cls(**config["params"])
        est.labels_ = np.array(config["labels"], dtype=str)
        est.temperature_ = float(config["temperature"])
        est.n_features_in_ = int(config["n_features_in"])
        est.params_ = {k: np.asarray(v, dtype=np.float32) for k, v in arrays.items()}
        est.card_ = ExpertCard.from_dict(config["card"])
        return est


def LinearExpert(name: str, **kw: Any) -> HeadExpert:
    """A :class:`HeadExpert` with a linear (multinomial logistic) head."""
    return HeadExpert(name, kind="linear", **kw)


def MLPExpert(name: str, *, hidden: int = 256, **kw: Any) -> HeadExpert:
    """A :class:`HeadExpert` with a one-hidden-layer MLP head."""
    return HeadExpert(name, kind="mlp", hidden=hidden, **kw)
