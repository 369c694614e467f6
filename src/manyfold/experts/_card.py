"""The metadata every expert carries: who it is, what it knows, how good, where from."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class ExpertCard:
    """An expert's identity card (stored as JSON beside its weights).

    ``lineage`` says where the expert came from: ``{"source": "supervised" |
    "distilled", "teacher": ..., "n_train": ..., "encoder": ..., "created": ...}``.
    """

    name: str
    description: str = ""
    domain: str | None = None
    labels: tuple[str, ...] = ()
    metrics: dict[str, float] = field(default_factory=dict)
    size: int = 0
    lineage: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["labels"] = list(self.labels)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ExpertCard:
        d = dict(d)
        d["labels"] = tuple(d.get("labels", ()))
        return cls(**d)
