"""The encoder protocol: items in, a float32 matrix out, with a stable ``id`` and a ``modality``."""

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

    ``modality`` names the kind of item it takes (``"text"`` for every shipped
    encoder), so a dataset of another kind is refused before any encoding.
    ``validate(items, max_chars=...)`` applies that modality's request rules
    (for text: a list of non-empty strings of at most ``max_chars``) and returns
    the items as a list, or raises :class:`~manyfold.InputError` naming the
    first bad item; ``encode`` itself only checks the item types.
    """

    @property
    def modality(self) -> str: ...

    @property
    def id(self) -> str: ...

    @property
    def spec(self) -> str: ...

    @property
    def dim(self) -> int: ...

    def validate(self, items: Sequence[Any], *, max_chars: int | None = None) -> list: ...

    def encode(self, items: Sequence[Any], *, batch_size: int = 64, show_progress: bool = False) -> np.ndarray: ...


def load_models(encoder: Any) -> int:
    """Load the model weights behind ``encoder`` now (encoders load them lazily, on the first ``encode``).

    Goes through a cache wrapper and each part of a concatenation; encoders
    without a model (hashing, pixels) have nothing to load. Returns how many
    models were loaded. A server calls it before it says it is ready, so the
    first request does not pay for the loading.
    """
    from ._cache import CachedEncoder
    from ._concat import ConcatEncoder

    if isinstance(encoder, CachedEncoder):
        return load_models(encoder.encoder)
    if isinstance(encoder, ConcatEncoder):
        return sum(load_models(e) for e in encoder.encoders)
    load = getattr(encoder, "_load", None)
    if callable(load):
        load()
        return 1
    return 0
