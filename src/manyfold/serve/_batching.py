"""Dynamic micro-batching: many concurrent requests, one encoder batch.

Requests go into a bounded :class:`asyncio.Queue`. One worker takes the
first waiting request, then gathers more until the batch holds
``max_batch_size`` items or ``max_wait_ms`` has passed, runs the whole batch
in a thread (one encoder call) and hands each request its slice of the
results. A full queue refuses new requests at once (:class:`QueueFullError`,
served as 503 + ``Retry-After``). A request whose caller gave up (timeout)
before its batch started is skipped.

With a ``run_generalist`` the batcher has two stages: a batch runs only the
small stage, its requests whose items were all answered there are answered at
once, and escalated items wait in a second queue for the generalist. A second
worker takes everything waiting there (up to ``max_batch_size`` items) into one
generalist call, so the big model sees batches gathered from several small
batches while the small stage keeps going (both stages share the cores: under
saturation escalated requests wait longer than with one stage; see
docs/serve.md). Requests in either stage count towards ``max_queue``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .._exceptions import ManyfoldError
from ._engine import Pending
from ._metrics import ServeMetrics

__all__ = ["MicroBatcher", "DirectRunner", "QueueFullError"]

log = logging.getLogger("manyfold.serve")

RunBatch = Callable[..., list[Any]]
RunGeneralist = Callable[[Sequence[Any]], list[Any]]


class QueueFullError(ManyfoldError, RuntimeError):
    """The request queue is full; retry later."""


@dataclass(eq=False)
class _Job:
    items: list[str]
    escalate: bool
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)
    results: list[Any] = field(default_factory=list)
    queued: float = 0.0
    remaining: int = 0


class MicroBatcher:
    """Gathers requests into batches for ``run_batch(items, escalate_flags)`` (called in a thread).

    With ``run_generalist``, ``run_batch(items, flags, defer=True)`` returns a
    pending object (see :class:`~manyfold.serve._engine.Pending`) for each
    escalated item and ``run_generalist(pending)`` finishes them.
    """

    def __init__(self, run_batch: RunBatch, metrics: ServeMetrics, *, max_batch_size: int, max_wait_ms: float,
                 max_queue: int, run_generalist: RunGeneralist | None = None) -> None:
        self.run_batch = run_batch
        self.run_generalist = run_generalist
        self.metrics = metrics
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1e3
        self.max_queue = max_queue
        self.queue: asyncio.Queue[_Job] = asyncio.Queue()
        self.gen_queue: asyncio.Queue[tuple[_Job, int, Any]] = asyncio.Queue()
        self._gen_jobs: set[_Job] = set()  # requests waiting for the generalist
        self._carry: _Job | None = None
        self._running: list[_Job] = []  # the small stage's batch in flight
        self._tasks: list[asyncio.Task] = []

    async def start(self) -> None:
        self._ensure_started()

    def _ensure_started(self) -> None:
        if self._tasks and not any(t.done() for t in self._tasks):
            return
        for t in self._tasks:  # started lazily where no lifespan ran (or the loop changed)
            t.cancel()
        self._tasks = [asyncio.create_task(self._worker(), name="manyfold-batcher")]
        if self.run_generalist is not None:
            self._tasks.append(asyncio.create_task(self._generalist_worker(), name="manyfold-generalist"))

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
            try:
                await t
            except asyncio.CancelledError:
                pass
        self._tasks = []
        waiting = [self.queue.get_nowait() for _ in range(self.queue.qsize())]
        waiting += [self.gen_queue.get_nowait()[0] for _ in range(self.gen_queue.qsize())]
        waiting += [*self._gen_jobs, *self._running]  # also those whose call was cut short
        if self._carry is not None:
            waiting.append(self._carry)
            self._carry = None
        for job in waiting:  # nobody will answer these: say so
            if not job.future.done():
                job.future.set_exception(QueueFullError("the server is shutting down"))
        self._gen_jobs.clear()

    def submit(self, items: list[str], escalate: bool) -> asyncio.Future:
        """Queue one request; its future resolves to ``(results, queue_seconds)``. Raises QueueFullError."""
        self._ensure_started()
        if self.queue.qsize() + len(self._gen_jobs) >= self.max_queue:
            self.metrics.rejected.labels("queue_full").inc()
            raise QueueFullError(f"the request queue is full ({self.max_queue} requests); retry later")
        job = _Job(items, escalate, asyncio.get_running_loop().create_future())
        self.queue.put_nowait(job)
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
            self._running = jobs
            try:
                if self.run_generalist is None:
                    results = await asyncio.to_thread(self.run_batch, items, flags)
                else:
                    results = await asyncio.to_thread(self.run_batch, items, flags, True)
            except Exception as exc:  # run_batch returns per-item errors; this is a bug: fail the batch loudly
                log.exception("a batch of %d requests failed", len(jobs))
                self._running = []
                _fail(jobs, exc)
                continue
            self._running = []  # (left set when cancelled: stop() answers them)
            at = 0
            for j in jobs:
                j.results, j.queued = results[at:at + len(j.items)], started - j.enqueued
                at += len(j.items)
                if j.future.done():
                    continue
                pending = [k for k, r in enumerate(j.results) if isinstance(r, Pending)]
                if not pending:
                    j.future.set_result((j.results, j.queued))
                    continue
                j.remaining = len(pending)
                self._gen_jobs.add(j)
                for k in pending:
                    self.gen_queue.put_nowait((j, k, j.results[k]))
            self.metrics.generalist_queue_depth.set(self.gen_queue.qsize())

    async def _generalist_worker(self) -> None:
        """Everything waiting for the generalist (up to ``max_batch_size`` items) goes in one call."""
        assert self.run_generalist is not None
        while True:
            entries = [await self.gen_queue.get()]
            while len(entries) < self.max_batch_size and not self.gen_queue.empty():
                entries.append(self.gen_queue.get_nowait())
            self.metrics.generalist_queue_depth.set(self.gen_queue.qsize())
            for e in entries:
                if e[0].future.done():  # the caller gave up (timeout): skip, and stop counting it
                    self._gen_jobs.discard(e[0])
            entries = [e for e in entries if not e[0].future.done()]
            if not entries:
                continue
            try:
                results = await asyncio.to_thread(self.run_generalist, [e[2] for e in entries])
            except Exception as exc:  # run_generalist returns per-item errors; this is a bug: fail loudly
                log.exception("a generalist batch of %d items failed", len(entries))
                _fail([e[0] for e in entries], exc)
                continue
            for (job, k, _), r in zip(entries, results):
                job.results[k] = r
                job.remaining -= 1
                if job.remaining == 0:
                    self._gen_jobs.discard(job)
                    if not job.future.done():
                        job.future.set_result((job.results, job.queued))


def _fail(jobs: Sequence[_Job], exc: BaseException) -> None:
    for j in jobs:
        if not j.future.done():
            j.future.set_exception(exc)


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
