"""Load benchmark of ``manyfold serve``: HTTP throughput and latency under 64 concurrent clients.

Starts uvicorn (through ``manyfold.serve.serve_main``) on 127.0.0.1 in a
subprocess with a registry assembly, drives it with an httpx AsyncClient load
generator (a fixed number of single-item requests on CLINC150 test texts,
``--concurrency`` at a time, bounded in time too), and measures throughput,
p50/p99 latency and failures:

1. micro-batching on;
2. micro-batching off (every request encoded on its own);
3. micro-batching on while the assembly is hot-reloaded twice (must have zero failures);
4. offline: ``asm.predict`` on batches of 64 of the same texts, in this process, no HTTP.

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


def start_server(args: argparse.Namespace, port: int, micro_batching: bool) -> subprocess.Popen:
    opts = dict(micro_batching=micro_batching, max_batch_size=args.max_batch_size, max_wait_ms=args.max_wait_ms,
                max_queue=args.max_queue, request_timeout_s=args.request_timeout_s, log_level="warning",
                threads=args.server_threads)
    code = (f"from manyfold.serve import serve_main; "
            f"serve_main({args.name!r}, '127.0.0.1', {port}, {args.registry!r}, **{opts!r})")
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


async def drive(base: str, texts: list[str], n: int, concurrency: int, limit: float,
                during: Any = None) -> dict[str, Any]:
    """``n`` single-item predict requests, ``concurrency`` in flight, stopped at ``limit`` seconds."""
    lat: list[float] = []
    codes: dict[str, int] = {}
    versions: dict[str, int] = {}
    nxt = 0
    deadline = time.perf_counter() + limit
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=120) as c:
        async def client() -> None:
            nonlocal nxt
            while nxt < n and time.perf_counter() < deadline:
                i, nxt = nxt, nxt + 1
                t0 = time.perf_counter()
                try:
                    r = await c.post("/v1/predict", json={"item": texts[i % len(texts)]})
                    code = str(r.status_code)
                    if r.status_code == 200:
                        v = str(r.json().get("version"))
                        versions[v] = versions.get(v, 0) + 1
                except httpx.HTTPError as exc:
                    code = type(exc).__name__
                lat.append(time.perf_counter() - t0)
                codes[code] = codes.get(code, 0) + 1

        t0 = time.perf_counter()
        extra = [asyncio.create_task(during(c))] if during else []
        await asyncio.gather(*[client() for _ in range(concurrency)])
        wall = time.perf_counter() - t0
        side = [await t for t in extra]
    ok = codes.get("200", 0)
    ms = np.array(lat) * 1e3
    return {"requests": len(lat), "ok": ok, "failed": len(lat) - ok, "status_counts": codes, "seconds": round(wall, 2),
            "throughput_rps": round(ok / wall, 1), "p50_ms": round(float(np.percentile(ms, 50)), 1),
            "p90_ms": round(float(np.percentile(ms, 90)), 1), "p99_ms": round(float(np.percentile(ms, 99)), 1),
            "versions_seen": versions, "stopped_by_time_limit": len(lat) < n, **({"reloads": side[0]} if side else {})}


def server_batches(base: str) -> dict[str, float]:
    text = httpx.get(base + "/metrics", timeout=10).text
    get = lambda name: sum(float(m) for m in re.findall(rf"^{name} ([0-9.eE+-]+)$", text, re.M))  # noqa: E731
    n, s = get("manyfold_batch_size_items_count"), get("manyfold_batch_size_items_sum")
    return {"batches": n, "mean_batch_items": round(s / n, 2) if n else 0.0}


def run_server_phase(args: argparse.Namespace, texts: list[str], micro_batching: bool, swap: bool) -> dict[str, Any]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = start_server(args, port, micro_batching)
    try:
        startup = wait_ready(proc, base, args.startup_limit)
        asyncio.run(drive(base, texts[::-1], args.warmup, args.concurrency, args.time_limit))  # warm-up, not measured
        before = server_batches(base)

        async def reloads(c: httpx.AsyncClient) -> list[dict[str, Any]]:
            out = []
            for _ in range(args.reloads):
                await asyncio.sleep(args.reload_after)
                t0 = time.perf_counter()
                try:
                    r = await c.post("/v1/admin/reload", json={"wait": True},
                                     headers={"Authorization": f"Bearer {TOKEN}"}, timeout=args.time_limit)
                    got: Any = {"status": r.status_code, "body": r.json()}
                except httpx.HTTPError as exc:
                    got = {"status": None, "error": f"{type(exc).__name__}: {exc}"}
                out.append({**got, "seconds": round(time.perf_counter() - t0, 2)})
            return out

        res = drive(base, texts, args.requests, args.concurrency, args.time_limit, reloads if swap else None)
        res = asyncio.run(res)
        after = server_batches(base)
        n = after["batches"] - before["batches"]
        res["server_mean_batch_items"] = round(n and (after["mean_batch_items"] * after["batches"]
                                                       - before["mean_batch_items"] * before["batches"]) / n, 2)
        res["startup_seconds"] = round(startup, 1)
        return res
    finally:
        stop_server(proc)


def offline(args: argparse.Namespace, texts: list[str]) -> dict[str, Any]:
    import manyfold

    if args.server_threads:
        import torch

        torch.set_num_threads(args.server_threads)  # the same setting as the servers
    asm = manyfold.Registry(args.registry).load(args.name, cache=False)
    asm.predict(texts[-64:])  # warm-up
    n = min(args.requests, len(texts))
    t0 = time.perf_counter()
    done = 0
    for s in range(0, n, 64):
        if time.perf_counter() - t0 > args.time_limit:
            break
        done += len(asm.predict(texts[s:s + 64]))
    wall = time.perf_counter() - t0
    n = done
    return {"items": n, "batch_size": 64, "seconds": round(wall, 2), "throughput_items_per_s": round(n / wall, 1)}


def machine() -> dict[str, Any]:
    cpu = ""
    try:
        cpu = next(ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"platform": platform.platform(), "python": platform.python_version(), "cpu": cpu,
            "cpus": os.cpu_count(), "loadavg_at_start": os.getloadavg()}


def write(args: argparse.Namespace, result: dict[str, Any]) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"serve_load{args.suffix}.json").write_text(json.dumps(result, indent=2) + "\n")
    rows = ["| run | requests | ok | failed | throughput (req/s) | p50 ms | p99 ms | mean batch |", "|---|---|---|---|---|---|---|---|"]
    for k, r in result["phases"].items():
        rows.append(f"| {k} | {r['requests']} | {r['ok']} | {r['failed']} | {r['throughput_rps']} | {r['p50_ms']} | "
                    f"{r['p99_ms']} | {r.get('server_mean_batch_items', '')} |")
    off = result.get("offline")
    md = [f"# manyfold serve: load benchmark ({result['assembly']})", "",
          f"- command: `{result['command']}`", f"- date: {result['date']}",
          f"- machine: {result['machine']['cpu']} ({result['machine']['cpus']} CPUs), {result['machine']['platform']}",
          f"- **{result['note']}**", f"- server torch threads: {result['server_threads'] or 'torch default'}", f"- load: {result['concurrency']} concurrent clients, single-item requests on "
          f"CLINC150 test texts, httpx AsyncClient, 127.0.0.1", "", *rows, ""]
    if off:
        md.append(f"Offline `asm.predict` on batches of {off['batch_size']} (same texts, no HTTP): "
                  f"**{off['throughput_items_per_s']} items/s** ({off['items']} items in {off['seconds']} s).")
    if "hot_swap" in result["phases"]:
        md += ["", f"Hot swap: reloads during the run: {result['phases']['hot_swap'].get('reloads')}"]
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
    p.add_argument("--request-timeout-s", type=float, default=120.0)
    p.add_argument("--server-threads", type=int, default=None, help="torch threads of the server (default: torch's)")
    p.add_argument("--reloads", type=int, default=2, help="hot reloads during the hot-swap run")
    p.add_argument("--reload-after", type=float, default=2.0, help="seconds before each reload")
    p.add_argument("--runs", default="batched,unbatched,hot_swap,offline")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument("--suffix", default="", help="result files: serve_load<suffix>.json / .md")
    p.add_argument("--log-dir", default="/tmp", help="where the servers' logs go")
    args = p.parse_args(argv)
    import manyfold

    texts = list(manyfold.load_dataset("clinc150", args.data_dir).split("test").items)
    runs = args.runs.split(",")
    result: dict[str, Any] = {
        "command": "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(__file__, Path.cwd()), *sys.argv[1:]]),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
        "note": "numbers taken on a shared 2-core machine (other jobs were running); the load generator runs on the "
                "same cores as the server",
        "assembly": args.name, "concurrency": args.concurrency, "server_threads": args.server_threads, "phases": {}}
    for run, mb, swap in (("batched", True, False), ("unbatched", False, False), ("hot_swap", True, True)):
        if run in runs:
            print(f"running {run} ...", flush=True)
            result["phases"][run] = run_server_phase(args, texts, mb, swap)
            print(json.dumps(result["phases"][run]), flush=True)
            write(args, result)
    if "offline" in runs:
        print("running offline ...", flush=True)
        result["offline"] = offline(args, texts)
        print(json.dumps(result["offline"]), flush=True)
    result["machine"]["loadavg_at_end"] = os.getloadavg()
    write(args, result)


if __name__ == "__main__":
    main()
