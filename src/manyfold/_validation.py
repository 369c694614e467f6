"""Validation of request items: clear errors that name the bad item."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ._exceptions import InputError

__all__ = ["check_items"]


def check_items(items: Any, *, modality: str | None, max_chars: int) -> list[Any]:
    """A non-empty list of items; for text: non-empty strings of at most ``max_chars``."""
    if isinstance(items, (str, bytes)):
        raise InputError("items must be a list of items, not a single string; wrap it: [text]")
    if not isinstance(items, Sequence) and not hasattr(items, "__len__"):
        raise InputError(f"items must be a sequence, got {type(items).__name__}")
    items = list(items)
    if not items:
        raise InputError("items is empty: give at least one item")
    if modality == "text":
        for i, it in enumerate(items):
            if not isinstance(it, str):
                raise InputError(f"item {i} must be a string, got {type(it).__name__}")
            if not it.strip():
                raise InputError(f"item {i} is empty or only whitespace")
            if len(it) > max_chars:
                raise InputError(f"item {i} has {len(it)} characters; the limit is {max_chars}")
    return items
