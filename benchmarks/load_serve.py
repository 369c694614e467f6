"""Load benchmark of ``manyfold serve``: HTTP throughput and latency under 64 concurrent clients.

Starts uvicorn (through ``manyfold.serve.serve_main``) on 127.0.0.1 in a
subprocess with a registry assembly, drives it with a light load generator
(one keep-alive HTTP/1.1 connection per client on asyncio streams; a fixed number of single-item requests on CLINC150 test texts,
``--concurrency`` at a time, bounded in time too), and measures throughput,
p50/p99 latency and failures:

1. offline: ``asm.predict`` on batches of 64 of the same texts, in this process, no HTTP
   (first, so that the paced run can aim at a share of it);
2. micro-batching on, 64 closed-loop clients (each sends its next request as
   soon as the last one is answered: the server is saturated); escalated items
   wait for the generalist in a stage of their own (the server's default);
3. ``one_stage``: the same, but every batch runs through the generalist before
   any of its items is answered (``generalist_stage=False``), for contrast;
4. micro-batching off (every request encoded on its own), same clients;
5. micro-batching on while the assembly is hot-reloaded twice (must have zero failures);
6. paced (on the two-stage server, then on a one-stage one with the same arrivals): the same 64 clients, but requests arrive as a Poisson stream at
   each of ``--paced-fractions`` (default 0.8, 0.5, 0.3) of the offline throughput; a request's
   latency counts from its scheduled arrival, so waiting for a free client is
   not hidden (no coordinated omission).

Latencies are also split by path: requests answered by the experts alone
and requests escalated to the generalist.

``--hostile`` (runs ``offline,maximal,hostile``; issue 14, must-show 2), each on a server with the default
``ServeConfig`` limits and timeouts:

7. ``maximal``: one maximal request alone on an idle server, in two forms: long natural texts
   (CLINC150 test texts joined up to ``max_chars``, items up to ``max_request_chars`` characters in all)
   and dense ones (``--dense-chars`` characters of punctuation each: about one token per character,
   the most encoder work a character can buy); each answers within ``request_timeout_s`` or the
   limits are too high for this machine;
8. ``hostile``: the paced run at ``--hostile-fraction`` (default 0.5) of offline throughput twice, with
   the same arrivals: ``calm`` alone, then ``hostile`` with a hostile mix beside it, in a process of its
   own (as remote attackers would be; on the same two cores):
   ``--slow-connections`` (1,000) connections sending their request one byte per ``--slow-interval``
   (5 s) (half the headers, half the body after complete headers), reconnecting when the server closes
   them; ``--maximal-in-flight`` (2) maximal predict requests kept in flight (``--maximal-kind``: natural
   texts, or dense ones); ``--route-flood`` (8)
   clients sending 256-item ``/v1/route`` requests back to back. The well-behaved clients must see
   zero failures and a p99 at most twice the calm one.

``--speed`` (runs ``offline,batched,paced`` at ``--paced-fractions 0.5``, two stages only; issue 13,
must-show 4): the closed loop must answer >= 90% of offline throughput; before the paced run, on the same
idle server, 50 escalated texts (texts the offline run escalated) are sent one at a time, and the paced
run's p99 must be at most 3x their median latency; no failed request apart from documented 503s.

Every run sends the same list of texts: the test split in a seeded random order (``--order shuffled``, the
default: any slice holds the split's mix, 18% out of scope, intents interleaved), or in the file's order
(``--order dataset``: grouped by intent, out-of-scope items last; results before 2026-12-06 used it).

A closed loop of N clients obeys Little's law: mean latency = N / throughput.
With 64 clients, p99 <= 250 ms needs at least 256 answered requests per
second; the report prints that bound next to the measured numbers.

The assembly is loaded without the embedding cache (as the server does), so
every text goes through the real encoder. Writes ``serve_load.json`` and
``serve_load.md`` under ``--out``. Only loopback addresses are used.

    python benchmarks/load_serve.py --name clinc150 --requests 1000 --concurrency 64
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "bench-admin-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bench_registry(args: argparse.Namespace) -> str:
    """A registry of the benchmark's own with the assembly saved twice (v1, v2), so that the hot swap changes version.

    The versions hold the same weights (objects are content-addressed: the second
    save writes only a manifest); what the swap shows is a version loaded from
    disk and switched in under load, answered by the ``version`` field.
    """
    import manyfold

    root = Path(args.work_dir) / "registry"
    if root.exists():
        shutil.rmtree(root)
    asm = manyfold.Registry(args.registry).load(args.name, cache=False)
    reg = manyfold.Registry(root)
    reg.save(asm, args.name, note="load benchmark: served first")
    reg.save(asm, args.name, note="load benchmark: the hot-swap target")
    return str(root)


def start_server(args: argparse.Namespace, port: int, micro_batching: bool, generalist_stage: bool = True,
                 defaults: bool = False, paced: bool = False) -> subprocess.Popen:
    """The server in a subprocess; ``defaults``: the ServeConfig limits and timeouts as shipped (not the
    benchmark's ``--max-batch-size`` ... ``--request-timeout-s``)."""
    tuning = {} if defaults else dict(max_batch_size=args.max_batch_size, max_wait_ms=args.max_wait_ms,
                                      max_queue=args.max_queue, request_timeout_s=args.request_timeout_s)
    opts = dict(micro_batching=micro_batching, generalist_stage=generalist_stage, **tuning, log_level="warning",
                threads=args.server_threads, version=1)
    if args.generalist_deadline_ms is not None and micro_batching and generalist_stage and paced and not defaults:
        opts["generalist_deadline_ms"] = args.generalist_deadline_ms
    code = (f"from manyfold.serve import serve_main; "
            f"serve_main({args.name!r}, '127.0.0.1', {port}, {args.bench_registry!r}, **{opts!r})")
    env = {**os.environ, "MANYFOLD_ADMIN_TOKEN": TOKEN}
    log = open(Path(args.log_dir) / f"manyfold_serve_{port}.log", "wb")  # the server's log, kept for inspection
    return subprocess.Popen([sys.executable, "-c", code], env=env, stdout=log, stderr=subprocess.STDOUT)


def wait_ready(proc: subprocess.Popen, base: str, limit: float) -> float:
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < limit:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}; see its log in --log-dir")
        try:
            if httpx.get(base + "/readyz", timeout=2).status_code == 200:
                return time.perf_counter() - t0
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"server not ready within {limit} s")


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class RawConnection:
    """One keep-alive HTTP/1.1 connection on asyncio streams: a load generator that costs little CPU.

    httpx's per-request overhead (~1 ms of Python) would share the 2 cores with
    the server; this client writes the request bytes and reads the response by
    its Content-Length, nothing more. Any protocol surprise raises ``OSError``.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        if self.writer is None or self.writer.is_closing():
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        head = (f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        try:
            self.writer.write(head + body)
            await self.writer.drain()
            raw = await self.reader.readuntil(b"\r\n\r\n")
            lines = raw.decode("latin-1").split("\r\n")
            status = int(lines[0].split(" ", 2)[1])
            headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
            if "content-length" not in headers:
                raise OSError(f"response without Content-Length: {lines[0]}")
            data = await self.reader.readexactly(int(headers["content-length"]))
            if headers.get("connection", "").lower() == "close":
                self.close()
            return status, data
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, IndexError) as exc:
            self.close()
            raise OSError(f"{type(exc).__name__}: {exc}") from exc
        except OSError:
            self.close()
            raise

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.writer = None


async def drive(base: str, texts: list[str], n: int, concurrency: int, limit: float,
                during: Any = None, rate: float | None = None, seed: int = 0) -> dict[str, Any]:
    """``n`` single-item predict requests from ``concurrency`` clients, stopped at ``limit`` seconds.

    ``rate`` None: closed loop (a client sends again as soon as it is
    answered). ``rate`` (requests/s): arrivals are a Poisson stream and each
    latency counts from the request's scheduled arrival.
    """
    lat: list[float] = []
    path: list[str | None] = []  # per request: "experts" or "escalated" when answered, else None
    codes: dict[str, int] = {}
    versions: dict[str, int] = {}
    degraded: dict[str, int] = {}  # answers flagged degraded, by the reason's first word
    nxt = 0
    arrivals = np.cumsum(np.random.default_rng(seed).exponential(1.0 / rate, size=n)) if rate else None
    deadline = time.perf_counter() + limit
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=120) as c:
        start = time.perf_counter()

        host, port = base.split("//", 1)[1].split(":")
        conns = [RawConnection(host, int(port)) for _ in range(concurrency)]

        async def client(conn: RawConnection) -> None:
            nonlocal nxt
            while nxt < n and time.perf_counter() < deadline:
                i, nxt = nxt, nxt + 1
                t0 = time.perf_counter()
                if arrivals is not None:
                    t0 = start + float(arrivals[i])
                    await asyncio.sleep(max(0.0, t0 - time.perf_counter()))
                way = None
                try:
                    status, data = await conn.post("/v1/predict", json.dumps({"item": texts[i % len(texts)]}).encode())
                    lat.append(time.perf_counter() - t0)
                    code = str(status)
                    if status == 200:
                        body = json.loads(data)
                        v = str(body.get("version"))
                        versions[v] = versions.get(v, 0) + 1
                        pred = body["predictions"][0]
                        way = "escalated" if pred["escalated"] else "experts"
                        if pred.get("degraded"):
                            why = str(pred.get("reason", "")).split(":", 1)[0]
                            degraded[why] = degraded.get(why, 0) + 1
                except OSError as exc:
                    lat.append(time.perf_counter() - t0)
                    code = type(exc).__name__
                path.append(way)
                codes[code] = codes.get(code, 0) + 1

        t0 = start
        extra = [asyncio.create_task(during(c))] if during else []
        await asyncio.gather(*[client(k) for k in conns])
        for k in conns:
            k.close()
        wall = time.perf_counter() - t0
        side = [await t for t in extra]
    ok = codes.get("200", 0)
    ms = np.array(lat) * 1e3
    by = {}  # latency of the answered requests, split by path: experts only, or escalated to the generalist
    ways = np.array(path, dtype=object)
    for key in ("experts", "escalated"):
        sel = ways == key
        part = ms[sel]
        if len(part):
            by[key] = {"requests": int(sel.sum()), "p50_ms": round(float(np.percentile(part, 50)), 1),
                       "p99_ms": round(float(np.percentile(part, 99)), 1)}
    return {"by_path": by, "requests": len(lat), "ok": ok, "failed": len(lat) - ok, "status_counts": codes, "seconds": round(wall, 2),
            "throughput_rps": round(ok / wall, 1), "p50_ms": round(float(np.percentile(ms, 50)), 1),
            "p90_ms": round(float(np.percentile(ms, 90)), 1), "p99_ms": round(float(np.percentile(ms, 99)), 1),
            "versions_seen": versions, "degraded": degraded, "stopped_by_time_limit": len(lat) < n, **({"reloads": side[0]} if side else {}),
            **({"offered_rps": round(rate, 1)} if rate else {})}


def server_batches(base: str) -> dict[str, Any]:
    """The server's counters this benchmark reads from ``/metrics``: small-stage batches, and the generalist
    stage's calls (items per call and seconds per call, as cumulative histogram buckets)."""
    text = httpx.get(base + "/metrics", timeout=10).text
    get = lambda name: sum(float(m) for m in re.findall(rf"^{name} ([0-9.eE+-]+)$", text, re.M))  # noqa: E731

    def buckets(pattern: str) -> dict[float, float]:
        return {float(le): float(v) for le, v in re.findall(pattern, text, re.M) if le != "+Inf"}

    n, s = get("manyfold_batch_size_items_count"), get("manyfold_batch_size_items_sum")
    return {"batches": n, "mean_batch_items": round(s / n, 2) if n else 0.0,
            "gen_calls": get("manyfold_generalist_batch_size_items_count"),
            "gen_items": get("manyfold_generalist_batch_size_items_sum"),
            "gen_size_buckets": buckets(r'^manyfold_generalist_batch_size_items_bucket\{le="([^"]+)"\} ([0-9.eE+-]+)$'),
            "gen_time_buckets": buckets(r'^manyfold_stage_duration_seconds_bucket\{le="([^"]+)",stage="generalist"\} '
                                        r'([0-9.eE+-]+)$')}


def generalist_calls(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any] | None:
    """The generalist stage's calls between two :func:`server_batches` readings: how many, their items, the
    bucket bound of the largest (items) and of the slowest and the 99th-percentile call (seconds)."""
    calls = after["gen_calls"] - before["gen_calls"]
    if calls <= 0:
        return None

    def bound(key: str, share: float) -> float | None:  # the smallest bucket bound holding ``share`` of the calls
        for le in sorted(after[key]):
            if after[key][le] - before[key].get(le, 0.0) >= share * calls - 1e-9:
                return le
        return None  # beyond the largest bucket

    items = after["gen_items"] - before["gen_items"]
    return {"calls": int(calls), "items": int(items), "mean_items": round(items / calls, 2),
            "largest_items_at_most": bound("gen_size_buckets", 1.0),
            "p99_seconds_at_most": bound("gen_time_buckets", 0.99),
            "slowest_seconds_at_most": bound("gen_time_buckets", 1.0)}


def cpu_seconds(pid: int | None = None) -> float | None:
    """CPU seconds (user + system, every thread) that process ``pid`` has used so far (None: this process);
    None where ``/proc`` cannot tell."""
    if pid is None:
        return time.process_time()
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def run_server_phase(args: argparse.Namespace, texts: list[str], micro_batching: bool, swap: bool,
                     rate: float | None = None, generalist_stage: bool = True, hostile: bool | None = None,
                     alone: list[str] | None = None) -> dict[str, Any]:
    """One server, warmed up, then measured. ``hostile`` None: the classic phases (the benchmark's tuning);
    False / True: the server's defaults, without / with the hostile mix beside the well-behaved clients."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    load = os.getloadavg()  # other work on the machine shows here (the server is not started yet)
    proc = start_server(args, port, micro_batching, generalist_stage, defaults=hostile is not None, paced=rate is not None)
    try:
        startup = wait_ready(proc, base, args.startup_limit)
        asyncio.run(drive(base, texts[::-1], args.warmup, args.concurrency, args.time_limit))  # warm-up, not measured
        single = asyncio.run(escalated_alone(base, alone)) if alone else None  # idle, warmed up, before the load
        before = server_batches(base)

        async def reloads(c: httpx.AsyncClient) -> list[dict[str, Any]]:
            out = []
            for i in range(args.reloads):
                await asyncio.sleep(args.reload_after)
                t0 = time.perf_counter()
                try:  # v1 -> v2 -> v1 -> ...
                    r = await c.post("/v1/admin/reload", json={"wait": True, "version": 2 - i % 2},
                                     headers={"Authorization": f"Bearer {TOKEN}"}, timeout=args.time_limit)
                    got: Any = {"status": r.status_code, "body": r.json()}
                except httpx.HTTPError as exc:
                    got = {"status": None, "error": f"{type(exc).__name__}: {exc}"}
                out.append({**got, "seconds": round(time.perf_counter() - t0, 2)})
            return out

        cpu0, gen0, t_cpu = cpu_seconds(proc.pid), cpu_seconds(), time.perf_counter()
        if hostile:
            res = asyncio.run(with_hostile_mix(args, base, texts, rate))
        else:
            res = asyncio.run(drive(base, texts, args.requests, args.concurrency, args.time_limit,
                                    reloads if swap else None, rate=rate))
        cpu1, gen1, wall = cpu_seconds(proc.pid), cpu_seconds(), time.perf_counter() - t_cpu
        if cpu0 is not None and cpu1 is not None:  # how busy the cores were while it was measured
            res["cpu"] = {"server_cores": round((cpu1 - cpu0) / wall, 2),
                          "load_generator_cores": round((gen1 - gen0) / wall, 2), "cores": os.cpu_count()}
        after = server_batches(base)
        n = after["batches"] - before["batches"]
        res["server_mean_batch_items"] = round(n and (after["mean_batch_items"] * after["batches"]
                                                       - before["mean_batch_items"] * before["batches"]) / n, 2)
        gen = generalist_calls(before, after)
        if gen is not None:
            res["generalist_calls"] = gen  # the generalist stage during the measured run (not the warm-up)
        res["startup_seconds"] = round(startup, 1)
        if single is not None:
            res["escalated_alone"] = single
        res["loadavg_at_start"] = [round(x, 2) for x in load]
        return res
    finally:
        stop_server(proc)


# -- the hostile mix (issue 14) --------------------------------------------------------------------------------
def maximal_items(texts: list[str], budget: int, max_chars: int, dense: int | None = None) -> list[str]:
    """Items of one maximal request: ``budget`` characters in all, each item at most ``max_chars`` long (and at
    most 256 items). Natural: test texts joined; ``dense``: items of ``dense`` punctuation characters (a
    WordPiece tokenizer makes one token of each: the most work per character)."""
    size = min(dense or max_chars, max_chars, budget)
    out: list[str] = []
    i = 0
    while sum(map(len, out)) + 1 <= budget and len(out) < 256:
        n = min(size, budget - sum(map(len, out)))
        if dense:
            item = ("!?.," * (n // 4 + 1))[:n]
        else:
            item = ""
            while len(item) < n:
                item += texts[i % len(texts)] + " "
                i += 1
            item = item[:n].rstrip() or "x"
        out.append(item)
    return out


async def maximal_requests(args: argparse.Namespace, base: str, texts: list[str]) -> list[dict[str, Any]]:
    """One maximal request at a time on an idle server, natural then dense; seconds, status, escalated items."""
    from manyfold.serve import ServeConfig

    cfg = ServeConfig(assembly="x")
    host, port = base.split("//", 1)[1].split(":")
    out = []
    for kind, dense in (("natural", None), ("dense", args.dense_chars)):
        items = maximal_items(texts, cfg.max_request_chars, 2000, dense)
        conn = RawConnection(host, int(port))
        t0 = time.perf_counter()
        status, data = await conn.post("/v1/predict", json.dumps({"items": items}).encode())
        seconds = time.perf_counter() - t0
        conn.close()
        body = json.loads(data) if data else {}
        preds = body.get("predictions", [])
        out.append({"kind": kind, "items": len(items), "chars": sum(map(len, items)), "status": status,
                    "seconds": round(seconds, 2), "escalated": sum(p["escalated"] for p in preds),
                    "degraded": sum(p["degraded"] for p in preds),
                    "request_timeout_s": cfg.request_timeout_s, "within_timeout": status == 200
                    and seconds <= cfg.request_timeout_s, **({"error": body} if status != 200 else {})})
        print(json.dumps(out[-1]), flush=True)
    return out


class HostileMix:
    """Slow connections, maximal predict requests kept in flight and a flood of 256-item route requests."""

    def __init__(self, args: argparse.Namespace, base: str, texts: list[str]) -> None:
        from manyfold.serve import ServeConfig

        self.args = args
        self.host, port = base.split("//", 1)[1].split(":")
        self.port = int(port)
        cfg = ServeConfig(assembly="x")
        dense = args.dense_chars if args.maximal_kind == "dense" else None
        self.maximal = json.dumps({"items": maximal_items(texts, cfg.max_request_chars, 2000, dense)}).encode()
        self.route = json.dumps({"items": texts[:args.route_items]}).encode()
        self.stop_event = asyncio.Event()
        self.tasks: list[asyncio.Task] = []
        self.stats: dict[str, Any] = {"slow": {"connections": 0, "answers": {}, "closed_silently": 0,
                                               "connect_failed": 0, "held_s": []},
                                      "maximal": {"codes": {}, "seconds": []}, "route": {"codes": {}, "seconds": []}}

    async def start(self) -> None:
        a = self.args
        for i in range(a.slow_connections):
            self.tasks.append(asyncio.create_task(self.slow(i, i * a.slow_ramp / max(1, a.slow_connections))))
        for _ in range(a.maximal_in_flight):
            self.tasks.append(asyncio.create_task(self.loop("/v1/predict", self.maximal, self.stats["maximal"])))
        for _ in range(a.route_flood):
            self.tasks.append(asyncio.create_task(self.loop("/v1/route", self.route, self.stats["route"])))

    async def stop(self) -> dict[str, Any]:
        self.stop_event.set()
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        out = json.loads(json.dumps(self.stats))
        held = out["slow"].pop("held_s")
        out["slow"]["held_s_p50_max"] = [round(float(np.percentile(held, 50)), 1), round(max(held), 1)] if held else None
        for k in ("maximal", "route"):
            sec = out[k].pop("seconds")
            out[k]["answered_p50_max_s"] = [round(float(np.percentile(sec, 50)), 2), round(max(sec), 2)] if sec else None
        return out

    async def slow(self, i: int, delay: float) -> None:
        """One connection that sends its request one byte per ``--slow-interval``; reconnects when closed."""
        await asyncio.sleep(delay)
        body = b'{"item": "a slow client"}'
        head = (f"POST /v1/predict HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        st = self.stats["slow"]
        while not self.stop_event.is_set():
            try:
                reader, writer = await asyncio.open_connection(self.host, self.port)
            except OSError:
                st["connect_failed"] += 1
                await asyncio.sleep(1)
                continue
            st["connections"] += 1
            t0 = time.perf_counter()
            if i % 2:  # the body slowly, after complete headers
                writer.write(head)
                trickle = body
            else:  # the headers slowly
                trickle = head + body
            try:
                for k in range(len(trickle)):
                    writer.write(trickle[k:k + 1])
                    await writer.drain()
                    try:
                        line = await asyncio.wait_for(reader.readline(), self.args.slow_interval)
                    except asyncio.TimeoutError:
                        continue
                    if line:
                        code = line.split(b" ")[1].decode() if len(line.split(b" ")) > 1 else "?"
                        st["answers"][code] = st["answers"].get(code, 0) + 1
                    else:
                        st["closed_silently"] += 1
                    break
            except (OSError, asyncio.IncompleteReadError):
                st["closed_silently"] += 1
            finally:
                st["held_s"].append(time.perf_counter() - t0)
                writer.close()

    async def loop(self, path: str, body: bytes, st: dict[str, Any]) -> None:
        """One client sending ``body`` to ``path`` back to back (0.1 s pause after a refusal)."""
        conn = RawConnection(self.host, self.port)
        while not self.stop_event.is_set():
            t0 = time.perf_counter()
            try:
                status, _ = await conn.post(path, body)
                code = str(status)
            except OSError as exc:
                status, code = 0, type(exc).__name__
            st["codes"][code] = st["codes"].get(code, 0) + 1
            if status == 200:
                st["seconds"].append(time.perf_counter() - t0)
            else:
                await asyncio.sleep(0.1)
        conn.close()


def _hostile_process(args: argparse.Namespace, base: str, texts: list[str], conn: Any) -> None:
    """The hostile mix, in a process of its own at niceness +``--hostile-nice``: says ``"ready"`` once every
    slow connection is open and the floods run, then runs until told ``"stop"`` and sends back its statistics."""
    if args.hostile_nice > 0 and hasattr(os, "nice"):
        os.nice(args.hostile_nice)

    async def run() -> None:
        mix = HostileMix(args, base, texts)
        await mix.start()
        await asyncio.sleep(args.slow_ramp + 1.0)  # every slow connection open, the floods running
        conn.send("ready")
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)  # "stop"
        conn.send(await mix.stop())

    asyncio.run(run())


def _receive(conn: Any, proc: Any, limit: float, what: str) -> Any:
    """The next message from the hostile process, or an error naming what it failed to do."""
    t0 = time.perf_counter()
    while not conn.poll(0.2):
        if not proc.is_alive():
            raise RuntimeError(f"the hostile mix's process exited with {proc.exitcode} before {what}")
        if time.perf_counter() - t0 > limit:
            raise TimeoutError(f"the hostile mix's process did not {what} within {limit:.0f} s")
    return conn.recv()


async def with_hostile_mix(args: argparse.Namespace, base: str, texts: list[str], rate: float | None) -> dict[str, Any]:
    """The well-behaved clients' paced run with the hostile mix beside it.

    The mix runs in a process of its own, as hostile clients of a real server
    do: in the well-behaved clients' event loop, its 1,000 connections' timers
    and the floods' refusals would delay the load generator itself, and the
    well-behaved latencies would count those delays as the server's. It shares
    the machine's two cores with the server and the load generator, at niceness
    +``--hostile-nice`` (default 10): a real server's attackers spend their own
    machines' CPU, not the server's; here their traffic keeps its volume (the
    report counts their connections and requests) while their own CPU comes
    after the server's.
    """
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_hostile_process, args=(args, base, texts, child), daemon=True)
    proc.start()
    loop = asyncio.get_running_loop()
    try:
        await loop.run_in_executor(None, _receive, parent, proc, 120.0, "opening its connections")
        res = await drive(base, texts, args.requests, args.concurrency, args.time_limit, rate=rate)
        parent.send("stop")
        res["hostile_mix"] = await loop.run_in_executor(None, _receive, parent, proc, 120.0, "stopping")
    finally:
        proc.join(10)
        if proc.is_alive():
            proc.kill()
    return res


def request_texts(items: Any, order: str, seed: int) -> list[str]:
    """The texts every run sends, in this order (offline, closed loop, paced: the same list, so a paced rate
    that is a share of offline throughput is a share of the same work). ``shuffled``: CLINC150's test split
    in a seeded random order, so any slice holds the split's mix (18% out-of-scope, intents interleaved);
    ``dataset``: the file's order, grouped by intent with the out-of-scope items last (a run of 2,000
    requests then sends 13 intents' worth of near-identical questions in a row, and no out-of-scope item)."""
    texts = list(items)
    if order == "dataset":
        return texts
    return [texts[i] for i in np.random.default_rng(seed).permutation(len(texts))]


def offline(args: argparse.Namespace, texts: list[str]) -> dict[str, Any]:
    import manyfold

    from manyfold._threads import thread_budget

    manyfold.set_threads(args.server_threads or thread_budget())  # the same budget as the servers
    asm = manyfold.Registry(args.bench_registry).load(args.name, 1, cache=False)
    asm.predict(texts[-64:])  # warm-up
    n = min(args.requests, len(texts))
    t0 = time.perf_counter()
    done, escalated = 0, []
    for s in range(0, n, 64):
        if time.perf_counter() - t0 > args.time_limit:
            break
        preds = asm.predict(texts[s:s + 64])
        done += len(preds)
        escalated += [t for t, p in zip(texts[s:s + 64], preds) if p.escalated]
    wall = time.perf_counter() - t0
    n = done
    return {"items": n, "batch_size": 64, "seconds": round(wall, 2), "throughput_items_per_s": round(n / wall, 1),
            "escalated_share": round(len(escalated) / max(1, n), 4), "escalated_texts": escalated[:args.escalated_alone]}


async def escalated_alone(base: str, texts: list[str]) -> dict[str, Any]:
    """``texts`` (ones the offline run escalated) sent one at a time on an idle server: the latency of an escalated
    request alone (the yardstick of issue 13's paced p99)."""
    host, port = base.split("//", 1)[1].split(":")
    conn = RawConnection(host, int(port))
    lat, esc, codes = [], 0, {}
    for t in texts:
        t0 = time.perf_counter()
        status, data = await conn.post("/v1/predict", json.dumps({"item": t}).encode())
        lat.append(1e3 * (time.perf_counter() - t0))
        codes[str(status)] = codes.get(str(status), 0) + 1
        if status == 200:
            esc += bool(json.loads(data)["predictions"][0]["escalated"])
    conn.close()
    return {"requests": len(lat), "escalated": esc, "status_counts": codes,
            "p50_ms": round(float(np.percentile(lat, 50)), 1), "p90_ms": round(float(np.percentile(lat, 90)), 1)}


def machine() -> dict[str, Any]:
    cpu = ""
    try:
        cpu = next(ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"platform": platform.platform(), "python": platform.python_version(), "cpu": cpu,
            "cpus": os.cpu_count(), "loadavg_at_start": os.getloadavg()}


def _loadavg(v: Any) -> str:
    return ", ".join(f"{x:.2f}" for x in v) if v else "not recorded"


def _order(result: dict[str, Any]) -> str:
    if result.get("order", "dataset") == "dataset":
        return "in the file's order (grouped by intent, out-of-scope items last)"
    return f"in a random order (seed {result.get('seed')}; --order dataset sends them in the file's order)"


def write(args: argparse.Namespace, result: dict[str, Any]) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"serve_load{args.suffix}.json").write_text(json.dumps(result, indent=2) + "\n")
    off = result.get("offline")
    rows = ["| run | load | requests | ok | failed | throughput (req/s) | share of offline | p50 ms | p90 ms | p99 ms "
            "| experts-only p50 / p99 ms | escalated p50 / p99 ms | mean batch |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for k, r in result["phases"].items():
        load = f"Poisson {r['offered_rps']} req/s" if "offered_rps" in r else "closed loop"
        share = f"{r['throughput_rps'] / off['throughput_items_per_s']:.0%}" if off else ""
        path = {key: (f"{v['p50_ms']} / {v['p99_ms']} ({v['requests']})" if (v := r.get("by_path", {}).get(key)) else "")
                for key in ("experts", "escalated")}
        rows.append(f"| {k} | {load} | {r['requests']} | {r['ok']} | {r['failed']} | {r['throughput_rps']} | {share} | "
                    f"{r['p50_ms']} | {r.get('p90_ms', '')} | {r['p99_ms']} | {path['experts']} | {path['escalated']} | "
                    f"{r.get('server_mean_batch_items', '')} |")
    busy = [f"- {k}: the server used {c['server_cores']} of {c['cores']} cores on average, the load generator "
            f"{c['load_generator_cores']} (together {(c['server_cores'] + c['load_generator_cores']) / c['cores']:.0%} "
            "of the machine)" for k, r in result["phases"].items() if (c := r.get("cpu"))]
    if busy:
        rows += ["", "CPU while each run was measured (process CPU time over the run's wall time; "
                 "the hostile mix's own process is not counted):", "", *busy]
    md = [f"# manyfold serve: load benchmark ({result['assembly']})", "",
          f"- command: `{result['command']}`", f"- date: {result['date']}",
          f"- machine: {result['machine']['cpu']} ({result['machine']['cpus']} CPUs), {result['machine']['platform']}",
          f"- load average (1, 5, 15 min) at start: {_loadavg(result['machine'].get('loadavg_at_start'))}"
          + (f"; at end: {_loadavg(result['machine']['loadavg_at_end'])}" if 'loadavg_at_end' in result['machine'] else ""),
          f"- **{result['note']}**", f"- request texts: CLINC150 test split, {_order(result)}",
          f"- generalist_deadline_ms (paced two-stage servers only): {result.get('generalist_deadline_ms') or 'none (as shipped)'}", f"- thread budget (servers and offline run): {result['server_threads'] or 'every core (the default)'}", f"- load: {result['concurrency']} concurrent clients, single-item requests on "
          f"CLINC150 test texts, one keep-alive HTTP/1.1 connection per client (asyncio streams), 127.0.0.1", "", *rows, ""]
    if off:
        md.append(f"Offline `asm.predict` on batches of {off['batch_size']} (same texts, no HTTP): "
                  f"**{off['throughput_items_per_s']} items/s** ({off['items']} items in {off['seconds']} s).")
    if off:
        need = result["concurrency"] / 0.25
        md += ["", f"Little's law for {result['concurrency']} closed-loop clients: mean latency = "
               f"{result['concurrency']} / throughput, so p99 <= 250 ms needs >= {need:.0f} answered requests/s; "
               f"this assembly answers {off['throughput_items_per_s']} items/s offline on this machine, so the closed-loop "
               f"runs cannot get below ~{1e3 * result['concurrency'] / off['throughput_items_per_s']:.0f} ms mean latency here."]
        checks = []
        for key, label in (("batched", "two stages"), ("one_stage", "one stage")):
            b = result["phases"].get(key)
            if b:
                checks.append(f"closed loop, micro-batching ({label}): {b['throughput_rps'] / off['throughput_items_per_s']:.0%} "
                              f"of offline throughput (target >= 80%: "
                              f"{'holds' if b['throughput_rps'] >= 0.8 * off['throughput_items_per_s'] else 'NOT met'}), "
                              f"p99 {b['p99_ms']} ms (target <= 250 ms: {'holds' if b['p99_ms'] <= 250 else 'NOT met'}), "
                              f"{b['failed']} failed")
        for name, pc in result["phases"].items():
            if "offered_rps" in pc:
                checks.append(f"{name} (Poisson, {pc['offered_rps']} req/s offered): {pc['throughput_rps']} req/s answered = "
                              f"{pc['throughput_rps'] / off['throughput_items_per_s']:.0%} of offline, p50 {pc['p50_ms']} ms, "
                              f"p99 {pc['p99_ms']} ms (<= 250 ms: {'yes' if pc['p99_ms'] <= 250 else 'no'}), {pc['failed']} failed")
        for name, pc in result["phases"].items():
            one = pc.get("escalated_alone")
            if one:
                ok = pc["p99_ms"] <= 3 * one["p50_ms"] and pc["failed"] == 0
                checks.append(f"{name}: p99 {pc['p99_ms']} ms against 3x the median of {one['requests']} escalated "
                              f"requests alone on the idle server ({one['p50_ms']} ms; {one['escalated']} of them "
                              f"escalated): {pc['p99_ms'] / one['p50_ms']:.2f}x, {pc['failed']} failed (target <= 3x, "
                              f"0 failed: {'holds' if ok else 'NOT met'})")
        for name, pc in result["phases"].items():
            g = pc.get("generalist_calls")
            if g and "offered_rps" in pc:
                checks.append(f"{name}: the generalist stage made {g['calls']} calls for {g['items']} escalated items "
                              f"(mean {g['mean_items']} per call, the largest at most {g['largest_items_at_most']} "
                              f"items); 99% of calls took at most {g['p99_seconds_at_most']} s, the slowest at most "
                              f"{g['slowest_seconds_at_most']} s (histogram bucket bounds; an item waits for its "
                              "whole call)")
            if "offered_rps" in pc and (pc.get("degraded") or result.get("generalist_deadline_ms") is not None):
                esc = (pc.get("by_path") or {}).get("escalated", {}).get("requests", 0)
                late = (pc.get("degraded") or {}).get("generalist_deadline", 0)
                checks.append(f"{name}: generalist_deadline_ms {result.get('generalist_deadline_ms')}: {late} of the "
                              f"{esc} escalated answers were the experts' (degraded: the generalist had not taken "
                              f"them in time); all degraded answers by reason: {pc.get('degraded') or {}}")
        if result.get("speed") and result["phases"].get("batched"):
            b = result["phases"]["batched"]
            share = b["throughput_rps"] / off["throughput_items_per_s"]
            checks.append(f"closed loop: {share:.0%} of offline throughput (issue 13 target >= 90%: "
                          f"{'holds' if share >= 0.9 else 'NOT met'}); offline escalated "
                          f"{100 * off.get('escalated_share', float('nan')):.1f}% of items")
        hs = result["phases"].get("hot_swap")
        if hs:
            checks.append(f"hot swap: {hs['failed']} failed requests across {len(hs.get('reloads') or [])} reloads "
                          f"(versions answered: {hs['versions_seen']})")
        md += ["", "Targets:", *[f"- {c}" for c in checks]]
    if "hot_swap" in result["phases"]:
        md += ["", f"Hot swap: reloads during the run: {result['phases']['hot_swap'].get('reloads')}"]
    if result.get("maximal"):
        md += ["", "Maximal requests alone on an idle server with the default limits (`max_request_chars` characters):"]
        for m in result["maximal"]:
            md.append(f"- {m['kind']}: {m['items']} items, {m['chars']:,} characters, {m['escalated']} escalated "
                      f"({m.get('degraded', 0)} of them over max_escalated_chars, degraded): "
                      f"status {m['status']} in {m['seconds']} s (request_timeout_s {m['request_timeout_s']}: "
                      f"{'within' if m['within_timeout'] else 'NOT within'})")
    calm, hot = (result["phases"].get(f"hostile_{k}") for k in ("calm", "mix"))
    if calm and hot:
        ratio = hot["p99_ms"] / calm["p99_ms"] if calm["p99_ms"] else float("inf")
        ok = hot["failed"] == 0 and calm["failed"] == 0 and ratio <= 2.0
        mix = hot.get("hostile_mix", {})
        md += ["", f"Hostile mix at {result.get('hostile_fraction')} of offline throughput (same arrivals, default "
               f"server settings): well-behaved p99 {calm['p99_ms']} ms calm, {hot['p99_ms']} ms with the mix "
               f"({ratio:.2f}x; target <= 2x), failures {calm['failed']} / {hot['failed']} (target 0): "
               f"**{'holds' if ok else 'NOT met'}**. Load average (1, 5, 15 min) before each server started: "
               f"calm {_loadavg(calm.get('loadavg_at_start'))}, with the mix {_loadavg(hot.get('loadavg_at_start'))}. "
               f"The hostile clients run in a process of their own (on the same cores, niceness "
               f"+{result.get('hostile_nice', 0)}), not in the well-behaved clients' event loop.",
               f"- slow connections: {mix.get('slow')}", f"- maximal predict in flight: {mix.get('maximal')}",
               f"- 256-item route flood: {mix.get('route')}"]
    (out / f"serve_load{args.suffix}.md").write_text("\n".join(md) + "\n")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--name", default="clinc150", help="registry assembly to serve")
    p.add_argument("--registry", default=None, help="registry root (default $MANYFOLD_HOME/registry)")
    p.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--requests", type=int, default=1000, help="measured requests per run")
    p.add_argument("--warmup", type=int, default=64)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--time-limit", type=float, default=150.0, help="seconds per run (a run stops there)")
    p.add_argument("--startup-limit", type=float, default=300.0)
    p.add_argument("--max-batch-size", type=int, default=64)
    p.add_argument("--max-wait-ms", type=float, default=5.0)
    p.add_argument("--max-queue", type=int, default=1024)
    p.add_argument("--request-timeout-s", type=float, default=120.0,
                   help="the classic runs' server timeout (the maximal and hostile runs use the server's defaults)")
    p.add_argument("--server-threads", type=int, default=None,
                   help="the thread budget of the servers and of the offline run (manyfold.set_threads; default: "
                        "every core)")
    p.add_argument("--reloads", type=int, default=2, help="hot reloads during the hot-swap run")
    p.add_argument("--reload-after", type=float, default=2.0, help="seconds before each reload")
    p.add_argument("--runs", default="offline,batched,one_stage,unbatched,hot_swap,paced")
    p.add_argument("--paced-fractions", default="0.8,0.5,0.3",
                   help="paced runs: arrival rates as shares of offline throughput (comma-separated)")
    p.add_argument("--no-paced-one-stage", dest="paced_one_stage", action="store_false",
                   help="skip the one-stage server in the paced runs (by default each rate runs on both)")
    p.add_argument("--speed", action="store_true",
                   help="run offline, batched and paced at 0.5 with the escalated-alone yardstick (issue 13) "
                        "instead of --runs")
    p.add_argument("--escalated-alone", type=int, default=50,
                   help="escalated texts sent one at a time on the idle server before each paced run")
    p.add_argument("--hostile", action="store_true",
                   help="run offline, maximal and hostile (the hostile mix of issue 14) instead of --runs")
    p.add_argument("--hostile-fraction", type=float, default=0.5, help="hostile run: arrivals as a share of offline")
    p.add_argument("--slow-connections", type=int, default=1000)
    p.add_argument("--slow-interval", type=float, default=5.0, help="seconds between the slow clients' bytes")
    p.add_argument("--slow-ramp", type=float, default=5.0, help="seconds over which the slow connections open")
    p.add_argument("--hostile-nice", type=int, default=10,
                   help="niceness added to the hostile mix's process (0: the same priority as the server)")
    p.add_argument("--maximal-in-flight", type=int, default=2)
    p.add_argument("--maximal-kind", choices=("natural", "dense"), default="natural",
                   help="hostile run: the maximal requests kept in flight hold natural or dense texts")
    p.add_argument("--route-flood", type=int, default=8, help="clients sending route requests back to back")
    p.add_argument("--route-items", type=int, default=256)
    p.add_argument("--dense-chars", type=int, default=384,
                   help="maximal run: characters per dense item (mpnet reads 384 tokens)")
    p.add_argument("--generalist-deadline-ms", type=float, default=None,
                   help="generalist_deadline_ms of the paced runs' two-stage servers (default: none, as shipped; the "
                        "closed loop and the offline run never have one); the report counts the answers it degraded")
    p.add_argument("--order", choices=("shuffled", "dataset"), default="shuffled",
                   help="the test texts in a seeded random order (the split's mix of intents and out-of-scope items "
                        "throughout), or in the file's order (grouped by intent, out-of-scope items last)")
    p.add_argument("--seed", type=int, default=0, help="the shuffle's seed (--order shuffled)")
    p.add_argument("--note", default="", help="a line printed in the report (e.g. what else ran on the machine)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument("--suffix", default="", help="result files: serve_load<suffix>.json / .md")
    p.add_argument("--log-dir", default="/tmp", help="where the servers' logs go")
    p.add_argument("--work-dir", default="/tmp/manyfold_load_bench", help="the benchmark's own registry goes here")
    args = p.parse_args(argv)
    if args.hostile and args.speed:
        p.error("--hostile and --speed are two separate runs: give one")
    if args.hostile:
        args.runs = "offline,maximal,hostile"
    if args.speed:
        args.runs, args.paced_fractions, args.paced_one_stage = "offline,batched,paced", "0.5", False
    args.bench_registry = bench_registry(args)
    import manyfold

    texts = request_texts(manyfold.load_dataset("clinc150", args.data_dir).split("test").items, args.order, args.seed)
    runs = args.runs.split(",")
    result: dict[str, Any] = {
        "command": "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(__file__, Path.cwd()), *sys.argv[1:]]),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
        "note": (args.note + "; " if args.note else "") + "the load generator runs on the same cores as the server",
        "assembly": args.name, "concurrency": args.concurrency, "server_threads": args.server_threads, "phases": {},
        "order": args.order, "seed": args.seed, "generalist_deadline_ms": args.generalist_deadline_ms,
        "speed": args.speed}
    if "offline" in runs:
        print("running offline ...", flush=True)
        result["offline"] = offline(args, texts)
        print(json.dumps(result["offline"]), flush=True)
    # (run, micro-batching, hot swap, paced rate, generalist stage)
    phases = [("batched", True, False, None, True), ("one_stage", True, False, None, False),
              ("unbatched", False, False, None, False), ("hot_swap", True, True, None, True)]
    if "paced" in runs:
        if "offline" not in result:
            raise SystemExit("the paced runs need the offline run (their rates are shares of offline throughput)")
        for f in (float(v) for v in args.paced_fractions.split(",")):
            rate = f * result["offline"]["throughput_items_per_s"]
            phases.append((f"paced_{int(round(100 * f))}pct", True, False, rate, True))
            if args.paced_one_stage:  # the same arrivals (same seed) on a one-stage server
                phases.append((f"paced_{int(round(100 * f))}pct_one_stage", True, False, rate, False))
    alone = (result.get("offline") or {}).get("escalated_texts")
    for run, mb, swap, rate, stage in phases:
        if run in runs or run.startswith("paced"):
            print(f"running {run} ...", flush=True)
            paced_two_stage = run.startswith("paced") and stage
            result["phases"][run] = run_server_phase(args, texts, mb, swap, rate, stage,
                                                     alone=alone if paced_two_stage else None)
            print(json.dumps(result["phases"][run]), flush=True)
            write(args, result)
    if "maximal" in runs:
        print("running maximal ...", flush=True)
        port = free_port()
        proc = start_server(args, port, True, defaults=True)
        try:
            base = f"http://127.0.0.1:{port}"
            result["maximal_startup_seconds"] = round(wait_ready(proc, base, args.startup_limit), 1)
            asyncio.run(drive(base, texts[::-1], args.warmup, 4, args.time_limit))  # warm-up
            result["maximal"] = asyncio.run(maximal_requests(args, base, texts))
        finally:
            stop_server(proc)
        write(args, result)
    if "hostile" in runs:
        if "offline" not in result:
            raise SystemExit("the hostile run needs the offline run (its rate is a share of offline throughput)")
        rate = args.hostile_fraction * result["offline"]["throughput_items_per_s"]
        result["hostile_fraction"] = args.hostile_fraction
        result["hostile_nice"] = args.hostile_nice
        for key, mix in (("hostile_calm", False), ("hostile_mix", True)):
            print(f"running {key} ...", flush=True)
            result["phases"][key] = run_server_phase(args, texts, True, False, rate, True, hostile=mix)
            print(json.dumps(result["phases"][key]), flush=True)
            write(args, result)
    result["machine"]["loadavg_at_end"] = os.getloadavg()
    write(args, result)


if __name__ == "__main__":
    main()
