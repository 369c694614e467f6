"""A toy labelled text set (each label has words of its own) and a loopback HTTP server that records what it is sent.

No shared data, no model: a hashing encoder separates the labels, so an assembly builds in a second or two.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from manyfold import Dataset, Split

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


# -- fixtures the serving tests share (a module imports them: ``from _toy import asm, ds``) ----------------------


@pytest.fixture(scope="module")
def ds() -> Dataset:
    """The toy data set: what conftest's ``toy_asm`` is built on."""
    return toy_dataset()


@pytest.fixture(scope="module")
def asm(toy_asm):
    """conftest's ``toy_asm`` (built once a session on :func:`toy_dataset` with ENC and GEN, copied per module)."""
    return toy_asm
