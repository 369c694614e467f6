"""The encoder protocol: items in, a float32 matrix out, with a stable ``id``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Encoder(Protocol):
    """Anything that turns a batch of items into a ``(n, dim)`` float32 matrix.

    ``id`` must change whenever the vectors would change (model, revision,
    pooling, normalisation, prefix ...): the embedding cache is keyed by it.
    ``spec`` is what :func:`manyfold.encoders.get_encoder` takes to rebuild the
    same encoder (it is what an assembly stores on disk).
    """

    @property
    def id(self) -> str: ...

    @property
    def spec(self) -> str: ...

    @property
    def dim(self) -> int: ...

    def encode(self, items: Sequence[Any], *, batch_size: int = 64, show_progress: bool = False) -> np.ndarray: ...
