"""Reading an unlabelled pool of items for distillation.

A pool is either

* a JSONL file (``.jsonl`` / ``.ndjson``, or any file whose first non-blank
  line starts with ``{``): one JSON object per line with the item under
  ``"text"`` or ``"item"`` (a string), or ``"items"`` (a list of strings: one
  batched request of the server's request log); or
* a plain text file: one item per line.

Blank lines are skipped. Every malformed line is a :class:`DataError` that
names the file and the line number.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .._exceptions import DataError

__all__ = ["read_pool", "POOL_FIELDS"]

#: the JSONL fields an item is read from, in order of preference
POOL_FIELDS = ("text", "item", "items")


def _is_jsonl(path: Path, lines: list[str]) -> bool:
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        return True
    if path.suffix.lower() in (".txt", ".text"):
        return False
    first = next((ln.strip() for ln in lines if ln.strip()), "")
    return first.startswith("{")


def _items_of(obj: Any, where: str) -> list[str]:
    if not isinstance(obj, dict):
        raise DataError(f"{where}: expected a JSON object with a {' / '.join(repr(f) for f in POOL_FIELDS)} field, "
                        f"got {type(obj).__name__}")
    for key in POOL_FIELDS:
        if key not in obj:
            continue
        value = obj[key]
        values = value if key == "items" else [value]
        if key == "items" and not isinstance(value, list):
            raise DataError(f"{where}: field 'items' must be a list of strings, got {type(value).__name__}")
        out = []
        for v in values:
            if not isinstance(v, str):
                raise DataError(f"{where}: field {key!r} must hold strings, got {type(v).__name__}")
            if not v.strip():
                raise DataError(f"{where}: field {key!r} holds an empty string")
            out.append(v)
        return out
    raise DataError(f"{where}: no {' / '.join(repr(f) for f in POOL_FIELDS)} field (keys: {sorted(obj)[:8]})")


def read_pool(path: str | Path, *, unique: bool = False) -> list[str]:
    """The items of the pool file ``path`` (see the module docstring for the formats).

    ``unique=True`` drops repeated items (the first occurrence is kept), e.g.
    for a request log where the same question is asked many times. An empty
    pool, an unreadable file or a bad line is a :class:`DataError`.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"pool file {str(p)!r} does not exist") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"pool file {str(p)!r} is not UTF-8 text: {exc}") from None
    except OSError as exc:
        raise DataError(f"cannot read pool file {str(p)!r}: {exc}") from None
    lines = text.splitlines()
    jsonl = _is_jsonl(p, lines)
    items: list[str] = []
    for no, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{p}:{no}"
        if jsonl:
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from None
            items.extend(_items_of(obj, where))
        else:
            items.append(line.rstrip("\r"))
    if not items:
        raise DataError(f"pool file {str(p)!r} holds no items")
    if unique:
        items = list(dict.fromkeys(items))
    return items
