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
    - ``max_escalation_rate``: at most this share of in-scope *validation*
      items may be sent to the generalist; the escalation thresholds are
      chosen on the validation split under this budget.
    - ``target_false_oos_rate``: the share of in-scope validation items that
      may be wrongly called out-of-scope; sets the out-of-scope thresholds.
    - ``oos_weight``: when splitting the escalation budget between "low
      confidence" and "possible out-of-scope", what one point of out-of-scope
      recall is worth against one point of in-scope accuracy.
    - ``max_chars``: longest text accepted (longer is an ``InputError``).
    - ``oos_label``: the label an out-of-scope answer carries.
    """

    top_k: int = 2
    max_escalation_rate: float = 0.13
    target_false_oos_rate: float = 0.02
    oos_weight: float = 0.1
    max_chars: int = 2000
    oos_label: str = "out_of_scope"

    def __post_init__(self) -> None:
        if not isinstance(self.top_k, int) or self.top_k < 1:
            raise ConfigError(f"top_k must be a positive integer, got {self.top_k!r}")
        for name in ("max_escalation_rate", "target_false_oos_rate", "oos_weight"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ConfigError(f"{name} must be in [0, 1], got {v!r}")
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
