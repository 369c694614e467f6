"""Validation of request items and of the encoder/data pairing: clear errors that name the bad value."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ._exceptions import ConfigError, InputError

__all__ = ["check_items", "check_modality", "encoders_for_modality"]


def check_items(items: Any, *, encoder: Any = None, modality: str | None = None, max_chars: int = 2000) -> list[Any]:
    """A non-empty list of items that ``encoder`` (or, without one, ``modality``) accepts.

    First the generic rules (a non-empty sequence, not a bare string); then the
    encoder's own ``validate(items, max_chars=...)`` when it has one (for text:
    non-empty strings of at most ``max_chars``), else, when ``modality`` (given,
    or the encoder's) is ``"text"``, the same text rules written here.
    """
    if isinstance(items, (str, bytes)):
        raise InputError("items must be a list of items, not a single string; wrap it: [text]")
    if not isinstance(items, Sequence) and not hasattr(items, "__len__"):
        raise InputError(f"items must be a sequence, got {type(items).__name__}")
    items = list(items)
    if not items:
        raise InputError("items is empty: give at least one item")
    validate = getattr(encoder, "validate", None)
    if callable(validate):
        return list(validate(items, max_chars=max_chars))
    if modality is None:
        modality = getattr(encoder, "modality", None)
    if modality == "text":
        for i, it in enumerate(items):
            if not isinstance(it, str):
                raise InputError(f"item {i} must be a string, got {type(it).__name__}")
            if not it.strip():
                raise InputError(f"item {i} is empty or only whitespace")
            if len(it) > max_chars:
                raise InputError(f"item {i} has {len(it)} characters; the limit is {max_chars}")
    return items


def encoders_for_modality(modality: str) -> list[str]:
    """The named encoder specs (:func:`~manyfold.encoders.encoder_names`) that take ``modality`` items.

    Building an encoder from its name loads no model, so this is cheap.
    """
    from .encoders import encoder_names, get_encoder

    return [name for name in encoder_names() if getattr(get_encoder(name), "modality", None) == modality]


def check_modality(encoder: Any, modality: str, what: str) -> None:
    """Refuse, before any encoding, an encoder that takes another kind of item than ``what`` holds.

    ``what`` names the data in the message, e.g. ``"dataset 'mnist'"``::

        dataset 'mnist' holds image items but encoder 'minilm' takes text; valid encoders for image: (none yet)

    An encoder that declares no ``modality`` (a third-party one) is let through:
    nothing is known to refuse it on.
    """
    if not isinstance(modality, str) or not modality:
        raise ConfigError(f"modality must be a non-empty string such as 'text', got {modality!r}")
    takes = getattr(encoder, "modality", None)
    if takes is None or takes == modality:
        return
    name = getattr(encoder, "spec", None) or type(encoder).__name__
    valid = ", ".join(encoders_for_modality(modality)) or "(none yet)"
    raise ConfigError(f"{what} holds {modality} items but encoder {name!r} takes {takes}; "
                      f"valid encoders for {modality}: {valid}")
