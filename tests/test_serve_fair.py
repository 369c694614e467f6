"""Issue 14, must-show 2: the batcher's scheduler. Small requests never wait for large ones: large ones run in parts of
their own, in a worker of their own at a lower priority, and take turns by deficit round robin over characters; work
of callers that have gone is dropped.

Known answers on the scheduler alone (no model, no clock), then on ``MicroBatcher`` with recording stand-ins for
the encoder and the generalist."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from concurrent.futures import Future

import pytest

from manyfold.serve._batching import MicroBatcher, _Job, _parts, _Scheduler
from manyfold.serve._engine import Pending
from manyfold.serve._metrics import ServeMetrics

pytest.importorskip("prometheus_client")


def _job(name: str, sizes: list[int], part_chars: int, max_items: int = 64, route: bool = False) -> _Job:
    """A request of items ``name0``, ``name1``, ... padded to ``sizes`` characters, cut into parts as the batcher does."""
    items = [f"{name}{i}".ljust(n, ".") for i, n in enumerate(sizes)]
    return _Job(items, True, Future(), route=route, parts=_parts(items, max_items, part_chars))


def _names(batch: list[_Job]) -> list[str]:
    """The items of a batch (each request's next part), without the padding."""
    return [it.rstrip(".") for j in batch for it in j.items[slice(*j.parts[0])]]


def _run(sched: _Scheduler, kind: str) -> list[str]:
    """Take the next batch of ``kind`` and run it (each request's part done), as that kind's worker does."""
    batch = sched.take(kind)
    out = _names(batch)
    for j in batch:
        j.parts.popleft()
    return out


def test_small_and_large_requests_are_taken_apart_and_a_large_part_runs_alone():
    s = _Scheduler(max_items=64, max_chars=100, quantum=40)
    big = _job("L", [20] * 6, 40)  # three parts of two items
    assert len(big.parts) == 3
    for j in (big, _job("a", [20], 40), _job("b", [20], 40)):
        s.add(j)
    assert s.waiting("small") and s.waiting("large")
    assert _run(s, "small") == ["a0", "b0"]  # together, though the large one came first
    assert _run(s, "large") == ["L0", "L1"]  # a batch of its own
    s.add(_job("c", [20], 40))
    assert _run(s, "small") == ["c0"] and not s.waiting("small")
    assert _run(s, "large") == ["L2", "L3"]
    assert _run(s, "large") == ["L4", "L5"]
    assert _run(s, "large") == [] and _run(s, "small") == [] and len(s) == 0
    assert not s.waiting("large") and not s.waiting("small")
    with pytest.raises(ValueError, match="kind must be 'small' or 'large', got 'medium'"):
        s.take("medium")


def test_small_requests_never_wait_for_the_large_ones():
    s = _Scheduler(max_items=64, max_chars=1000, quantum=40)
    for name in "LMN":  # three large requests admitted, none of their parts run yet
        s.add(_job(name, [20] * 4, 40))
    s.add(_job("a", [20], 40))
    assert _run(s, "small") == ["a0"]
    s.add(_job("b", [20], 40))
    assert _run(s, "small") == ["b0"]
    assert [_run(s, "large") for _ in range(7)] == [["L0", "L1"], ["M0", "M1"], ["N0", "N1"], ["L2", "L3"],
                                                    ["M2", "M3"], ["N2", "N3"], []]


def test_large_requests_share_the_encoder_by_characters():
    s = _Scheduler(max_items=64, max_chars=1000, quantum=40)
    s.add(_job("A", [40] * 3, 40))  # parts of one 40-character item
    s.add(_job("B", [10] * 12, 40, max_items=2))  # parts of two 10-character items: 20 characters
    got = [_run(s, "large") for _ in range(9)]
    # each turn is worth 40 characters: B runs two parts for each of A's
    assert got == [["A0"], ["B0", "B1"], ["B2", "B3"], ["A1"], ["B4", "B5"], ["B6", "B7"], ["A2"], ["B8", "B9"],
                   ["B10", "B11"]]


def test_an_item_longer_than_a_turn_waits_for_its_credit():
    s = _Scheduler(max_items=64, max_chars=1000, quantum=40)
    s.add(_job("C", [100, 100], 40))  # parts of one 100-character item: two and a half turns of credit each
    s.add(_job("A", [40] * 4, 40))
    got = [_run(s, "large") for _ in range(6)]
    assert got == [["A0"], ["A1"], ["C0"], ["A2"], ["A3"], ["C1"]]  # C: 40, 80, 120 -> runs (20 kept); 60, 100 -> runs


def test_small_batches_keep_route_and_predict_apart_and_respect_the_limits():
    s = _Scheduler(max_items=3, max_chars=1000, quantum=1000)
    s.add(_job("p", [10, 10], 1000))
    s.add(_job("q", [10], 1000))
    s.add(_job("r", [10], 1000, route=True))
    s.add(_job("t", [10], 1000))
    assert _run(s, "small") == ["p0", "p1", "q0"]  # three items: full
    assert _run(s, "small") == ["r0"]  # a route request: a batch of its own
    assert _run(s, "small") == ["t0"]
    s2 = _Scheduler(max_items=64, max_chars=25, quantum=25)
    for name in "abc":
        s2.add(_job(name, [10], 25))
    assert s2.small_batch_full()  # two fit, the third would pass 25 characters
    assert _run(s2, "small") == ["a0", "b0"] and not s2.small_batch_full() and _run(s2, "small") == ["c0"]


def test_requests_whose_caller_has_gone_are_dropped():
    s = _Scheduler(max_items=64, max_chars=1000, quantum=40)
    big, other = _job("L", [20] * 6, 40), _job("M", [20] * 4, 40)
    gone, kept = _job("g", [20], 40), _job("k", [20], 40)
    for j in (big, other, gone, kept):
        s.add(j)
    gone.future.cancel()  # timed out or disconnected before its batch
    assert _run(s, "small") == ["k0"]
    assert _run(s, "large") == ["L0", "L1"]
    big.future.cancel()  # gone after its first part: its other parts never run
    assert [_run(s, "large") for _ in range(3)] == [["M0", "M1"], ["M2", "M3"], []]
    assert len(s) == 0


# -- on the batcher ----------------------------------------------------------------------------------------------


def _recording_batcher(calls: list[list[str]], gen_calls: list[list[str]] | None = None,
                       gen_gate: threading.Event | None = None, part_gate: threading.Event | None = None,
                       **kw) -> MicroBatcher:
    """A batcher whose encoder stand-in records each batch; items starting with "esc" escalate to a generalist
    stand-in that records each call. A generalist call of small requests' items ("esc-s...") waits for
    ``gen_gate``; an encoder batch of a large request's items ("...L...") waits for ``part_gate``."""

    def run_batch(items, flags, defer=False, snap=None):
        if part_gate is not None and "L" in items[0]:
            assert part_gate.wait(10), "the test never opened the part gate"
        calls.append([i.rstrip(".") for i in items])
        return [Pending(None, None, 0, i, {}) if defer and i.startswith("esc") else i.upper() for i in items]

    def run_generalist(pending):
        gen_calls.append([p.item.rstrip(".") for p in pending])
        if gen_gate is not None and pending[0].item.startswith("esc-s"):
            assert gen_gate.wait(10), "the test never opened the gate"
        return [p.item.upper() for p in pending]

    return MicroBatcher(run_batch, ServeMetrics(), max_wait_ms=1, max_queue=64,
                        run_generalist=run_generalist if gen_calls is not None else None, **kw)


def test_the_batcher_runs_a_large_request_apart_from_the_small_ones_that_came_with_it():
    calls: list[list[str]] = []
    big = [f"L{i}".ljust(20, ".") for i in range(6)]

    async def go():
        b = _recording_batcher(calls, max_batch_size=64, max_batch_chars=40)  # parts of 40 characters
        futs = [b.submit(big), b.submit(["a".ljust(20, ".")]), b.submit(["b".ljust(20, ".")])]
        got = await asyncio.wait_for(asyncio.gather(*futs), 5)
        await b.stop()
        return got

    got = asyncio.run(go())
    assert sorted(calls) == [["L0", "L1"], ["L2", "L3"], ["L4", "L5"], ["a", "b"]]  # never a large part with small texts
    assert [c for c in calls if c[0].startswith("L")] == [["L0", "L1"], ["L2", "L3"], ["L4", "L5"]]  # in order
    assert got[0][0] == [t.upper() for t in big]


def test_a_small_request_is_answered_while_a_large_requests_part_runs():
    """The large requests' worker runs beside the small requests' one: a part that takes long holds nobody else."""
    calls: list[list[str]] = []
    gate = threading.Event()
    big = [f"L{i}".ljust(20, ".") for i in range(4)]

    async def go():
        b = _recording_batcher(calls, part_gate=gate, max_batch_size=64, max_batch_chars=40)
        large = b.submit(big)
        await asyncio.sleep(0.05)  # its first part is running (held)
        small = await asyncio.wait_for(b.submit(["a".ljust(20, ".")]), 5)
        held = large.done()
        gate.set()
        got = await asyncio.wait_for(large, 5)
        await b.stop()
        return small, held, got

    small, held, got = asyncio.run(go())
    assert small[0] == ["A".ljust(20, ".")] and not held  # answered while the large request's part was held
    assert calls == [["a"], ["L0", "L1"], ["L2", "L3"]]
    assert got[0] == [t.upper() for t in big]


def test_a_large_requests_escalations_go_to_a_generalist_worker_of_their_own():
    """A small request's escalation never waits behind a large request's (long texts, seconds of generalist each):
    the two kinds are called apart, by two workers; here the small ones' call is held and the large one goes on."""
    calls: list[list[str]] = []
    gen_calls: list[list[str]] = []
    gate = threading.Event()
    big = [f"esc-L{i}".ljust(10, ".") for i in range(4)]
    small = [[f"esc-s{i}".ljust(10, ".")] for i in range(3)]

    async def go():
        b = _recording_batcher(calls, gen_calls, gate, max_batch_size=64, max_batch_chars=100, max_part_chars=20,
                               max_generalist_batch_chars=20)
        futs = [b.submit(big)] + [b.submit(s) for s in small]
        big_done = False
        for _ in range(500):  # the small requests' first generalist call holds; the large request goes on
            big_done = futs[0].done()
            if big_done:
                break
            await asyncio.sleep(0.01)
        held = [list(c) for c in gen_calls]
        gate.set()
        got = await asyncio.wait_for(asyncio.gather(*futs), 5)
        await b.stop()
        return big_done, held, got

    big_done, held, got = asyncio.run(go())
    assert big_done  # answered while the small requests' generalist call was held
    assert sorted(calls) == [["esc-L0", "esc-L1"], ["esc-L2", "esc-L3"], ["esc-s0", "esc-s1", "esc-s2"]]
    assert [c for c in held if c[0].startswith("esc-L")] == [["esc-L0", "esc-L1"], ["esc-L2", "esc-L3"]]
    assert [c for c in held if c[0].startswith("esc-s")] == [["esc-s0", "esc-s1"]]  # the held one
    assert [c for c in gen_calls if c[0].startswith("esc-s")] == [["esc-s0", "esc-s1"], ["esc-s2"]]
    assert got[0][0] == [t.upper() for t in big] and [g[0] for g in got[1:]] == [[t[0].upper()] for t in small]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread niceness is Linux's")
def test_a_large_requests_parts_and_generalist_calls_run_at_a_lower_priority():
    seen: dict[str, set[int]] = {}
    base = os.getpriority(os.PRIO_PROCESS, 0)

    def here(key: str) -> None:
        seen.setdefault(key, set()).add(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))

    def run_batch(items, flags, defer=False, snap=None):
        for i in items:
            here("part " + i[:5])
        return [Pending(None, None, 0, i, {}) for i in items]

    def run_generalist(pending):
        for p in pending:
            here("generalist " + p.item[:5])
        return [p.item for p in pending]

    async def go():
        metrics = ServeMetrics()
        b = MicroBatcher(run_batch, metrics, max_batch_size=64, max_wait_ms=1, max_queue=8, max_batch_chars=100,
                         max_part_chars=20, run_generalist=run_generalist, large_nice=3)
        await asyncio.wait_for(asyncio.gather(b.submit(["large-0".ljust(15), "large-1".ljust(15)]),
                                              b.submit(["small"])), 5)
        await b.stop()
        return metrics

    metrics = asyncio.run(go())
    low = min(19, base + 3)
    assert seen == {"part large": {low}, "generalist large": {low}, "part small": {base}, "generalist small": {base}}
    assert metrics.large_nice._value.get() == low


def test_large_nice_and_max_part_chars_are_checked():
    from manyfold import ConfigError
    from manyfold.serve import ServeConfig

    with pytest.raises(ConfigError, match="large_nice must be an integer from 0"):
        ServeConfig(assembly="x", large_nice=20)
    with pytest.raises(ConfigError, match=r"max_part_chars \(5,000\) must be at most max_batch_chars \(4,096\)"):
        ServeConfig(assembly="x", max_part_chars=5000)


def test_the_server_runs_numpy_blas_on_one_thread():
    """BLAS's worker threads were started at the main thread's priority: a large request's numpy work, called from
    its lower-priority thread, ran on them at the normal priority. The server keeps BLAS on one thread."""
    import subprocess

    pytest.importorskip("threadpoolctl")
    code = ("from threadpoolctl import threadpool_info\n"
            "from manyfold._threads import single_threaded_blas\n"
            "blas = lambda: [i['num_threads'] for i in threadpool_info() if i['user_api'] == 'blas']\n"
            "import numpy\n"
            "print(blas())\n"
            "print(single_threaded_blas())\n"
            "print(blas())\n")
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "2", "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    before, said, after = out.stdout.strip().splitlines()
    assert before == "[2]" and said == "numpy BLAS: 1 thread" and after == "[1]"


def test_an_escalated_items_wait_for_the_generalist_is_timed():
    """The generalist stage's queue is timed: in the answer (``timings_ms["generalist_queue"]``) and the metrics."""
    gate = threading.Event()

    class Answer:
        def __init__(self, item):
            self.item, self.timings_ms = item, {"generalist": 1.0}

    def run_batch(items, flags, defer=False, snap=None):
        return [Pending(None, None, 0, i, {}) for i in items]

    def run_generalist(pending):
        if pending[0].item == "first":
            assert gate.wait(10)
        return [Answer(p.item) for p in pending]

    async def go():
        metrics = ServeMetrics()
        b = MicroBatcher(run_batch, metrics, max_batch_size=64, max_wait_ms=1, max_queue=8,
                         run_generalist=run_generalist)
        first = b.submit(["first"])
        await asyncio.sleep(0.05)
        second = b.submit(["second"])  # waits for the held call
        await asyncio.sleep(0.2)
        gate.set()
        got = await asyncio.wait_for(asyncio.gather(first, second), 5)
        await b.stop()
        return got, metrics

    (a, b_), metrics = asyncio.run(go())
    assert a[0][0].timings_ms["generalist_queue"] < 100  # called at once
    assert b_[0][0].timings_ms["generalist_queue"] >= 150  # waited for the held call
    count = next(s.value for s in metrics.stage_latency.collect()[0].samples
                 if s.name.endswith("_count") and s.labels.get("stage") == "generalist_queue")
    assert count == 2


def test_an_escalated_item_waits_for_the_generalist_until_the_deadline_then_gets_the_experts_answer():
    """``generalist_deadline_ms``: while a generalist call is held, the items waiting behind it leave the queue at
    their request's deadline with the experts' answer (``skip_generalist``), counted; the held call's own item
    waits for its call; without a deadline every item waits."""
    calls: list[list[str]] = []
    skipped: list[tuple[list[str], str]] = []

    def skip(pending, why):
        skipped.append(([p.item for p in pending], why))
        return [f"experts:{p.item}" for p in pending]

    async def go(deadline_ms):
        gen_calls: list[list[str]] = []
        gate = threading.Event()
        b = _recording_batcher(calls, gen_calls, gate, max_batch_size=64, skip_generalist=skip,
                               generalist_deadline_ms=deadline_ms)
        first = b.submit(["esc-s0"])  # its generalist call is held by the gate
        for _ in range(500):
            if gen_calls:
                break
            await asyncio.sleep(0.01)
        t0 = asyncio.get_running_loop().time()
        behind = [b.submit([f"esc-s{i}", "easy"]) for i in (1, 2)]
        done = await asyncio.wait({*behind}, timeout=2)
        waited = asyncio.get_running_loop().time() - t0
        gate.set()
        got = await asyncio.wait_for(asyncio.gather(first, *behind), 5)
        m = b.metrics.generalist_deadline._value.get()
        await b.stop()
        return [g[0] for g in got], len(done[0]), waited, gen_calls, m

    got, answered, waited, gen_calls, late = asyncio.run(go(150))
    assert answered == 2 and 0.1 < waited < 1.5  # answered at the deadline, while the call was still held
    assert got == [["ESC-S0"], ["experts:esc-s1", "EASY"], ["experts:esc-s2", "EASY"]]
    assert gen_calls == [["esc-s0"]] and late == 2  # nothing late reached the generalist
    assert sorted(i for items, _ in skipped for i in items) == ["esc-s1", "esc-s2"]
    assert all(why.startswith("generalist_deadline: the generalist had not taken it") and "generalist_deadline_ms=150"
               in why for _, why in skipped)
    skipped.clear()
    got, answered, waited, gen_calls, late = asyncio.run(go(None))
    assert answered == 0 and got == [["ESC-S0"], ["ESC-S1", "EASY"], ["ESC-S2", "EASY"]] and not skipped and late == 0
    assert gen_calls == [["esc-s0"], ["esc-s1", "esc-s2"]]  # gathered across requests once the held call ended
    with pytest.raises(ValueError, match="generalist_deadline_ms needs the generalist stage and skip_generalist"):
        _recording_batcher(calls, [], max_batch_size=64, generalist_deadline_ms=100)
