"""Admin operations: loading, hot-swapping and reconfiguring the served assembly.

Every operation builds the new assembly off to the side (in a thread) and
then swaps it in with :meth:`Engine.swap`; the old one keeps answering until
then and finishes the batches it started. One operation runs at a time (a
second one gets :class:`BusyError`, served as 409).
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
from collections import Counter
from typing import Any

import numpy as np

from .._exceptions import ConfigError, ManyfoldError
from ._config import ServeConfig
from ._engine import Engine

__all__ = ["Controller", "BusyError", "NoRegistryError"]

log = logging.getLogger("manyfold.serve")


class BusyError(ManyfoldError, RuntimeError):
    """Another reload or reconfiguration is running."""


class NoRegistryError(ManyfoldError, RuntimeError):
    """The operation needs something this server was not configured with (a registry name, a dataset)."""


def _clone(asm: Any) -> Any:
    """A copy that shares the encoder, experts and generalist but owns its router and policy (refits touch only those)."""
    new = copy.copy(asm)
    new.router = copy.deepcopy(asm.router)
    new.experts = list(asm.experts)
    new.counters = Counter()
    new.policy_ = asm.policy_  # a refit installs a new policy object; this one is never changed in place
    return new


class Controller:
    """Loads, reloads and reconfigures the assembly behind ``engine``; ``state`` is shown by ``/readyz``."""

    def __init__(self, config: ServeConfig, engine: Engine) -> None:
        self.config = config
        self.engine = engine
        self.metrics = engine.metrics
        self.state: dict[str, Any] = {"state": "idle", "error": None}
        self._lock = asyncio.Lock()
        self._dataset: Any = None
        self._dataset_key: str | None = None
        self._tasks: set[asyncio.Task] = set()

    def registry(self) -> Any:
        from .._registry import Registry

        return Registry(self.config.registry_root)

    # -- loading ------------------------------------------------------------------
    def _load(self, version: int | None) -> tuple[Any, int]:
        name = self.config.registry_name
        if name is None:
            raise NoRegistryError("this server serves an Assembly object with no registry name (ServeConfig.name)")
        asm = self.registry().load(name, version, cache=self.config.embedding_cache,
                                   trust_remote=self.config.trust_remote)
        if getattr(asm, "remote_", None):
            log.warning("%s v%s loaded with trust_remote: it uses %s", name, asm.manifest_["version"], "; ".join(asm.remote_))
        _load_models(asm)
        return asm, int(asm.manifest_["version"])

    async def start(self) -> None:
        """Serve the configured assembly: at once for an object, in the background for a registry name."""
        if not isinstance(self.config.assembly, str):
            if not self.engine.ready:
                self.engine.swap(self.config.assembly, self.config.version)
            return
        self.spawn(self.reload(self.config.version))

    def spawn(self, coro: Any) -> asyncio.Task:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(lambda t: t.cancelled() or t.exception())  # errors are in self.state and the log
        return task

    async def stop(self) -> None:
        for t in list(self._tasks):
            t.cancel()

    async def _run(self, what: str, fn: Any, *args: Any) -> tuple[Any, int | None]:
        if self._lock.locked():
            raise BusyError(f"another reload or expert change is running ({self.state.get('what')}); retry when it ends")
        async with self._lock:
            self.state = {"state": "loading", "what": what, "error": None}
            try:
                asm, version = await asyncio.to_thread(fn, *args)
            except Exception as exc:
                self.metrics.reloads.labels("failed").inc()
                self.state = {"state": "failed", "what": what, "error": f"{type(exc).__name__}: {exc}"}
                log.error("%s failed: %s: %s (still serving version %s)", what, type(exc).__name__, exc, self.engine.version)
                raise
            self.engine.swap(asm, version)
            self.metrics.reloads.labels("ok").inc()
            self.state = {"state": "idle", "what": what, "error": None, "version": version}
            log.info("%s done: now serving version %s", what, version)
            return asm, version

    async def reload(self, version: int | None) -> int | None:
        """Load ``version`` (default latest) and swap it in."""
        _, v = await self._run(f"reload to version {version or 'latest'}", self._load, version)
        return v

    # -- expert changes -------------------------------------------------------------
    def dataset(self) -> Any:
        """The labelled data refits use: ``ServeConfig.dataset``, else the served version's manifest reference.

        A reference is rebuilt once per version served (its files checked
        against their sha256); a missing or changed file is a 409 naming it.
        """
        ds = self.config.dataset
        if ds is not None:
            if self._dataset is None:
                if isinstance(ds, str):
                    from ..data import load_dataset

                    ds = load_dataset(ds, self.config.data_dir)
                self._dataset = ds
            return self._dataset
        ref = (getattr(self.engine.asm, "manifest_", None) or {}).get("dataset")
        if not ref:
            raise NoRegistryError("adding or removing experts refits the router on the training data, and this "
                                  "server has none: start it with ServeConfig.dataset, or serve a registry version "
                                  "whose manifest names its dataset")
        key = json.dumps(ref, sort_keys=True, default=str)
        if self._dataset is None or self._dataset_key != key:
            from ..data import load_dataset_ref

            try:
                self._dataset = load_dataset_ref(ref, data_dir=self.config.data_dir)
            except ManyfoldError as exc:  # a missing or changed data file: the server cannot refit
                raise NoRegistryError(str(exc)) from exc
            self._dataset_key = key
        return self._dataset

    def _base(self, asm: Any) -> tuple[list[Any], np.ndarray, list[Any], np.ndarray]:
        from .._build import _relabel_oos

        ds = self.dataset()
        oos = asm.config.oos_label
        keep = set(asm.labels_.tolist()) | {oos}
        out: list[Any] = []
        for split in ("train", "val"):
            s = ds.split(split)
            labels = _relabel_oos(s.labels, ds.oos_label, oos)  # the data's out-of-scope label as the assembly's
            idx = np.nonzero(np.isin(labels, list(keep)))[0]
            out += [[s.items[i] for i in idx], labels[idx]]
        return out[0], out[1], out[2], out[3]

    def _save(self, asm: Any, note: str) -> int | None:
        name = self.config.registry_name
        if name is None or not self.config.save_changes:
            return None
        return self.registry().save(asm, name, note=note)

    def _add(self, req: Any) -> tuple[Any, int | None]:
        from ..experts import HeadExpert

        asm = self.engine.asm
        tr_x, tr_y, va_x, va_y = self._base(asm)
        tr_x += [t for t, _ in req.train]
        va_x += [t for t, _ in req.val]
        tr_y = np.concatenate([tr_y, np.array([lab for _, lab in req.train], dtype=str)])
        va_y = np.concatenate([va_y, np.array([lab for _, lab in req.val], dtype=str)])
        new = _clone(asm)
        new.add_expert(HeadExpert(req.name, kind=req.kind, domain=req.name, description="added over HTTP"),
                       tr_x, tr_y, va_x, va_y, labels=list(req.labels))
        return new, self._save(new, f"serve: added expert {req.name}")

    def _remove(self, name: str) -> tuple[Any, int | None]:
        asm = self.engine.asm
        asm.expert(name)  # ExpertNotFoundError before any work
        new = _clone(asm)
        new.remove_expert(name, *self._base(asm))
        return new, self._save(new, f"serve: removed expert {name}")

    def check_new_expert(self, req: Any) -> None:
        """Refuse (ConfigError, before any work) an expert that cannot join the served assembly: a name in use,
        the reserved out-of-scope label, labels other experts own or repeat, a label with no training example."""
        asm = self.engine.asm
        if req.name in asm.expert_names:
            raise ConfigError(f"an expert named {req.name!r} is already in the assembly")
        labels = list(req.labels)
        oos = asm.config.oos_label
        if oos in labels:
            raise ConfigError(f"labels: {oos!r} is the assembly's reserved out-of-scope label; no expert can own it")
        dup = sorted({lab for lab in labels if labels.count(lab) > 1})
        if dup:
            raise ConfigError(f"labels: {dup[:5]} appear more than once")
        taken = sorted(set(labels) & set(getattr(asm, "label_to_expert_", {})))
        if taken:
            raise ConfigError(f"labels: {taken[:5]} already belong to other experts "
                              f"({', '.join(sorted({asm.label_to_expert_[t] for t in taken}))})")
        seen = {lab for _, lab in req.train}
        unseen = [lab for lab in labels if lab not in seen]
        if unseen:
            raise ConfigError(f"train: no training example of the label(s) {unseen[:5]}; every label the expert "
                              "owns needs at least one")

    async def add_expert(self, req: Any) -> tuple[Any, int | None]:
        self.check_new_expert(req)
        self.dataset()
        return await self._run(f"add expert {req.name}", self._add, req)

    async def remove_expert(self, name: str) -> tuple[Any, int | None]:
        self.engine.asm.expert(name)
        self.dataset()
        return await self._run(f"remove expert {name}", self._remove, name)


def _load_models(asm: Any) -> int:
    """Load the routing encoder's and the generalist's model weights before the version is swapped in."""
    from ..encoders import load_models

    n = load_models(asm.encoder)
    gen = getattr(asm, "generalist", None)
    if gen is not None and hasattr(gen, "encoder_"):
        n += load_models(gen.encoder_)
    return n
