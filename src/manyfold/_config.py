"""Frozen configuration of an assembly (stored as JSON beside its weights)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from ._exceptions import ConfigError

__all__ = ["AssemblyConfig"]


@dataclass(frozen=True)
class AssemblyConfig:
    """How an assembly routes, escalates and validates input.

    - ``top_k``: experts consulted per item (their outputs are weighted by the
      router's renormalised probabilities).
    - ``escalation_objective``: how much to escalate, chosen on the validation
      split: ``"knee"`` (default: the least escalation within ``knee_tolerance``
      of the best accuracy the curve reaches), ``"accuracy"`` (the least
      escalation that reaches ``target_accuracy``) or ``"budget"`` (the best
      accuracy at ``max_escalation_rate``). See :mod:`manyfold._policy`.
    - ``max_escalation_rate``: at most this share of in-scope *validation*
      items may be sent to the generalist, whatever the objective (1.0: no cap).
    - ``target_false_oos_rate``: the share of in-scope validation items that
      may be wrongly called out-of-scope; sets the out-of-scope thresholds.
    - ``oos_weight``: when splitting the escalation budget between "low
      confidence" and "possible out-of-scope", what one point of out-of-scope
      recall is worth against one point of in-scope accuracy.
    - ``oos_calibration``: where out-of-scope detection learns from:
      ``"examples"`` (the data's out-of-scope items), ``"held_out_labels"``
      (labels held out in folds stand in for unknowns) or ``"auto"``.
    - ``oos_signal_scaling``: how the out-of-scope detectors read their
      signals: ``"known_rank"`` (each signal's rank among the same model's
      known validation items, so that what is learnt from held-out-label
      proxies carries over to experts unlike them), ``"none"`` (raw) or
      ``"auto"`` (ranks with held-out labels, raw with out-of-scope examples).
    - ``max_chars``: longest text accepted (longer is an ``InputError``).
    - ``oos_label``: the label an out-of-scope answer carries.
    """

    top_k: int = 2
    escalation_objective: str = "knee"
    max_escalation_rate: float = 1.0
    target_accuracy: float | None = None
    knee_tolerance: float = 0.005
    target_false_oos_rate: float = 0.02
    oos_weight: float = 0.1
    oos_calibration: str = "auto"
    oos_signal_scaling: str = "auto"
    max_chars: int = 2000
    oos_label: str = "out_of_scope"

    def __post_init__(self) -> None:
        if not isinstance(self.top_k, int) or self.top_k < 1:
            raise ConfigError(f"top_k must be a positive integer, got {self.top_k!r}")
        for name in ("max_escalation_rate", "target_false_oos_rate", "oos_weight"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ConfigError(f"{name} must be in [0, 1], got {v!r}")
        from ._policy import OBJECTIVES, OOS_CALIBRATIONS, SIGNAL_SCALINGS

        if self.escalation_objective not in OBJECTIVES:
            raise ConfigError(f"unknown escalation_objective {self.escalation_objective!r}; valid choices: {', '.join(OBJECTIVES)}")
        if self.oos_calibration not in OOS_CALIBRATIONS:
            raise ConfigError(f"unknown oos_calibration {self.oos_calibration!r}; valid choices: {', '.join(OOS_CALIBRATIONS)}")
        if self.oos_signal_scaling not in SIGNAL_SCALINGS:
            raise ConfigError(f"unknown oos_signal_scaling {self.oos_signal_scaling!r}; "
                              f"valid choices: {', '.join(SIGNAL_SCALINGS)}")
        if self.target_accuracy is not None and not 0.0 <= self.target_accuracy <= 1.0:
            raise ConfigError(f"target_accuracy must be in [0, 1], got {self.target_accuracy!r}")
        if self.escalation_objective == "accuracy" and self.target_accuracy is None:
            raise ConfigError("escalation_objective='accuracy' needs target_accuracy (e.g. 0.95)")
        if not 0.0 <= self.knee_tolerance <= 1.0:
            raise ConfigError(f"knee_tolerance must be in [0, 1], got {self.knee_tolerance!r}")
        if not isinstance(self.max_chars, int) or self.max_chars < 1:
            raise ConfigError(f"max_chars must be a positive integer, got {self.max_chars!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AssemblyConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown assembly config keys {unknown}; valid keys: {sorted(known)}")
        return cls(**d)
