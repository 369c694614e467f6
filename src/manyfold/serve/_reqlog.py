"""The request log: one JSON line per answered ``/v1/predict`` request, a ready distillation pool.

Each line is ``{"time", "version", "items", "labels", "escalated"}``;
:func:`manyfold.flywheel.read_pool` reads its ``"items"``, so
``manyfold distill NAME --pool requests.jsonl`` turns yesterday's traffic into
today's training data. Lines are appended whole (one ``write`` under a lock,
flushed), so a crash loses at most the line being written, never an earlier one.

Images are never written, neither their bytes nor their pixels: an image
request's line has ``"images"`` instead of ``"items"``, one
``{"sha256", "width", "height", "mode", ...}`` per image (the sha256 of the
file as sent, so a kept copy can be matched to it).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import threading
from pathlib import Path
from typing import Any

import numpy as np

from .._exceptions import ConfigError

__all__ = ["RequestLog", "describe_image"]


def describe_image(item: Any) -> dict[str, Any]:
    """What the log keeps of an image item given as pixels: sha256 of its shape and bytes, width, height, mode."""
    arr = np.ascontiguousarray(np.asarray(item))
    h = hashlib.sha256(f"{arr.dtype.str}{arr.shape}".encode())
    h.update(arr.tobytes())
    mode = "L" if arr.ndim == 2 else "RGB" if arr.ndim == 3 and arr.shape[2] == 3 else f"shape{list(arr.shape)}"
    return {"sha256": h.hexdigest(), "width": int(arr.shape[1]) if arr.ndim >= 2 else None,
            "height": int(arr.shape[0]) if arr.ndim >= 1 else None, "mode": mode}


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

    def write(self, items: list[Any], predictions: list[dict[str, Any]], version: int | None,
              images: list[dict[str, Any]] | None = None) -> None:
        """Append one answered request. ``images``: what to record of each image item (see the module
        docstring); without it, image items (arrays) are recorded by :func:`describe_image` of their pixels."""
        row: dict[str, Any] = {"time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds"),
                               "version": version}
        if images is not None:
            row["images"] = images
        elif all(isinstance(it, str) for it in items):
            row["items"] = items
        else:
            row["images"] = [describe_image(it) for it in items]
        row["labels"] = [p["label"] for p in predictions]
        row["escalated"] = [bool(p["escalated"]) for p in predictions]
        line = json.dumps(row, ensure_ascii=False) + "\n"
        with self._lock:
            self._f.write(line)
            self._f.flush()
            self.lines += 1

    def close(self) -> None:
        with self._lock:
            self._f.close()
