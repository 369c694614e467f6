"""A toy labelled text set (each label has words of its own), a loopback HTTP server that records what it is sent,
and the helpers the serving tests share: polling with a deadline, an app under uvicorn in a thread.

No shared data, no model: a hashing encoder separates the labels, so an assembly builds in a second or two.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest

from manyfold import Dataset, Split

T = TypeVar("T")

ENC, GEN = "hashing:dim=64", "hashing:dim=128"
DOMAINS = ("alpha", "beta", "gamma")


def toy_texts(rng: np.random.Generator, label: int, n: int) -> list[str]:
    words = [f"w{label}x{j}" for j in range(6)] + ["please", "now", "the", "my"]
    return [" ".join(rng.choice(words, size=5)) for _ in range(n)]


def toy_rows(n_labels: int = 6, per: int = 8) -> dict[str, list[tuple[str, str]]]:
    """``{split: [(text, label), ...]}``; label ``intent<k>`` belongs to domain ``DOMAINS[k % 3]``; plus out_of_scope."""
    rng = np.random.default_rng(0)
    out: dict[str, list[tuple[str, str]]] = {}
    for s, n in (("train", per), ("val", per // 2), ("test", per // 2)):
        rows = []
        for k in range(n_labels):
            rows += [(t, f"intent{k}") for t in toy_texts(rng, k, n)]
        rows += [(" ".join(rng.choice([f"z{j}" for j in range(40)], size=5)), "out_of_scope") for _ in range(n)]
        out[s] = rows
    return out


def toy_dataset(n_labels: int = 6, per: int = 8) -> Dataset:
    rows = toy_rows(n_labels, per)
    splits = {s: Split([t for t, _ in r], np.array([lab for _, lab in r])) for s, r in rows.items()}
    return Dataset("toy", splits, {f"intent{k}": DOMAINS[k % 3] for k in range(n_labels)}, "out_of_scope")


def toy_csv(path: Path, n_labels: int = 6, per: int = 8) -> Path:
    """The toy set as one CSV file (text,label,domain), for a dataset with a reference."""
    rows = [r for rs in toy_rows(n_labels, per).values() for r in rs]
    lines = ["text,label,domain"] + [f"{t},{lab},{DOMAINS[int(lab[6:]) % 3] if lab != 'out_of_scope' else ''}"
                                     for t, lab in rows]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


class Capture:
    """A loopback OpenAI-compatible endpoint that records every request (path, Authorization, body) it gets.

    It answers ``intent<k>`` for a text holding a word of that label, else ``out_of_scope``.
    """

    def __init__(self) -> None:
        seen = self.seen = []

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                seen.append({"path": self.path, "authorization": self.headers.get("Authorization"), "body": body})
                text = body["messages"][-1]["content"]
                k = next((w[1] for w in text.split() if w.startswith("w") and "x" in w), None)
                data = json.dumps({"choices": [{"message": {"content": f"intent{k}" if k else "out_of_scope"}}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "Capture":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


# -- waiting for a server -----------------------------------------------------------------------------------------


def wait_until(check: Callable[[], T], *, timeout: float, what: str, interval: float = 0.05) -> T:
    """Call ``check()`` until it returns something truthy, and return that; an AssertionError naming ``what``
    (and the last value) once ``timeout`` seconds have passed."""
    end = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() >= end:
            raise AssertionError(f"{what}: not within {timeout} s (last: {got!r})")
        time.sleep(interval)


def answers_ready(base: str) -> bool:
    """Whether ``GET {base}/readyz`` answers 200 now (a refused connection or a timeout: not yet)."""
    import httpx

    try:
        return httpx.get(base + "/readyz", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


@contextmanager
def uvicorn_in_thread(app: Any, **options: Any) -> Iterator[tuple[Any, int]]:
    """``app`` under uvicorn on a free loopback port, in a thread, until the block ends; yields ``(server, port)``
    once it listens. ``options`` go to ``uvicorn.Config`` (defaults: errors logged only, lifespan on)."""
    uvicorn = pytest.importorskip("uvicorn")
    server = uvicorn.Server(uvicorn.Config(app, **{"host": "127.0.0.1", "port": 0, "log_level": "error",
                                                   "lifespan": "on", **options}))
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    try:
        wait_until(lambda: server.started or not t.is_alive(), timeout=10, what="uvicorn listening")
        assert server.started, "uvicorn stopped before it listened (see the log above)"
        yield server, server.servers[0].sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        t.join(10)


# -- fixtures the serving tests share (a module imports them: ``from _toy import asm, ds``) ----------------------


@pytest.fixture(scope="module")
def ds() -> Dataset:
    """The toy data set: what conftest's ``toy_asm`` is built on."""
    return toy_dataset()


@pytest.fixture(scope="module")
def asm(toy_asm):
    """conftest's ``toy_asm`` (built once a session on :func:`toy_dataset` with ENC and GEN, copied per module)."""
    return toy_asm
