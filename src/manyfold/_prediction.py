"""What an assembly answers for one item."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["Prediction"]


@dataclass(frozen=True)
class Prediction:
    """One item's answer.

    ``reason`` says why it escalated (``low_confidence``, ``possible_out_of_scope``)
    or, when ``degraded``, what failed. ``router_scores`` are the router's
    probabilities of the top experts; ``timings_ms`` the time per stage in
    milliseconds, amortised over the batch the item came in.
    """

    label: str
    confidence: float
    experts: tuple[str, ...]
    expert_weights: tuple[float, ...]
    escalated: bool
    reason: str | None
    oos_score: float
    router_scores: dict[str, float] = field(default_factory=dict)
    timings_ms: dict[str, float] = field(default_factory=dict)
    degraded: bool = False

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["experts"] = list(self.experts)
        d["expert_weights"] = list(self.expert_weights)
        return d
