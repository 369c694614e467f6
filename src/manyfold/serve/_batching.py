"""Dynamic micro-batching: many concurrent requests, one encoder batch.

Requests go into a bounded :class:`asyncio.Queue`. One worker takes the
first waiting request, then gathers more until the batch holds
``max_batch_size`` items or ``max_wait_ms`` has passed, runs the whole batch
in a thread (one encoder call) and hands each request its slice of the
results. A full queue refuses new requests at once (:class:`QueueFullError`,
served as 503 + ``Retry-After``). A request whose caller gave up (timeout)
before its batch started is skipped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .._exceptions import ManyfoldError
from ._metrics import ServeMetrics

__all__ = ["MicroBatcher", "DirectRunner", "QueueFullError"]

log = logging.getLogger("manyfold.serve")

RunBatch = Callable[[Sequence[str], Sequence[bool]], list[Any]]


class QueueFullError(ManyfoldError, RuntimeError):
    """The request queue is full; retry later."""


@dataclass
class _Job:
    items: list[str]
    escalate: bool
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)


class MicroBatcher:
    """Gathers requests into batches for ``run_batch(items, escalate_flags)`` (called in a thread)."""

    def __init__(self, run_batch: RunBatch, metrics: ServeMetrics, *, max_batch_size: int, max_wait_ms: float,
                 max_queue: int) -> None:
        self.run_batch = run_batch
        self.metrics = metrics
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1e3
        self.queue: asyncio.Queue[_Job] = asyncio.Queue(maxsize=max_queue)
        self._carry: _Job | None = None
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._worker(), name="manyfold-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        while not self.queue.empty():  # nobody will answer these: say so
            job = self.queue.get_nowait()
            if not job.future.done():
                job.future.set_exception(QueueFullError("the server is shutting down"))

    def submit(self, items: list[str], escalate: bool) -> asyncio.Future:
        """Queue one request; its future resolves to ``(results, queue_seconds)``. Raises QueueFullError."""
        if self._task is None or self._task.done():  # started lazily where no lifespan ran (or the loop changed)
            self._task = asyncio.create_task(self._worker(), name="manyfold-batcher")
        job = _Job(items, escalate, asyncio.get_running_loop().create_future())
        try:
            self.queue.put_nowait(job)
        except asyncio.QueueFull:
            self.metrics.rejected.labels("queue_full").inc()
            raise QueueFullError(f"the request queue is full ({self.queue.maxsize} requests); retry later") from None
        self.metrics.queue_depth.set(self.queue.qsize())
        return job.future

    async def _next(self, timeout: float | None) -> _Job | None:
        if self._carry is not None:
            job, self._carry = self._carry, None
            return job
        if timeout is None:
            return await self.queue.get()
        if not self.queue.empty():
            return self.queue.get_nowait()
        if timeout <= 0:
            return None
        try:
            return await asyncio.wait_for(self.queue.get(), timeout)
        except asyncio.TimeoutError:
            return None

    async def _gather(self) -> list[_Job]:
        first = await self._next(None)
        batch, n = [first], len(first.items)
        deadline = time.perf_counter() + self.max_wait
        while n < self.max_batch_size:
            job = await self._next(deadline - time.perf_counter())
            if job is None:
                break
            if n + len(job.items) > self.max_batch_size:
                self._carry = job  # it starts the next batch
                break
            batch.append(job)
            n += len(job.items)
        self.metrics.queue_depth.set(self.queue.qsize())
        return batch

    async def _worker(self) -> None:
        while True:
            batch = await self._gather()
            jobs = [j for j in batch if not j.future.done()]  # skip requests whose caller gave up
            if not jobs:
                continue
            started = time.perf_counter()
            for j in jobs:
                self.metrics.stage_latency.labels("queue").observe(started - j.enqueued)
            self.metrics.batch_requests.observe(len(jobs))
            items = [it for j in jobs for it in j.items]
            flags = [j.escalate for j in jobs for _ in j.items]
            try:
                results = await asyncio.to_thread(self.run_batch, items, flags)
            except Exception as exc:  # run_batch returns per-item errors; this is a bug: fail the batch loudly
                log.exception("a batch of %d requests failed", len(jobs))
                for j in jobs:
                    if not j.future.done():
                        j.future.set_exception(exc)
                continue
            at = 0
            for j in jobs:
                part = results[at:at + len(j.items)]
                at += len(j.items)
                if not j.future.done():
                    j.future.set_result((part, started - j.enqueued))


class DirectRunner:
    """No batching: every request runs alone in a thread (at most ``max_queue`` at a time, else 503)."""

    def __init__(self, run_batch: RunBatch, metrics: ServeMetrics, *, max_queue: int) -> None:
        self.run_batch = run_batch
        self.metrics = metrics
        self.max_queue = max_queue
        self.active = 0

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def submit(self, items: list[str], escalate: bool) -> asyncio.Future:
        if self.active >= self.max_queue:
            self.metrics.rejected.labels("queue_full").inc()
            raise QueueFullError(f"{self.max_queue} requests are already running; retry later")
        self.active += 1
        self.metrics.queue_depth.set(self.active)
        t0 = time.perf_counter()

        async def go() -> tuple[list[Any], float]:
            try:
                started = time.perf_counter()
                self.metrics.batch_requests.observe(1)
                return await asyncio.to_thread(self.run_batch, items, [escalate] * len(items)), started - t0
            finally:
                self.active -= 1
                self.metrics.queue_depth.set(self.active)

        return asyncio.ensure_future(go())
