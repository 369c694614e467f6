"""Experts on disk, loaded on demand: an LRU of loaded experts bounded by count and bytes.

With thousands of experts, keeping every head in memory is wasteful when
traffic concentrates on a few. :class:`LazyExpertStore` keeps each expert as
one safetensors file (weights plus its JSON config in the file's metadata) and
holds at most ``max_experts`` of them (and at most ``max_bytes`` of weights)
in memory, evicting the least recently used one first. ``hits``, ``misses``
and ``evictions`` count what happened.

>>> store = LazyExpertStore("/tmp/experts", max_experts=100)   # doctest: +SKIP
>>> store.add(expert)                                            # doctest: +SKIP
>>> store.get(expert.name).predict_proba(X)                      # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ._exceptions import ConfigError, ExpertNotFoundError
from ._io import load_arrays, save_arrays

__all__ = ["LazyExpertStore", "expert_nbytes"]

_META_KEY = "manyfold_expert_config"


def expert_nbytes(expert: Any) -> int:
    """Bytes of an expert's weight arrays (what a loaded expert keeps resident)."""
    _, arrays = expert.to_state()
    return int(sum(np.asarray(a).nbytes for a in arrays.values()))


def _default_loader(config: dict[str, Any], arrays: dict[str, np.ndarray]) -> Any:
    """Any registered expert type (a head, or a whole model such as a CNN)."""
    from ._components import component_class

    return component_class(config.get("type"), "a LazyExpertStore file").from_state(config, arrays)


class LazyExpertStore:
    """Experts saved under ``root`` (``<name>.safetensors``) and loaded lazily into a bounded LRU.

    Parameters
    ----------
    root: directory of the expert files (created if missing).
    max_experts: most experts held in memory at once (``None``: no count bound).
    max_bytes: most weight bytes held in memory at once (``None``: no byte bound).
        An expert bigger than ``max_bytes`` on its own is still served, then
        evicted on the next load.
    loader: ``loader(config, arrays) -> expert``; default rebuilds a
        :class:`~manyfold.experts.HeadExpert`.

    ``get(name)`` returns the expert, loading it (a *miss*) or not (a *hit*);
    loading evicts least recently used experts until both bounds hold.
    """

    def __init__(self, root: str | os.PathLike[str], *, max_experts: int | None = None, max_bytes: int | None = None,
                 loader: Callable[[dict[str, Any], dict[str, np.ndarray]], Any] | None = None) -> None:
        if max_experts is not None and (not isinstance(max_experts, int) or max_experts < 1):
            raise ConfigError(f"max_experts must be a positive int or None, got {max_experts!r}")
        if max_bytes is not None and (not isinstance(max_bytes, int) or max_bytes < 1):
            raise ConfigError(f"max_bytes must be a positive int or None, got {max_bytes!r}")
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.max_experts = max_experts
        self.max_bytes = max_bytes
        self.loader = loader or _default_loader
        self._loaded: OrderedDict[str, tuple[Any, int]] = OrderedDict()
        self._names = {p.name[: -len(".safetensors")] for p in self.root.glob("*.safetensors")}
        self.loaded_bytes = 0
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    # -- contents ---------------------------------------------------------------
    def path(self, name: str) -> Path:
        return self.root / f"{name}.safetensors"

    def add(self, expert: Any) -> None:
        """Write a fitted expert to disk (replacing a stored one of that name; a loaded copy is dropped)."""
        from .experts import check_name

        name = check_name(expert.name)
        config, arrays = expert.to_state()
        save_arrays(self.path(name), arrays, metadata={_META_KEY: json.dumps(config)})
        self._names.add(name)
        self._drop(name)

    def __contains__(self, name: object) -> bool:
        return name in self._names

    def __len__(self) -> int:
        return len(self._names)

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._names))

    @property
    def loaded(self) -> list[str]:
        """Names of the experts in memory, least recently used first."""
        return list(self._loaded)

    # -- access -------------------------------------------------------------------
    def get(self, name: str) -> Any:
        """The expert ``name``, from memory (hit) or from disk (miss, may evict)."""
        entry = self._loaded.get(name)
        if entry is not None:
            self._loaded.move_to_end(name)
            self.hits += 1
            return entry[0]
        if name not in self._names:
            raise ExpertNotFoundError(name, sorted(self._names))
        self.misses += 1
        expert, size = self._read(name)
        self._loaded[name] = (expert, size)
        self.loaded_bytes += size
        self._evict(keep=name)
        return expert

    def _read(self, name: str) -> tuple[Any, int]:
        from safetensors import safe_open

        path = self.path(name)
        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
        if _META_KEY not in meta:
            raise ConfigError(f"{str(path)!r} has no manyfold expert config in its metadata")
        arrays = load_arrays(path)
        return self.loader(json.loads(meta[_META_KEY]), arrays), int(sum(a.nbytes for a in arrays.values()))

    def _over(self) -> bool:
        return ((self.max_experts is not None and len(self._loaded) > self.max_experts)
                or (self.max_bytes is not None and self.loaded_bytes > self.max_bytes))

    def _evict(self, keep: str) -> None:
        while self._over() and len(self._loaded) > 1:
            oldest = next(iter(self._loaded))
            if oldest == keep:  # pragma: no cover - keep is always the most recent
                break
            self._drop(oldest)
            self.evictions += 1

    def _drop(self, name: str) -> None:
        entry = self._loaded.pop(name, None)
        if entry is not None:
            self.loaded_bytes -= entry[1]

    def clear(self) -> None:
        """Unload every expert (the files stay); counters are kept."""
        self._loaded.clear()
        self.loaded_bytes = 0

    def stats(self) -> dict[str, int]:
        return {"stored": len(self._names), "loaded": len(self._loaded), "loaded_bytes": self.loaded_bytes,
                "hits": self.hits, "misses": self.misses, "evictions": self.evictions}

    def __repr__(self) -> str:
        return (f"LazyExpertStore({str(self.root)!r}, stored={len(self._names)}, loaded={len(self._loaded)}, "
                f"max_experts={self.max_experts}, max_bytes={self.max_bytes})")
