"""Small helpers shared by the encoders: input checks and the spec-option syntax.

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

__all__ = ["check_texts", "empty_matrix", "format_options", "parse_options", "parse_bool", "parse_int"]


def check_texts(items: Sequence[Any], encoder_name: str) -> list[str]:
    """Return ``items`` as a list of ``str``, or raise :class:`InputError` naming the first bad index.

    A text encoder accepts only ``str`` items; a bare string (instead of a list of
    strings) is refused too, since it would silently be encoded character by character.
    """
    if isinstance(items, (str, bytes)):
        raise InputError(f"{encoder_name}.encode expects a sequence of strings, got a single {type(items).__name__}; wrap it in a list")
    try:
        texts = list(items)
    except TypeError as exc:
        raise InputError(f"{encoder_name}.encode expects a sequence of strings, got {type(items).__name__}") from exc
    for i, item in enumerate(texts):
        if not isinstance(item, str):
            raise InputError(f"{encoder_name}.encode: item {i} is a {type(item).__name__}, not a str; text encoders take strings only")
    return texts


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
