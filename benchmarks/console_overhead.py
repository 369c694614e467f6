"""Does an open web console slow ``manyfold serve`` down? (issue 15, must-show 3)

One server (uvicorn through ``serve_main``, as ``benchmarks/load_serve.py`` starts it, whose server and load
machinery this reuses) answers Poisson arrivals at ``--fraction`` (default 0.5) of the offline throughput,
single-item ``/v1/predict`` requests on CLINC150 test texts from 64 keep-alive clients, latency counted from
each request's scheduled arrival. Runs alternate: no console, then one console open on the live view (the
system Chromium, headless, driven by Playwright in a child process, polling ``/v1/console/stats`` at the
page's default interval), in pairs whose order alternates (none/console, console/none, ...) so that drift
hits both sides; both runs of a pair get the same arrivals (same seed). The figure is
``median p50 (console) / median p50 (none)`` over ``--runs`` (5) runs of each; target <= 1.05.

The browser runs on the same 2 cores as the server and the load generator (the pessimistic case: a console
on another machine costs the server only the polls). The console's polls are counted by the server
(``manyfold_http_requests_total{endpoint="/v1/console/stats"}``), so the report shows that it polled.

The assembly: ``--name`` from ``--registry`` if given, else one built here (CLINC150 with
``--per-label`` training items per label, ``--encoder`` / ``--generalist``; saved to ``--work-dir``);
``--build-only`` builds it into ``--registry`` and exits, so that the build can run before the lock is taken:

    python benchmarks/console_overhead.py --build-only --registry /tmp/console_bench_registry
    flock /tmp/manyfold-bench.lock python benchmarks/console_overhead.py --registry /tmp/console_bench_registry
Writes ``console_overhead.json`` and ``.md`` under ``--out``. Only loopback addresses are used. Run it
under the shared benchmark lock.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load_serve import drive, free_port, machine, offline, start_server, stop_server, wait_ready  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def assemble(args: argparse.Namespace) -> Any:
    """CLINC150 with ``--per-label`` training items per label, ``--encoder`` / ``--generalist``."""
    import manyfold

    ds = manyfold.load_dataset("clinc150", args.data_dir).subset(args.per_label, seed=0)
    print(f"assembling {len(ds.labels)} labels, {args.per_label} per label, encoder {args.encoder} ...", flush=True)
    return manyfold.assemble(ds, encoder=args.encoder, generalist=args.generalist, cache=False)


def build_assembly(args: argparse.Namespace) -> str:
    """The served assembly in a registry of the benchmark's own (version 1); returns the registry root."""
    import manyfold

    root = Path(args.work_dir) / "registry"
    if args.registry or args.name != "console_bench":
        asm = manyfold.Registry(args.registry).load(args.name, cache=False)
    else:
        asm = assemble(args)
    if root.exists():
        shutil.rmtree(root)
    manyfold.Registry(root).save(asm, args.name, note="console overhead benchmark")
    return str(root)


def hold_console(url: str, ready_file: str) -> None:
    """Child process: open ``url`` (the live view) in the system Chromium and keep it open until killed."""
    from playwright.sync_api import sync_playwright

    import tempfile

    profile = tempfile.mkdtemp(prefix="console_bench_profile_")
    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(profile, executable_path=os.environ.get("MANYFOLD_CHROMIUM",
                                                                                           "/usr/bin/chromium"),
                                                   headless=True, args=CHROMIUM_ARGS)
        page = ctx.new_page()
        page.goto(url)
        page.wait_for_function("() => document.getElementById('live-queue').textContent !== '\u2013'", timeout=30000)
        Path(ready_file).write_text("ready")
        while True:  # the page polls on its own timer; this process only keeps it open
            page.wait_for_timeout(1000)


def open_console(base: str, work: Path) -> subprocess.Popen:
    ready = work / "console_ready"
    ready.unlink(missing_ok=True)
    proc = subprocess.Popen([sys.executable, __file__, "--hold-console", base + "/ui#live", "--ready-file", str(ready)],
                            stdout=subprocess.DEVNULL, stderr=open(work / "console_child.log", "wb"))
    t0 = time.time()
    while not ready.exists():
        if proc.poll() is not None or time.time() - t0 > 60:
            proc.kill()
            raise RuntimeError(f"the console did not open; see {work / 'console_child.log'}")
        time.sleep(0.2)
    return proc


def close_console(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def polls(base: str) -> float:
    text = httpx.get(base + "/metrics", timeout=10).text
    return sum(float(v) for v in re.findall(
        r'^manyfold_http_requests_total\{endpoint="/v1/console/stats",[^}]*\} ([0-9.eE+-]+)$', text, re.M))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--name", default="console_bench", help="registry assembly to serve (default: build one here)")
    p.add_argument("--registry", default=None, help="registry root of --name (default $MANYFOLD_HOME/registry)")
    p.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--per-label", type=int, default=10, help="built assembly: training items per CLINC150 label")
    p.add_argument("--encoder", default="minilm", help="built assembly: encoder")
    p.add_argument("--generalist", default="minilm", help="built assembly: generalist")
    p.add_argument("--fraction", type=float, default=0.5, help="arrival rate as a share of offline throughput")
    p.add_argument("--runs", type=int, default=5, help="runs of each (none, console)")
    p.add_argument("--requests", type=int, default=600, help="requests per run")
    p.add_argument("--warmup", type=int, default=64)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--time-limit", type=float, default=60.0, help="seconds per run (a run stops there)")
    p.add_argument("--startup-limit", type=float, default=300.0)
    p.add_argument("--server-threads", type=int, default=1, help="torch threads of the server")
    p.add_argument("--settle", type=float, default=3.0, help="seconds between opening the console and the run")
    p.add_argument("--note", default="")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument("--log-dir", default="/tmp")
    p.add_argument("--work-dir", default="/tmp/manyfold_console_bench")
    p.add_argument("--build-only", action="store_true",
                   help="assemble (--per-label, --encoder, --generalist) into --registry as --name and exit, so that "
                        "the build runs outside the measured (locked) command")
    p.add_argument("--hold-console", default=None, help=argparse.SUPPRESS)
    p.add_argument("--ready-file", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.hold_console:
        hold_console(args.hold_console, args.ready_file)
        return
    if args.build_only:
        import manyfold

        v = manyfold.Registry(args.registry).save(assemble(args), args.name, note="console overhead benchmark")
        print(f"saved {args.name} v{v} in {args.registry or 'the default registry'}", flush=True)
        return
    load_at_start = os.getloadavg()
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    # what load_serve's start_server / offline read
    args.max_batch_size, args.max_wait_ms, args.max_queue, args.request_timeout_s = 64, 5.0, 1024, 120.0
    args.bench_registry = build_assembly(args)
    import manyfold

    texts = list(manyfold.load_dataset("clinc150", args.data_dir).split("test").items)
    result: dict[str, Any] = {
        "command": "flock /tmp/manyfold-bench.lock python " + " ".join(
            shlex.quote(a) for a in [os.path.relpath(__file__, Path.cwd()), *(argv if argv is not None else sys.argv[1:])]),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {**machine(), "loadavg_at_start": load_at_start},
        "note": args.note, "assembly": args.name, "fraction": args.fraction, "concurrency": args.concurrency,
        "server_threads": args.server_threads, "runs": []}
    print("running offline ...", flush=True)
    off = offline(args, texts)
    result["offline"] = off
    rate = args.fraction * off["throughput_items_per_s"]
    result["rate_rps"] = round(rate, 2)
    print(json.dumps(off), f"-> {rate:.1f} req/s", flush=True)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = start_server(args, port, True)
    try:
        result["startup_seconds"] = round(wait_ready(proc, base, args.startup_limit), 1)
        asyncio.run(drive(base, texts[::-1], args.warmup, args.concurrency, args.time_limit))  # warm-up
        for i in range(args.runs):
            order = ("none", "console") if i % 2 == 0 else ("console", "none")
            for mode in order:
                console = open_console(base, work) if mode == "console" else None
                try:
                    if console is not None:
                        time.sleep(args.settle)
                    p0, t0 = polls(base), time.time()
                    r = asyncio.run(drive(base, texts, args.requests, args.concurrency, args.time_limit, rate=rate,
                                          seed=1000 + i))
                    polled = polls(base) - p0  # the console's stats requests during the run
                    r.update(mode=mode, pair=i, console_polls=polled,
                             console_polls_per_s=round(polled / max(time.time() - t0, 1e-9), 2))
                finally:
                    if console is not None:
                        close_console(console)
                result["runs"].append(r)
                print(json.dumps({k: r[k] for k in ("mode", "pair", "ok", "failed", "p50_ms", "p99_ms",
                                                    "throughput_rps", "console_polls")}), flush=True)
                write(args, result)
    finally:
        stop_server(proc)
    result["machine"]["loadavg_at_end"] = os.getloadavg()
    write(args, result)


def summary(result: dict[str, Any]) -> dict[str, Any]:
    p50 = {m: [r["p50_ms"] for r in result["runs"] if r["mode"] == m] for m in ("none", "console")}
    if not p50["none"] or not p50["console"]:
        return {}
    med = {m: float(np.median(v)) for m, v in p50.items()}
    pairs = {}
    for r in result["runs"]:
        pairs.setdefault(r["pair"], {})[r["mode"]] = r["p50_ms"]
    per_pair = [v["console"] / v["none"] for v in pairs.values() if len(v) == 2]
    ratio = med["console"] / med["none"]
    return {"median_p50_none_ms": round(med["none"], 2), "median_p50_console_ms": round(med["console"], 2),
            "ratio": round(ratio, 4), "pair_ratios": [round(x, 4) for x in per_pair],
            "median_pair_ratio": round(float(np.median(per_pair)), 4) if per_pair else None,
            "runs_each": min(len(p50["none"]), len(p50["console"])), "target": 1.05, "holds": ratio <= 1.05}


def write(args: argparse.Namespace, result: dict[str, Any]) -> None:
    result["summary"] = summary(result)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "console_overhead.json").write_text(json.dumps(result, indent=2) + "\n")
    m = result["machine"]
    md = ["# manyfold serve: one web console open on the live view vs none", "",
          f"- command: `{result['command']}`", f"- date: {result['date']}",
          f"- machine: {m.get('cpu')} ({m.get('cpus')} CPUs), {m.get('platform')}",
          f"- load average at start (1, 5, 15 min): {', '.join(f'{x:.2f}' for x in m['loadavg_at_start'])}"
          + (f"; at end: {', '.join(f'{x:.2f}' for x in m['loadavg_at_end'])}" if "loadavg_at_end" in m else ""),
          f"- assembly: {result['assembly']}; server torch threads: {result['server_threads']}",
          f"- offline `asm.predict` (batches of 64): {result['offline']['throughput_items_per_s']} items/s; "
          f"arrivals: Poisson at {result['fraction']:.0%} of it = {result['rate_rps']} req/s, single-item "
          f"`/v1/predict`, {result['concurrency']} keep-alive clients, latency from the scheduled arrival",
          "- console: the system Chromium (headless, Playwright) on `/ui#live` at its default poll interval, on the "
          "same 2 cores as the server and the load generator",
          *([f"- note: {result['note']}"] if result.get("note") else []), "",
          "| pair | run | requests | ok | failed | req/s | p50 ms | p90 ms | p99 ms | console polls (per s) |",
          "|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["runs"]:
        md.append(f"| {r['pair']} | {r['mode']} | {r['requests']} | {r['ok']} | {r['failed']} | {r['throughput_rps']} "
                  f"| {r['p50_ms']} | {r.get('p90_ms', '')} | {r['p99_ms']} | {r['console_polls']:.0f} "
                  f"({r['console_polls_per_s']}) |")
    s = result["summary"]
    if s:
        md += ["", f"Median p50 with the console {s['median_p50_console_ms']} ms, without {s['median_p50_none_ms']} ms: "
               f"ratio **{s['ratio']:.3f}** over {s['runs_each']} runs each (target <= 1.05: "
               f"**{'holds' if s['holds'] else 'NOT met'}**); per pair: {s['pair_ratios']} "
               f"(median {s['median_pair_ratio']})."]
    (out / "console_overhead.md").write_text("\n".join(md) + "\n")


if __name__ == "__main__":
    main()
