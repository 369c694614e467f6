"""The request log: one JSON line per answered ``/v1/predict`` request, a ready distillation pool.

Each line is ``{"time", "version", "items", "labels", "escalated"}``;
:func:`manyfold.flywheel.read_pool` reads its ``"items"``, so
``manyfold distill NAME --pool requests.jsonl`` turns yesterday's traffic into
today's training data. Lines are appended whole (one ``write`` under a lock,
flushed), so a crash loses at most the line being written, never an earlier one.

The log holds what users send: it is created ``0600`` (owner only; an existing
file is narrowed to ``0600``, a folder it creates is ``0700``), and it is
rotated by size: a line that would take the file past ``max_bytes`` first
renames ``FILE`` to ``FILE.1`` (``FILE.1`` to ``FILE.2``, ...), deleting the
oldest beyond ``backups``. So at most ``(backups + 1) * max_bytes`` of traffic
is kept, the newest in ``FILE``; ``backups=0`` keeps only the current file.

Images are never written, neither their bytes nor their pixels: an image
request's line has ``"images"`` instead of ``"items"``, one
``{"sha256", "width", "height", "mode", ...}`` per image (the sha256 of the
file as sent, so a kept copy can be matched to it).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
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
    """Appends answered requests to a JSONL file (created 0600 with its folder if missing; rotated by size)."""

    def __init__(self, path: str | Path, max_bytes: int = 64 << 20, backups: int = 4) -> None:
        self.path = Path(path)
        self.max_bytes, self.backups = max_bytes, backups
        try:
            if not self.path.parent.exists():
                self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._f = self._open()
        except OSError as exc:
            raise ConfigError(f"cannot open the request log {str(self.path)!r}: {exc}") from exc
        self._lock = threading.Lock()
        self.lines = 0

    def _open(self) -> Any:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.fchmod(fd, 0o600)  # an existing file made by someone else's umask: owner only from now on
        except OSError:
            os.close(fd)
            raise
        f = os.fdopen(fd, "a", encoding="utf-8")
        self._size = os.fstat(fd).st_size
        return f

    def _rotate(self) -> None:
        """FILE -> FILE.1 -> ... -> FILE.<backups>; the oldest is deleted; a new FILE is opened."""
        self._f.close()
        if self.backups == 0:
            self.path.unlink(missing_ok=True)
        else:
            Path(f"{self.path}.{self.backups}").unlink(missing_ok=True)
            for i in range(self.backups - 1, 0, -1):
                src = Path(f"{self.path}.{i}")
                if src.exists():
                    os.replace(src, f"{self.path}.{i + 1}")
            os.replace(self.path, f"{self.path}.1")
        self._f = self._open()

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
        size = len(line.encode("utf-8"))
        with self._lock:
            if self._size and self._size + size > self.max_bytes:
                self._rotate()
            self._f.write(line)
            self._f.flush()
            self._size += size
            self.lines += 1

    def close(self) -> None:
        with self._lock:
            self._f.close()
