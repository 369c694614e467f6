"""The request log: one JSON line per answered ``/v1/predict`` request, a ready distillation pool.

Each line is ``{"time", "version", "items", "labels", "escalated"}``;
:func:`manyfold.flywheel.read_pool` reads its ``"items"``, so
``manyfold distill NAME --pool requests.jsonl`` turns yesterday's traffic into
today's training data. Lines are appended whole (one ``write`` under a lock,
flushed), so a crash loses at most the line being written, never an earlier one.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from pathlib import Path
from typing import Any

from .._exceptions import ConfigError

__all__ = ["RequestLog"]


class RequestLog:
    """Appends answered requests to a JSONL file (created with its folder if missing)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._f = open(self.path, "a", encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot open the request log {str(self.path)!r}: {exc}") from exc
        self._lock = threading.Lock()
        self.lines = 0

    def write(self, items: list[str], predictions: list[dict[str, Any]], version: int | None) -> None:
        row = {"time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds"), "version": version,
               "items": items, "labels": [p["label"] for p in predictions],
               "escalated": [bool(p["escalated"]) for p in predictions]}
        line = json.dumps(row, ensure_ascii=False) + "\n"
        with self._lock:
            self._f.write(line)
            self._f.flush()
            self.lines += 1

    def close(self) -> None:
        with self._lock:
            self._f.close()
