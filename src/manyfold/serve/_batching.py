"""Dynamic micro-batching with admission control: many concurrent requests, one encoder batch.

Admission (:meth:`MicroBatcher.submit`): a request is refused at once
(:class:`QueueFullError`, served as 503 + ``Retry-After``) when ``max_queue``
requests are already admitted and not answered, or when its characters would
take the admitted work past ``max_queued_chars`` (a request alone is always
admitted: its own size is bounded by the app's ``max_request_chars``). A large
request (one that runs in more than one part, below) is admitted only while the
large requests' work stays within half of ``max_queued_chars``: large requests
can never take the room of small ones. The work of a request is the number of
characters of its texts (an image counts 0: its request is bounded by the image
limits and ``max_queue``).

Batching (:class:`_Scheduler`): a request over ``max_part_chars`` characters
or ``max_batch_size`` items is *large* and is cut into parts of at most that
many (an item is never cut); the others are *small* (one part). Small requests
wait first come, first served; one worker takes the first, gathers more until
the batch holds ``max_batch_size`` items or ``max_batch_chars`` characters or
``max_wait_ms`` has passed, runs the whole batch in a thread (one encoder
call) and hands each request its slice. Large requests have a worker of their
own: each part runs in a batch of its own (its long texts never pad out short
ones), the large requests take turns by deficit round robin over characters,
and the worker's thread runs at a lower priority (``large_nice``: niceness
raised by that much, Linux), so a small request never waits for a part of a
large one and the large ones take the cores the small ones leave idle (the OS
still gives them a small share under saturation: none starves).

A request whose caller has gone (timed out or disconnected: its future is
cancelled) is dropped: its waiting parts never reach the encoder, its escalated
items never reach the generalist.

Snapshots: a request runs every part on the assembly its first part ran on
(``snapshot()`` at the batch's start, pinned to the request), so the
``version`` it answers is the one that produced every item, even across a hot
swap. Parts pinned to different snapshots never share a batch.

Routing (``/v1/route``) goes through the same queue and admission
(``run_route``); route and predict parts never share a batch.

With a ``run_generalist`` the batcher has two stages: a batch runs only the
small stage, requests whose items were all answered there are answered at
once, and escalated items wait for the generalist. Generalist workers gather
waiting escalations round robin across requests (one item of each in turn, up
to ``max_batch_size`` items and ``max_generalist_batch_chars`` characters: the
generalist costs several times more per character) into one generalist call,
so the big model sees batches gathered from several small batches and a
request cannot hold it. Small and large requests' escalations have a worker
each: a small request's escalated text never waits behind a large request's
long ones (seconds of generalist each; an item cannot be cut); the large
requests' calls run in their low-priority thread (all stages share the cores:
under saturation escalated requests wait longer than with one stage; see
docs/serve.md). With ``generalist_deadline_ms``, an escalated item still waiting
there that long after its request arrived leaves the queue with the experts'
answer, flagged degraded and counted (a timer per request; an item whose
generalist call has started waits for it).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .._exceptions import ManyfoldError
from ._engine import Pending
from ._metrics import ServeMetrics

__all__ = ["MicroBatcher", "DirectRunner", "QueueFullError", "work_of"]

log = logging.getLogger("manyfold.serve")

RunBatch = Callable[..., list[Any]]
RunGeneralist = Callable[[Sequence[Any]], list[Any]]
RunRoute = Callable[[Sequence[Any], Any], list[Any]]


class QueueFullError(ManyfoldError, RuntimeError):
    """The request queue (or the admitted work) is full; retry later."""


def _chars(item: Any) -> int:
    return len(item) if isinstance(item, str) else 0


def work_of(items: Sequence[Any]) -> int:
    """The work of a request: the characters of its texts (an image counts 0; see the module docstring)."""
    return sum(_chars(it) for it in items)


def _parts(items: Sequence[Any], max_items: int, max_chars: int) -> deque[tuple[int, int]]:
    """``[start, end)`` spans of at most ``max_items`` items and ``max_chars`` characters (an item alone may be more)."""
    out: deque[tuple[int, int]] = deque()
    start, chars = 0, 0
    for i, it in enumerate(items):
        c = _chars(it)
        if i > start and (i - start >= max_items or chars + c > max_chars):
            out.append((start, i))
            start, chars = i, 0
        chars += c
    out.append((start, len(items)))
    return out


@dataclass(eq=False)
class _Job:
    items: list[Any]
    escalate: bool
    future: asyncio.Future
    route: bool = False
    work: int = 0
    parts: deque = field(default_factory=deque)  # spans still to run; the head is queued or running
    enqueued: float = field(default_factory=time.perf_counter)
    results: list[Any] = field(default_factory=list)
    queued: float | None = None  # seconds before its first part started
    remaining: int = 0  # escalated items waiting for the generalist
    escalated_chars: int = 0  # characters of its items sent to the generalist (max_escalated_chars)
    gen_since: dict[int, float] = field(default_factory=dict)  # item index -> when it began to wait for the generalist
    deadline_armed: bool = False  # its generalist deadline timer is set (generalist_deadline_ms)
    snap: Any = None  # the (assembly, version) its first part ran on: every later part runs on it too
    large: bool = field(init=False)  # runs in more than one part (admitted within half of max_queued_chars)

    def __post_init__(self) -> None:
        self.large = len(self.parts) > 1  # decided once, here: admission, scheduler and workers read it

    def span(self) -> tuple[int, int]:
        return self.parts[0]

    def size(self) -> tuple[int, int]:
        a, b = self.parts[0]
        return b - a, sum(_chars(it) for it in self.items[a:b])

    def finish(self) -> None:
        if not self.future.done():
            self.future.set_result((self.results, self.queued or 0.0, self.snap))


class _Admission:
    """The admitted requests (not yet answered) and their work; refuses beyond ``max_queue`` / ``max_queued_chars``
    (large requests: beyond half of it)."""

    def __init__(self, metrics: ServeMetrics, max_queue: int, max_queued_chars: int | None) -> None:
        self.metrics, self.max_queue, self.max_queued_chars = metrics, max_queue, max_queued_chars
        self.jobs: set[_Job] = set()
        self.work = 0
        self.large_work = 0

    def admit(self, job: _Job) -> None:
        if len(self.jobs) >= self.max_queue:
            self.metrics.rejected.labels("queue_full").inc()
            raise QueueFullError(f"the request queue is full ({self.max_queue} requests admitted, max_queue); "
                                 "retry later")
        large = job.large
        if self.max_queued_chars is not None and self.jobs:
            if self.work + job.work > self.max_queued_chars:
                self.metrics.rejected.labels("work_full").inc()
                raise QueueFullError(f"the server holds {self.work:,} characters of admitted work; this request's "
                                     f"{job.work:,} would pass max_queued_chars={self.max_queued_chars:,}; retry later")
            if large and self.large_work and self.large_work + job.work > self.max_queued_chars // 2:
                self.metrics.rejected.labels("work_full").inc()
                raise QueueFullError(f"large requests hold {self.large_work:,} characters of admitted work; this "
                                     f"request's {job.work:,} would pass half of max_queued_chars="
                                     f"{self.max_queued_chars:,} (the rest is kept for small requests); retry later, "
                                     "or send smaller requests")
        self.jobs.add(job)
        self.work += job.work
        if large:
            self.large_work += job.work
        job.future.add_done_callback(lambda _f, j=job: self.release(j))  # answered, failed or given up

    def release(self, job: _Job) -> None:
        if job in self.jobs:
            self.jobs.discard(job)
            self.work -= job.work
            if job.large:
                self.large_work -= job.work

    def fail_all(self, exc: BaseException) -> None:
        for job in list(self.jobs):
            if not job.future.done():
                job.future.set_exception(exc)


class _Escalations:
    """The per-request escalation budget: a request's escalated items go to the generalist while their characters
    stay within ``max_escalated_chars`` (its first escalated item always does); the others keep the experts'
    answer, flagged degraded (``skip_generalist(pending, reason)`` makes those answers)."""

    def __init__(self, metrics: ServeMetrics, max_escalated_chars: int | None,
                 skip_generalist: Callable[[list[Pending], str], list[Any]] | None) -> None:
        self.metrics, self.max_chars, self.skip = metrics, max_escalated_chars, skip_generalist

    def split(self, job: _Job, start: int, part: Sequence[Any]) -> list[tuple[int, Pending]]:
        """The escalated items of ``part`` (``job.results[start:]``) that go to the generalist; the others are
        answered here."""
        go, over = [], []
        for k, r in enumerate(part):
            if isinstance(r, Pending):
                c = _chars(r.item)
                if self.max_chars is not None and self.skip is not None and job.escalated_chars \
                        and job.escalated_chars + c > self.max_chars:
                    over.append((start + k, r))
                else:
                    job.escalated_chars += c
                    go.append((start + k, r))
        if over:
            assert self.skip is not None
            why = (f"escalation_budget: this request's escalated texts passed max_escalated_chars={self.max_chars:,}; "
                   "the experts' answer")
            for (k, _), pred in zip(over, self.skip([p for _, p in over], why)):
                job.results[k] = pred
            self.metrics.generalist_skipped.inc(len(over))
        return go


class _Scheduler:
    """Which waiting work the next encoder batch takes: small requests first, large ones in turns.

    A *small* request runs in one part; a *large* one in several (``_parts``: at
    most ``max_part_chars`` characters and ``max_batch_size`` items each). Small
    requests wait first come, first served and are gathered together, up to
    ``max_items`` items and ``max_chars`` characters (route and predict apart).
    The large ones take turns by deficit round robin over characters: a request
    that gets the turn is credited ``quantum`` characters and runs its next part
    when its credit covers it (then the next, while the credit lasts), else the
    turn passes on; its unused credit is kept for its next turn. A part of a
    large request runs in a batch of its own: its long texts never pad out a
    batch of short ones (the encoder pads a batch to its longest text).

    The two kinds are taken apart (``take("small")``, ``take("large")``), by
    two workers that run side by side: small requests never wait for a large
    one's part. Requests whose caller has gone (their future is done) are
    dropped when the scheduler meets them: their waiting parts never run.
    """

    def __init__(self, max_items: int, max_chars: int, quantum: int) -> None:
        if quantum < 1:
            raise ValueError(f"quantum must be a positive number of characters, got {quantum!r}")
        self.max_items, self.max_chars, self.quantum = max_items, max_chars, quantum
        self.small: deque[_Job] = deque()  # first come, first served
        self.large: deque[_Job] = deque()  # the ring: its head has the turn
        self.deficit: dict[_Job, int] = {}  # characters of credit of each large request
        self._turn: _Job | None = None  # the large request credited for the turn it holds

    def add(self, job: _Job) -> None:
        """A newly admitted request (``job.large``: it runs in more than one part)."""
        if job.large:
            self.large.append(job)
            self.deficit[job] = 0
        else:
            self.small.append(job)

    def __len__(self) -> int:
        """Requests whose next part waits (those whose caller has gone included, until met)."""
        return len(self.small) + len(self.large)

    def _prune(self) -> None:
        while self.small and self.small[0].future.done():  # the caller has gone: its part never runs
            self.small.popleft()
        if any(j.future.done() or not j.parts for j in self.large):  # gone, or every part has run
            keep = [j for j in self.large if not j.future.done() and j.parts]
            for j in self.large:
                if j not in keep:
                    self.deficit.pop(j, None)
            self.large = deque(keep)
            if self._turn is not None and self._turn not in self.deficit:
                self._turn = None

    def waiting(self, kind: str) -> bool:
        """Whether a ``"small"`` or ``"large"`` request's part waits."""
        self._prune()
        return bool(self.small if kind == "small" else self.large)

    def take(self, kind: str) -> list[_Job]:
        """The requests of the next ``"small"`` or ``"large"`` batch (each runs its next part, ``job.parts[0]``);
        empty when none of that kind waits."""
        if kind not in ("small", "large"):
            raise ValueError(f"kind must be 'small' or 'large', got {kind!r}")
        if not self.waiting(kind):
            return []
        if kind == "large":
            return [self._take_large()]
        return self._gather_small(commit=True)[0]

    def small_batch_full(self) -> bool:
        """Whether the small batch :meth:`take` would make now can take no more requests (so need not wait)."""
        self._prune()
        return self._gather_small(commit=False)[1]

    def _gather_small(self, commit: bool) -> tuple[list[_Job], bool]:
        """The small requests of the next batch and whether it is full (at a limit, or the next one cannot join)."""
        batch: list[_Job] = []
        n = chars = 0
        full = False
        for job in self.small:
            if job.future.done():
                continue
            k, c = job.size()
            if batch and (job.route != batch[0].route or n + k > self.max_items or chars + c > self.max_chars):
                full = True
                break
            batch.append(job)
            n, chars = n + k, chars + c
            if n >= self.max_items or chars >= self.max_chars:
                full = True
                break
        if commit:
            taken = set(batch)
            self.small = deque(j for j in self.small if j not in taken and not j.future.done())
        return batch, full

    def _take_large(self) -> _Job:
        """The large request whose part runs next (deficit round robin over characters)."""
        while True:
            job = self.large[0]
            if self._turn is not job:  # its turn starts: credit it
                self._turn = job
                self.deficit[job] += self.quantum
            chars = job.size()[1]
            if chars <= self.deficit[job]:
                self.deficit[job] -= chars
                return job
            self.large.rotate(-1)  # its credit does not cover its next part: the turn passes on
            self._turn = None


class MicroBatcher:
    """Gathers requests into batches for ``run_batch(items, escalate_flags, defer, snap)`` (called in a thread).

    ``snapshot()`` gives the ``(assembly, version)`` a new request runs on (its
    first batch's); ``submit``'s future resolves to ``(results, queue_seconds,
    snap)``. With ``run_generalist``, ``defer`` is True: ``run_batch`` returns a
    pending object (see :class:`~manyfold.serve._engine.Pending`) for each
    escalated item and ``run_generalist(pending)`` finishes them: in a stage of
    its own (``generalist_stage``), or right after the small pass of each batch,
    before any of its items is answered (one stage). ``max_escalated_chars`` with
    ``skip_generalist``: the per-request escalation budget (:class:`_Escalations`).
    ``run_route(items, snap)``: one result per item for ``submit(..., route=True)``.
    """

    def __init__(self, run_batch: RunBatch, metrics: ServeMetrics, *, max_batch_size: int, max_wait_ms: float,
                 max_queue: int, run_generalist: RunGeneralist | None = None, run_route: RunRoute | None = None,
                 snapshot: Callable[[], Any] = lambda: None, max_batch_chars: int | None = None,
                 max_generalist_batch_chars: int | None = None, max_queued_chars: int | None = None,
                 generalist_stage: bool = True, max_escalated_chars: int | None = None,
                 skip_generalist: Callable[[list[Pending], str], list[Any]] | None = None,
                 max_part_chars: int | None = None, large_nice: int = 0,
                 generalist_deadline_ms: float | None = None) -> None:
        self.run_batch = run_batch
        self.skip_generalist = skip_generalist
        self.gen_deadline = None if generalist_deadline_ms is None else generalist_deadline_ms / 1e3
        if self.gen_deadline is not None and (skip_generalist is None or not (generalist_stage and run_generalist)):
            raise ValueError("generalist_deadline_ms needs the generalist stage and skip_generalist")
        self.run_generalist = run_generalist
        self.generalist_stage = generalist_stage and run_generalist is not None
        self.large_nice = large_nice
        self._large_executor: ThreadPoolExecutor | None = None
        self.escalations = _Escalations(metrics, max_escalated_chars, skip_generalist)
        self.run_route = run_route
        self.snapshot = snapshot
        self.metrics = metrics
        self.max_batch_size = max_batch_size
        self.max_batch_chars = max_batch_chars if max_batch_chars is not None else 1 << 62
        self.max_part_chars = max_part_chars if max_part_chars is not None else self.max_batch_chars
        self.max_gen_chars = max_generalist_batch_chars if max_generalist_batch_chars is not None else 1 << 62
        self.max_wait = max_wait_ms / 1e3
        self.admission = _Admission(metrics, max_queue, max_queued_chars)
        self.scheduler = _Scheduler(max_batch_size, self.max_batch_chars, self.max_part_chars)
        # escalated items waiting, per request (ordered): of small requests, and of large ones (called apart)
        self._gen: dict[_Job, deque[tuple[int, Pending]]] = {}
        self._gen_large: dict[_Job, deque[tuple[int, Pending]]] = {}
        self._gen_events: dict[int, asyncio.Event] = {}  # id(ring) -> set while items wait there
        self._work_events: dict[str, asyncio.Event] = {}  # "small" / "large" -> set when such work may wait
        self._tasks: list[asyncio.Task] = []

    async def start(self) -> None:
        self._ensure_started()

    def _ensure_started(self) -> None:
        if self._tasks and not any(t.done() for t in self._tasks):
            return
        for t in self._tasks:  # started lazily where no lifespan ran (or the loop changed)
            t.cancel()
        self._work_events = {"small": asyncio.Event(), "large": asyncio.Event()}
        self._gen_events = {id(ring): asyncio.Event() for ring in (self._gen, self._gen_large)}
        self._signal_generalist()
        for ev in self._work_events.values():
            ev.set()  # the workers look for themselves
        if self._large_executor is None:  # the large requests' thread (parts and generalist calls), lower priority
            self._large_executor = ThreadPoolExecutor(1, "manyfold-large", self._lower_priority)
        self._tasks = [asyncio.create_task(self._worker("small"), name="manyfold-batcher"),
                       asyncio.create_task(self._worker("large"), name="manyfold-batcher-large")]
        if self.generalist_stage:
            self._tasks += [asyncio.create_task(self._generalist_worker(self._gen), name="manyfold-generalist"),
                            asyncio.create_task(self._generalist_worker(self._gen_large),
                                                name="manyfold-generalist-large")]

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
            try:
                await t
            except asyncio.CancelledError:
                pass
        self._tasks = []
        self.scheduler = _Scheduler(self.max_batch_size, self.max_batch_chars, self.max_part_chars)
        self._gen.clear()
        self._gen_large.clear()
        if self._large_executor is not None:
            self._large_executor.shutdown(wait=False, cancel_futures=True)
            self._large_executor = None
        self.admission.fail_all(QueueFullError("the server is shutting down"))  # nobody will answer these: say so

    def submit(self, items: list[Any], escalate: bool = True, *, route: bool = False) -> asyncio.Future:
        """Admit one request; its future resolves to ``(results, queue_seconds, snap)``. Raises QueueFullError."""
        self._ensure_started()
        job = _Job(list(items), escalate, asyncio.get_running_loop().create_future(), route=route, work=work_of(items),
                   parts=_parts(items, self.max_batch_size, self.max_part_chars), results=[None] * len(items))
        self.admission.admit(job)
        self.scheduler.add(job)
        self._work_events["large" if job.large else "small"].set()
        self.metrics.queue_depth.set(len(self.scheduler))
        return job.future

    # -- the small stage (and routing) -----------------------------------------------------------
    async def _in_thread(self, kind: str, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` in a thread: the large requests' own (lower priority) for ``"large"``."""
        if kind == "large" and self._large_executor is not None:
            return await asyncio.get_running_loop().run_in_executor(self._large_executor, fn, *args)
        return await asyncio.to_thread(fn, *args)

    async def _gather(self, kind: str) -> tuple[list[_Job], Any]:
        """The next batch of ``kind`` (see :class:`_Scheduler`) and the snapshot it runs on. A small batch that is
        not full waits up to ``max_wait_ms`` for more requests to join."""
        sched, event = self.scheduler, self._work_events[kind]
        while True:
            if not sched.waiting(kind):
                event.clear()
                await event.wait()
                continue
            if kind == "small":
                deadline = time.perf_counter() + self.max_wait
                while not sched.small_batch_full() and (left := deadline - time.perf_counter()) > 0:
                    event.clear()
                    try:
                        await asyncio.wait_for(event.wait(), left)
                    except asyncio.TimeoutError:
                        break
            batch = sched.take(kind)
            if batch:
                break
        first = batch[0]
        snap = first.snap if first.snap is not None else self.snapshot()  # a large request's later parts: pinned
        self.metrics.queue_depth.set(len(sched))
        return batch, snap

    async def _worker(self, kind: str) -> None:
        """Runs the ``"small"`` or the ``"large"`` requests' batches, one at a time (two of these run)."""
        while True:
            batch, snap = await self._gather(kind)
            jobs = [j for j in batch if not j.future.done()]  # drop requests whose caller has gone
            if not jobs:
                continue
            started = time.perf_counter()
            for j in jobs:
                if j.queued is None:
                    j.queued = started - j.enqueued
                    self.metrics.stage_latency.labels("queue").observe(j.queued)
                j.snap = snap
            self.metrics.batch_requests.observe(len(jobs))
            spans = [j.span() for j in jobs]
            items = [it for j, (a, b) in zip(jobs, spans) for it in j.items[a:b]]
            try:
                if jobs[0].route:
                    assert self.run_route is not None, "this batcher was built without run_route"
                    results = await self._in_thread(kind, self.run_route, items, snap)
                else:
                    flags = [j.escalate for j, (a, b) in zip(jobs, spans) for _ in range(b - a)]
                    results = await self._in_thread(kind, self.run_batch, items, flags,
                                                    self.run_generalist is not None, snap)
            except Exception as exc:  # run_batch returns per-item errors; this is a bug: fail the batch loudly
                log.exception("a batch of %d requests failed", len(jobs))
                _fail(jobs, exc)
                continue
            at, live, inline = 0, [], []
            for j, (a, b) in zip(jobs, spans):
                part = results[at:at + b - a]
                at += b - a
                j.parts.popleft()
                if j.future.done():
                    continue
                j.results[a:b] = part
                if any(isinstance(r, BaseException) for r in part):  # the request answers an error: stop its work
                    j.finish()
                    continue
                live.append(j)
                for k, p in self.escalations.split(j, a, part):
                    if self.generalist_stage:
                        j.remaining += 1
                        (self._gen_large if j.large else self._gen).setdefault(j, deque()).append((k, p))
                        j.gen_since[k] = time.perf_counter()
                    else:
                        inline.append((j, k, p))
                if self.gen_deadline is not None and j.remaining:
                    self._arm_deadline(j)
            if inline:  # one stage: the generalist before any item of this batch is answered
                assert self.run_generalist is not None
                try:
                    done = await self._in_thread(kind, self.run_generalist, [p for _, _, p in inline])
                except Exception as exc:
                    log.exception("a generalist batch of %d items failed", len(inline))
                    _fail([j for j, _, _ in inline], exc)
                    done = []
                for (j, k, _), r in zip(inline, done):
                    j.results[k] = r
            for j in live:
                if not j.future.done() and not j.parts and j.remaining == 0:
                    j.finish()  # (a large request with parts left is still in the scheduler's ring)
            self._signal_generalist()
            self.metrics.queue_depth.set(len(self.scheduler))
            self.metrics.generalist_queue_depth.set(self._gen_waiting())

    # -- the generalist stage ----------------------------------------------------------------------
    def _arm_deadline(self, job: _Job) -> None:
        """Set ``job``'s generalist deadline timer (once; ``generalist_deadline_ms`` after it arrived). A large
        request's later escalated items, added when its deadline has passed, leave at once."""
        assert self.gen_deadline is not None
        left = job.enqueued + self.gen_deadline - time.perf_counter()
        if left <= 0:
            self._expire(job)
        elif not job.deadline_armed:
            job.deadline_armed = True
            asyncio.get_running_loop().call_later(left, self._expire, job)

    def _expire(self, job: _Job) -> None:
        """``job``'s deadline has come: its items still waiting for the generalist (none of them in a call yet) get
        the experts' answer, flagged degraded and counted; the request is answered if nothing else is left."""
        q = self._gen.pop(job, None) or self._gen_large.pop(job, None)
        if not q:
            return
        if job.future.done():  # the caller has gone: nobody reads these
            return
        assert self.skip_generalist is not None and self.gen_deadline is not None
        now = time.perf_counter()
        why = (f"generalist_deadline: the generalist had not taken it {1e3 * (now - job.enqueued):.0f} ms after the "
               f"request arrived (generalist_deadline_ms={1e3 * self.gen_deadline:g}); the experts' answer")
        for (k, _), pred in zip(q, self.skip_generalist([p for _, p in q], why)):
            job.results[k] = pred
            self.metrics.stage_latency.labels("generalist_queue").observe(now - job.gen_since.pop(k, now))
        job.remaining -= len(q)
        self.metrics.generalist_deadline.inc(len(q))
        self.metrics.generalist_queue_depth.set(self._gen_waiting())
        if job.remaining == 0 and not job.parts:
            job.finish()

    def _gen_waiting(self) -> int:
        return sum(len(q) for q in self._gen.values()) + sum(len(q) for q in self._gen_large.values())

    def _signal_generalist(self) -> None:
        for ring in (self._gen, self._gen_large):
            if ring and id(ring) in self._gen_events:
                self._gen_events[id(ring)].set()

    def _round_robin(self, ring: dict[_Job, deque[tuple[int, Pending]]]) -> list[tuple[_Job, int, Pending]]:
        """Round robin over the requests with escalated items waiting in ``ring``: one item of each in turn, up to
        ``max_batch_size`` items and ``max_generalist_batch_chars`` characters (an item alone may be more)."""
        taken: list[tuple[_Job, int, Pending]] = []
        chars = 0
        while ring and len(taken) < self.max_batch_size:
            for job in list(ring):
                q = ring[job]
                c = _chars(q[0][1].item)
                if taken and chars + c > self.max_gen_chars:
                    return taken
                k, p = q.popleft()
                taken.append((job, k, p))
                chars += c
                del ring[job]
                if q:
                    ring[job] = q  # to the back: the others go first next time
                if len(taken) >= self.max_batch_size:
                    break
        return taken

    def _lower_priority(self) -> None:
        """Run in the large requests' thread (their parts and their generalist calls): add ``large_nice`` to its
        niceness (Linux: per thread; the compute threads it starts inherit it), so that the OS gives it the cores
        the small requests leave idle. Where that cannot be done the thread keeps the normal priority: logged,
        and the ``manyfold_large_nice`` gauge stays 0."""
        nice = self.large_nice
        if nice <= 0:
            return
        if not sys.platform.startswith("linux"):
            log.warning("large_nice=%d is not applied on %s (Linux only): large requests' parts and "
                        "generalist calls run at the normal priority", nice, sys.platform)
            return
        try:
            tid = threading.get_native_id()
            os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))
            self.metrics.large_nice.set(os.getpriority(os.PRIO_PROCESS, tid))
        except OSError as exc:
            log.warning("could not lower the priority of large requests' parts and generalist calls (%s): they run at the "
                        "normal priority", exc)

    async def _generalist_worker(self, ring: dict[_Job, deque[tuple[int, Pending]]]) -> None:
        """The escalated items waiting in ``ring``, gathered round robin across requests, go to the generalist in
        one call at a time. Two of these run: one for the small requests' items, one for the large requests'
        (see the module docstring)."""
        assert self.run_generalist is not None
        event = self._gen_events[id(ring)]
        while True:
            await event.wait()
            for job in [j for j in ring if j.future.done()]:  # the caller has gone: skip, and stop counting it
                del ring[job]
            entries = self._round_robin(ring)
            if not ring:
                event.clear()
            self.metrics.generalist_queue_depth.set(self._gen_waiting())
            if not entries:
                continue
            now = time.perf_counter()
            waits = [now - job.gen_since.pop(k, now) for job, k, _ in entries]  # in this stage's queue
            for w in waits:
                self.metrics.stage_latency.labels("generalist_queue").observe(w)
            try:
                pending = [e[2] for e in entries]
                results = await self._in_thread("large" if ring is self._gen_large else "small",
                                                self.run_generalist, pending)
            except Exception as exc:  # run_generalist returns per-item errors; this is a bug: fail loudly
                log.exception("a generalist batch of %d items failed", len(entries))
                _fail([e[0] for e in entries], exc)
                continue
            for (job, k, _), r, w in zip(entries, results, waits):
                if isinstance(getattr(r, "timings_ms", None), dict):  # the answer's own copy (one per item)
                    r.timings_ms["generalist_queue"] = round(1e3 * w, 4)
                job.results[k] = r
                job.remaining -= 1
                if job.remaining == 0 and not job.parts:
                    job.finish()

def _fail(jobs: Sequence[_Job], exc: BaseException) -> None:
    for j in jobs:
        if not j.future.done():
            j.future.set_exception(exc)


class DirectRunner:
    """No batching: every request runs alone in a thread, part by part (the same admission as the batcher)."""

    def __init__(self, run_batch: RunBatch, metrics: ServeMetrics, *, max_queue: int, run_route: RunRoute | None = None,
                 snapshot: Callable[[], Any] = lambda: None, max_batch_size: int = 1 << 30,
                 max_batch_chars: int | None = None, max_generalist_batch_chars: int | None = None,
                 max_queued_chars: int | None = None, run_generalist: RunGeneralist | None = None,
                 max_escalated_chars: int | None = None,
                 skip_generalist: Callable[[list[Pending], str], list[Any]] | None = None,
                 max_part_chars: int | None = None) -> None:
        self.run_batch = run_batch
        self.run_generalist = run_generalist
        self.escalations = _Escalations(metrics, max_escalated_chars, skip_generalist)
        self.run_route = run_route
        self.snapshot = snapshot
        self.metrics = metrics
        self.max_batch_size = max_batch_size
        self.max_batch_chars = max_batch_chars if max_batch_chars is not None else 1 << 62
        self.max_part_chars = max_part_chars if max_part_chars is not None else self.max_batch_chars
        self.admission = _Admission(metrics, max_queue, max_queued_chars)
        self._tasks: set[asyncio.Future] = set()

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        self.admission.fail_all(QueueFullError("the server is shutting down"))

    def submit(self, items: list[Any], escalate: bool = True, *, route: bool = False) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        job = _Job(list(items), escalate, loop.create_future(), route=route, work=work_of(items),
                   parts=_parts(items, self.max_batch_size, self.max_part_chars), results=[None] * len(items))
        self.admission.admit(job)
        self.metrics.queue_depth.set(len(self.admission.jobs))

        async def go() -> None:
            try:
                job.queued, job.snap = time.perf_counter() - job.enqueued, self.snapshot()
                self.metrics.batch_requests.observe(1)
                while job.parts and not job.future.done():  # a caller that has gone stops the next part
                    a, b = job.parts[0]
                    if route:
                        part = await asyncio.to_thread(self.run_route, items[a:b], job.snap)
                    else:
                        part = await asyncio.to_thread(self.run_batch, items[a:b], [escalate] * (b - a),
                                                       self.run_generalist is not None, job.snap)
                    job.parts.popleft()
                    job.results[a:b] = part
                    if any(isinstance(r, BaseException) for r in part):
                        break
                    go = self.escalations.split(job, a, part)
                    if go:
                        assert self.run_generalist is not None
                        for (k, _), r in zip(go, await asyncio.to_thread(self.run_generalist, [p for _, p in go])):
                            job.results[k] = r
                job.finish()
            except Exception as exc:
                log.exception("a request of %d items failed", len(items))
                _fail([job], exc)
            finally:
                self.metrics.queue_depth.set(len(self.admission.jobs))

        task = asyncio.ensure_future(go())  # a caller that gives up cancels the future: the task ends after its part
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return job.future
