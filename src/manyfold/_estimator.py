"""Shared bits of the estimator contract (scikit-learn style).

``__init__`` only stores parameters; ``fit`` returns ``self``; learned state
ends in ``_``; ``get_params`` lists the constructor arguments. Every estimator
that can be saved implements ``to_state() -> (config: dict, arrays: dict)`` and
``from_state(config, arrays)``: JSON for the config, safetensors for arrays.
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np

from ._exceptions import ConfigError, NotFittedError

__all__ = ["BaseEstimator", "check_features", "check_fitted"]


class BaseEstimator:
    """Parameters in, learned state out (attributes ending in ``_``)."""

    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [p for p in sig.parameters if p != "self" and sig.parameters[p].kind is not inspect.Parameter.VAR_KEYWORD]

    def get_params(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self._param_names()}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"


def check_fitted(est: Any, attr: str) -> None:
    if not hasattr(est, attr):
        raise NotFittedError(f"this {type(est).__name__} is not fitted yet; call fit() first")


def check_features(X: Any, n_features: int | None = None, name: str = "X") -> np.ndarray:
    """A 2-d finite float32 matrix, with the expected number of columns."""
    X = np.asarray(X, dtype=np.float32)
    if X.ndim != 2:
        raise ConfigError(f"{name} must be a 2-d array of features, got shape {X.shape}")
    if n_features is not None and X.shape[1] != n_features:
        raise ConfigError(f"{name} has {X.shape[1]} features, but this estimator was fitted on {n_features}")
    if X.size and not np.isfinite(X).all():
        raise ConfigError(f"{name} contains NaN or infinite values")
    return X
