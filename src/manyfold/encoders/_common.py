"""Small helpers shared by the encoders: input checks, the text-encoder mixin and the spec-option syntax.

Spec options are written ``key=value`` pairs joined by ``,`` with each value
percent-encoded (``urllib.parse.quote(value, safe="")``), so any prefix text or
path survives a round trip through :func:`manyfold.encoders.get_encoder`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote, unquote

import numpy as np

from .._exceptions import ConfigError, InputError

__all__ = [
    "TextEncoder", "check_texts", "check_encode_args", "validate_texts", "validate_with",
    "empty_matrix", "format_options", "parse_options", "parse_bool", "parse_int",
]


def _as_texts(items: Any, where: str) -> list[str]:
    """``items`` as a list of ``str``; ``where`` starts each message (who refused the items)."""
    if isinstance(items, (str, bytes)):
        raise InputError(f"{where} expects a sequence of strings, got a single {type(items).__name__}; wrap it in a list")
    try:
        texts = list(items)
    except TypeError as exc:
        raise InputError(f"{where} expects a sequence of strings, got {type(items).__name__}") from exc
    for i, item in enumerate(texts):
        if not isinstance(item, str):
            raise InputError(f"{where}: item {i} is a {type(item).__name__}, not a str; this text encoder takes strings")
    return texts


def check_texts(items: Sequence[Any], encoder_name: str) -> list[str]:
    """Return ``items`` as a list of ``str``, or raise :class:`InputError` naming the first bad index.

    A text encoder accepts only ``str`` items; a bare string (instead of a list of
    strings) is refused too, since it would silently be encoded character by character.
    Empty texts are accepted here (``encode`` maps them to a vector); request
    validation (:func:`validate_texts`) refuses them.
    """
    return _as_texts(items, f"{encoder_name}.encode")


def check_encode_args(items: Sequence[Any], batch_size: int, encoder_name: str) -> list[str]:
    """A text encoder's ``encode`` arguments checked: ``items`` as :func:`check_texts` gives them, and
    :class:`ConfigError` for a ``batch_size`` below 1."""
    texts = check_texts(items, encoder_name)
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size!r}")
    return texts


def validate_texts(items: Any, *, max_chars: int | None = None, encoder_name: str = "this text encoder") -> list[str]:
    """The request rules of every text encoder: ``items`` as a list, or :class:`InputError` on the first bad item.

    Refused: a bare ``str``/``bytes`` instead of a list, a non-``str`` item, an
    empty or whitespace-only text, and (when ``max_chars`` is given) a text
    longer than ``max_chars`` characters. An empty list is returned as is
    (whether a request may be empty is the caller's rule).
    """
    if max_chars is not None and (isinstance(max_chars, bool) or not isinstance(max_chars, (int, np.integer))
                                  or max_chars < 1):
        raise ConfigError(f"max_chars must be a positive integer or None, got {max_chars!r}")
    if isinstance(items, (str, bytes)):
        raise InputError(f"items must be a list of texts, not a single {type(items).__name__}; wrap it: [text]")
    try:
        texts = list(items)
    except TypeError:
        raise InputError(f"items must be a sequence of texts, got {type(items).__name__}") from None
    for i, item in enumerate(texts):
        if not isinstance(item, str):
            raise InputError(f"item {i} is a {type(item).__name__}, not a str; {encoder_name} takes strings")
        if not item.strip():
            raise InputError(f"item {i} is empty or only whitespace")
        if max_chars is not None and len(item) > max_chars:
            raise InputError(f"item {i} has {len(item)} characters; the limit is {int(max_chars)}")
    return texts


def validate_with(encoder: Any, items: Any, *, max_chars: int | None = None) -> list:
    """Validate ``items`` for ``encoder``: its own ``validate`` when it has one (a wrapped or
    third-party encoder may not), else the text rules when it declares ``modality = "text"``,
    else only "a sequence, not a bare string or bytes"."""
    fn = getattr(encoder, "validate", None)
    if callable(fn):
        return list(fn(items, max_chars=max_chars))
    if getattr(encoder, "modality", None) == "text":
        return validate_texts(items, max_chars=max_chars)
    if isinstance(items, (str, bytes)):
        raise InputError(f"items must be a list of items, not a single {type(items).__name__}; wrap it in a list")
    try:
        return list(items)
    except TypeError:
        raise InputError(f"items must be a sequence, got {type(items).__name__}") from None


class TextEncoder:
    """Mixin of every text encoder: ``modality = "text"`` and the shared :meth:`validate`.

    It adds no state and touches neither ``id`` nor the vectors.
    """

    modality = "text"

    def validate(self, items: Any, *, max_chars: int | None = None) -> list:
        """``items`` as a list of non-empty strings of at most ``max_chars``, or :class:`InputError`."""
        return validate_texts(items, max_chars=max_chars)


def empty_matrix(dim: int) -> np.ndarray:
    """The ``(0, dim)`` float32 matrix returned for an empty batch."""
    return np.zeros((0, int(dim)), dtype=np.float32)


def format_options(options: Mapping[str, Any]) -> str:
    """``{"dim": 512, "prefix": "q: "}`` -> ``"dim=512,prefix=q%3A%20"`` (insertion order kept)."""
    return ",".join(f"{k}={quote(str(v), safe='')}" for k, v in options.items())


def parse_options(text: str, allowed: Sequence[str], spec: str) -> dict[str, str]:
    """Parse ``"k=v,k=v"`` (values percent-encoded) and check every key is in ``allowed``."""
    out: dict[str, str] = {}
    if not text:
        return out
    for part in text.split(","):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"bad option {part!r} in encoder spec {spec!r}; expected key=value")
        if key not in allowed:
            raise ConfigError(f"unknown option {key!r} in encoder spec {spec!r}; valid options: {', '.join(allowed) or '(none)'}")
        if key in out:
            raise ConfigError(f"option {key!r} given twice in encoder spec {spec!r}")
        out[key] = unquote(value)
    return out


def parse_bool(value: str, key: str, spec: str) -> bool:
    """``"1"/"true"/"yes"`` -> True, ``"0"/"false"/"no"`` -> False, else :class:`ConfigError`."""
    low = value.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"option {key}={value!r} in encoder spec {spec!r} is not a boolean (use true/false)")


def parse_int(value: str, key: str, spec: str) -> int:
    """Parse an integer option value, or raise :class:`ConfigError`."""
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"option {key}={value!r} in encoder spec {spec!r} is not an integer") from None
