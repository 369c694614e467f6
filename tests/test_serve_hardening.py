"""Issue 14, defects 2, 3, 4, 5, 7 and 8 on the HTTP API: a per-request work budget under admission control (work
of a caller that has gone is dropped), slow clients timed out and connections capped, the version of the snapshot
a batch ran on, a private rotated request log, the error contract for unreadable bodies and strict types (admin
authenticates first), and /v1/route under admission control."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
import threading
import time

import pytest
from _toy import asm, uvicorn_in_thread  # noqa: F401 (asm: a fixture, conftest's toy_asm)

pytest.importorskip("fastapi")
pytest.importorskip("prometheus_client")
httpx = pytest.importorskip("httpx")

import manyfold  # noqa: E402
from manyfold.serve import ServeConfig, create_app  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

TOKEN = "s3cret-admin"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


class GatedEncoder:
    """The real encoder, recording every batch; a batch holding an item that starts with "hold" waits for ``gate``."""

    def __init__(self, enc) -> None:
        self.enc, self.modality = enc, getattr(enc, "modality", None)
        self.calls: list[list[str]] = []
        self.gate, self.entered = threading.Event(), threading.Event()

    def encode(self, items, **kw):
        items = list(items)
        self.calls.append(items)
        if any(str(it).startswith("hold") for it in items):
            self.entered.set()
            assert self.gate.wait(10), "the test never opened the gate"
        return self.enc.encode(items, **kw)

    def seen(self) -> list[str]:
        return [it for c in self.calls for it in c]


def _gated(asm):
    import copy

    new = copy.copy(asm)
    new.encoder = GatedEncoder(asm.encoder)
    return new


async def _run(app, fn):
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t", timeout=20) as c:
            return await fn(c)


async def _entered(enc: GatedEncoder) -> None:
    assert await asyncio.to_thread(enc.entered.wait, 5), "the held batch never reached the encoder"


def _metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
    return total


def _texts(k: int, n: int, tag: str) -> list[str]:
    """``n`` texts of label ``intent<k>``, each 20 characters (``tag`` keeps them apart)."""
    return [f"w{k}x1 w{k}x2 {tag}{i:02d}".ljust(20, "z")[:20] for i in range(n)]


# -- defect 2: a work budget, admission control, dropped work ---------------------------------------------------


def test_a_request_over_the_work_budget_is_413(asm):
    with TestClient(create_app(ServeConfig(assembly=asm, max_request_chars=100, max_queued_chars=200))) as c:
        for path in ("/v1/predict", "/v1/route"):
            r = c.post(path, json={"items": _texts(1, 6, "a")})  # 120 characters
            assert r.status_code == 413, r.text
            body = r.json()
            assert body["error"] == "too_large" and body["field"] == "items" and "max_request_chars" in body["message"]
            assert "120" in body["message"]
            assert c.post(path, json={"items": _texts(1, 5, "a")}).status_code == 200  # 100: within
    with pytest.raises(manyfold.ConfigError, match="max_request_chars"):
        ServeConfig(assembly=asm, max_request_chars=101, max_queued_chars=200)


def test_admitted_work_is_bounded_and_the_rest_gets_503(asm):
    gated = _gated(asm)
    app = create_app(ServeConfig(assembly=gated, max_request_chars=100, max_queued_chars=200, max_batch_chars=45, max_part_chars=45))

    async def go(c):
        def post(path, items):
            return asyncio.ensure_future(c.post(path, json={"items": items}))

        held = post("/v1/predict", ["hold w1x1 " + "z" * 30])  # 40 characters, one part
        await _entered(gated.encoder)
        large = post("/v1/predict", ["hold" + t[4:] for t in _texts(1, 4, "a")])  # 80 characters in two parts: large
        await asyncio.sleep(0.05)  # (its first part is held too, in the large requests' worker)
        large_over = await c.post("/v1/predict", json={"items": _texts(1, 3, "b")})  # large ones: 140 > 200 / 2
        small = [post("/v1/route", _texts(2, 2, "c")), post("/v1/predict", _texts(2, 2, "d"))]  # 160, then 200
        await asyncio.sleep(0.05)
        over = await c.post("/v1/predict", json={"items": _texts(2, 1, "e")})  # 220 > 200
        gated.encoder.gate.set()
        return large_over, over, [await r for r in (held, large, *small)], (await c.get("/metrics")).text

    large_over, over, ok, m = asyncio.run(_run(app, go))
    for r, says in ((large_over, "half of max_queued_chars"), (over, "would pass max_queued_chars")):
        assert r.status_code == 503 and r.headers["retry-after"] == "1", r.text
        assert r.json()["error"] == "overloaded" and says in r.json()["message"], r.text
    assert [r.status_code for r in ok] == [200] * 4
    assert _metric(m, "manyfold_rejected_requests_total", reason="work_full") == 2


def test_a_large_request_runs_in_parts_and_a_later_small_one_does_not_wait_for_them(asm):
    gated = _gated(asm)
    big = ["hold" + t[4:] for t in _texts(1, 1, "h")] + _texts(1, 5, "big")  # 6 x 20 characters: 3 parts of 40
    small = "w2x2 w2x3 small"
    app = create_app(ServeConfig(assembly=gated, max_batch_chars=45, max_part_chars=45))

    async def go(c):
        done: list[str] = []

        async def post(name, body):
            r = await c.post("/v1/predict", json=body)
            done.append(name)
            return r

        first = asyncio.ensure_future(post("big", {"items": big}))
        await _entered(gated.encoder)
        second = asyncio.ensure_future(post("small", {"item": small}))
        await asyncio.sleep(0.1)
        gated.encoder.gate.set()
        return await first, await second, done

    rb, rs, done = asyncio.run(_run(app, go))
    assert rb.status_code == 200 and rs.status_code == 200
    assert gated.encoder.calls == [big[:2], [small], big[2:4], big[4:]]  # the small one while a big one's part is held
    assert done == ["small", "big"]
    want = asm.predict(big)
    assert [p["label"] for p in rb.json()["predictions"]] == [p.label for p in want]
    assert [p["confidence"] for p in rb.json()["predictions"]] == pytest.approx([p.confidence for p in want], abs=1e-5)


def test_a_caller_that_timed_out_has_its_remaining_work_dropped(asm):
    gated = _gated(asm)
    big = ["hold" + t[4:] for t in _texts(1, 1, "h")] + _texts(1, 5, "big")
    app = create_app(ServeConfig(assembly=gated, max_batch_chars=45, max_part_chars=45, request_timeout_s=0.3))

    async def go(c):
        first = asyncio.ensure_future(c.post("/v1/predict", json={"items": big}))
        await _entered(gated.encoder)
        queued = await c.post("/v1/route", json={"items": _texts(2, 3, "q")})  # large too: waits behind it, times out
        r = await first
        gated.encoder.gate.set()
        await asyncio.sleep(0.2)
        after = await c.post("/v1/predict", json={"item": "w3x3 after"})
        return r, queued, after, (await c.get("/metrics")).text

    r, queued, after, m = asyncio.run(_run(app, go))
    assert r.status_code == 504 and queued.status_code == 504 and after.status_code == 200
    assert r.json()["error"] == "timeout"
    assert gated.encoder.calls == [big[:2], ["w3x3 after"]]  # the rest of the big one and the queued one: dropped
    assert _metric(m, "manyfold_rejected_requests_total", reason="timeout") == 2


def test_a_caller_that_disconnected_has_its_work_dropped(asm):
    gated = _gated(asm)
    app = create_app(ServeConfig(assembly=gated))
    body = json.dumps({"items": ["w2x2 gone1", "w2x2 gone2"]}).encode()
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/v1/predict", "raw_path": b"/v1/predict", "query_string": b"", "root_path": "",
             "server": ("t", 80), "client": ("127.0.0.1", 5555),
             "headers": [(b"host", b"t"), (b"content-type", b"application/json"),
                         (b"content-length", str(len(body)).encode())]}
    sent: list[dict] = []

    async def go(c):
        held = asyncio.ensure_future(c.post("/v1/predict", json={"item": "hold w1x1"}))
        await _entered(gated.encoder)
        messages = [{"type": "http.request", "body": body, "more_body": False}, {"type": "http.disconnect"}]

        async def receive():
            return messages.pop(0) if messages else await asyncio.Event().wait()

        async def send(msg):
            sent.append(msg)

        gone = asyncio.ensure_future(app(scope, receive, send))
        await asyncio.sleep(0.3)
        gated.encoder.gate.set()
        await asyncio.wait_for(gone, 5)
        after = await c.post("/v1/predict", json={"item": "w3x3 after"})
        return await held, after, (await c.get("/metrics")).text

    held, after, m = asyncio.run(_run(app, go))
    assert held.status_code == 200 and after.status_code == 200
    assert "w2x2 gone1" not in gated.encoder.seen() and "w3x3 after" in gated.encoder.seen()
    assert sent[0]["status"] == 499
    assert _metric(m, "manyfold_rejected_requests_total", reason="disconnected") == 1


def test_escalations_are_gathered_round_robin_across_requests():
    """A large request's escalations cannot hold the generalist: the others' go in between, one item each in turn."""
    from manyfold.serve._batching import MicroBatcher
    from manyfold.serve._engine import Pending
    from manyfold.serve._metrics import ServeMetrics

    calls: list[list[str]] = []

    def run_batch(items, flags, defer=False, snap=None):
        return [Pending(None, None, 0, i, {}) if i.startswith("esc") else i.upper() for i in items]

    def run_generalist(pending):
        calls.append([p.item for p in pending])
        return [p.item.upper() for p in pending]

    async def go():
        b = MicroBatcher(run_batch, ServeMetrics(), max_batch_size=64, max_wait_ms=5, max_queue=8,
                         run_generalist=run_generalist, max_generalist_batch_chars=13)
        big = b.submit([f"esc-big{i}" for i in range(5)] + ["easy"])
        small = b.submit(["esc-sm0", "esc-sm1"])
        got = await asyncio.wait_for(asyncio.gather(big, small), 5)
        await b.stop()
        return got

    big, small = asyncio.run(go())
    assert big[0] == [f"ESC-BIG{i}" for i in range(5)] + ["EASY"] and small[0] == ["ESC-SM0", "ESC-SM1"]
    assert calls == [["esc-big0"], ["esc-sm0"], ["esc-big1"], ["esc-sm1"], ["esc-big2"], ["esc-big3"], ["esc-big4"]]


class RecordingGeneralist:
    def __init__(self, g) -> None:
        self.g, self.labels_, self.seen = g, g.labels_, []

    def signals(self, items):
        self.seen += list(items)
        return self.g.signals(items)


@pytest.mark.parametrize("mode", [{}, {"generalist_stage": False}, {"micro_batching": False}])
def test_a_request_may_send_at_most_max_escalated_chars_to_the_generalist(asm, mode):
    import copy

    every = copy.copy(asm)
    every.counters = copy.copy(asm.counters)
    every.policy_ = asm.policy_.with_thresholds(confidence_threshold=2.0)  # every item escalates
    every.generalist = RecordingGeneralist(asm.generalist)
    items = _texts(1, 2, "g") + _texts(2, 2, "g")  # 20 characters each
    with TestClient(create_app(ServeConfig(assembly=every, max_escalated_chars=45, **mode))) as c:
        r = c.post("/v1/predict", json={"items": items})
        assert r.status_code == 200, r.text
        preds = r.json()["predictions"]
        m = c.get("/metrics").text
    assert every.generalist.seen == items[:2]  # 40 characters; a third would make 60 > 45
    assert all(p["escalated"] and not p["degraded"] for p in preds[:2])
    assert all(p["escalated"] and p["degraded"] and p["reason"].startswith("escalation_budget") for p in preds[2:])
    want = every.predict(items[2:], escalate=False)  # the experts' answer
    assert [p["label"] for p in preds[2:]] == [w.label for w in want]
    full = every.predict(items[:2])  # the first two: the generalist's answer, as Assembly.predict gives it
    assert [(p["label"], p["confidence"]) for p in preds[:2]] == [(w.label, pytest.approx(w.confidence, abs=1e-5))
                                                                  for w in full]
    assert _metric(m, "manyfold_generalist_skipped_items_total") == 2


# -- defect 3: slow clients, connection cap -----------------------------------------------------------------------


def test_a_body_that_does_not_arrive_in_time_is_408_and_closes(asm):
    app = create_app(ServeConfig(assembly=asm, body_timeout_s=0.2))
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/v1/predict", "raw_path": b"/v1/predict", "query_string": b"", "root_path": "",
             "server": ("127.0.0.1", 80), "client": ("127.0.0.1", 5555),
             "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"application/json"), (b"content-length", b"100")]}
    sent: list[dict] = []
    parts = [{"type": "http.request", "body": b'{"item": "w1', "more_body": True}]

    async def receive():
        return parts.pop(0) if parts else await asyncio.Event().wait()  # then the client goes quiet

    async def send(msg):
        sent.append(msg)

    async def go():
        t0 = time.perf_counter()
        await asyncio.wait_for(app(scope, receive, send), 5)
        return time.perf_counter() - t0

    took = asyncio.run(go())
    assert sent[0]["status"] == 408 and (b"connection", b"close") in sent[0]["headers"]
    body = json.loads(sent[1]["body"])
    assert body["error"] == "timeout" and body["field"] == "body" and "body_timeout_s" in body["message"]
    assert took < 2


def _read_all(s: socket.socket, limit: float = 5.0) -> bytes:
    s.settimeout(limit)
    data = b""
    try:
        while chunk := s.recv(4096):
            data += chunk
    except socket.timeout:
        data += b"<still open>"
    return data


def _get_on(s: socket.socket) -> int:
    """GET /healthz on an open keep-alive connection; its status (the whole answer is read)."""
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    s.settimeout(2)
    data = b""
    while b"\r\n\r\n" not in data:
        data += s.recv(4096)
    head, _, rest = data.partition(b"\r\n\r\n")
    n = int(next(ln.split(b":")[1] for ln in head.split(b"\r\n") if ln.lower().startswith(b"content-length")))
    while len(rest) < n:
        rest += s.recv(4096)
    return int(head.split(b" ")[1])


def test_slow_headers_time_out_and_connections_are_capped_on_a_real_socket(asm):
    cfg = ServeConfig(assembly=asm, header_timeout_s=0.25, body_timeout_s=0.25, max_connections=3)
    app = create_app(cfg)
    from manyfold.serve._main import uvicorn_options

    with uvicorn_in_thread(app, **uvicorn_options(app, cfg, 5.0)) as (_, port):
        # the cap: three open connections, a fourth is answered 503 and closed at once
        held = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
        time.sleep(0.05)
        with socket.create_connection(("127.0.0.1", port)) as s:
            got = _read_all(s, 2)
        assert got.startswith(b"HTTP/1.1 503") and b"retry-after: 1" in got and b"max_connections" in got, got
        for s in held:
            s.close()
        time.sleep(0.1)
        # headers one byte at a time: 408 and closed after header_timeout_s (also a connection that sends nothing)
        with socket.create_connection(("127.0.0.1", port)) as slow, socket.create_connection(("127.0.0.1", port)) as mute:
            t0 = time.perf_counter()
            slow.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            time.sleep(0.1)
            try:
                slow.sendall(b"X")
            except OSError:
                pass
            got, took = _read_all(slow), time.perf_counter() - t0
            assert got.startswith(b"HTTP/1.1 408") and b"header_timeout_s" in got and took < 2, (got, took)
            assert _read_all(mute).startswith(b"HTTP/1.1 408")
        # a body that trickles: 408 from the app, connection closed
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 100\r\n\r\n{\"item\": ")
            got = _read_all(s)
            assert got.startswith(b"HTTP/1.1 408") and b"body_timeout_s" in got and not got.endswith(b"<still open>")
        # a well-behaved keep-alive client idles longer than the header timeout between requests: still answered
        with socket.create_connection(("127.0.0.1", port)) as s:
            assert _get_on(s) == 200
            time.sleep(0.35)
            assert _get_on(s) == 200
        m = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        assert _metric(m, "manyfold_rejected_requests_total", reason="connections") == 1
        assert _metric(m, "manyfold_rejected_requests_total", reason="header_timeout") == 2


# -- defect 4: the version of the snapshot a batch ran on --------------------------------------------------------


def test_the_version_answered_is_the_one_the_batch_ran_on(asm, tmp_path):
    import copy

    gated = _gated(asm)
    other = copy.copy(asm)
    other.encoder = GatedEncoder(asm.encoder)
    log = tmp_path / "req.jsonl"
    app = create_app(ServeConfig(assembly=gated, version=1, request_log=str(log)))

    async def go(c):
        first = asyncio.ensure_future(c.post("/v1/predict", json={"items": ["hold w1x1", "w1x2 w1x3"]}))
        await _entered(gated.encoder)
        app.state.engine.swap(other, 2)  # a hot swap while the batch runs on version 1
        gated.encoder.gate.set()
        r1 = await first
        return r1, await c.post("/v1/predict", json={"item": "w2x2 later"})

    r1, r2 = asyncio.run(_run(app, go))
    assert r1.status_code == 200 and r1.json()["version"] == 1
    assert r2.json()["version"] == 2 and other.encoder.seen() == ["w2x2 later"]
    rows = [json.loads(x) for x in log.read_text().splitlines()]
    assert [(row["items"], row["version"]) for row in rows] == [(["hold w1x1", "w1x2 w1x3"], 1), (["w2x2 later"], 2)]


def test_every_part_of_a_request_runs_on_the_snapshot_of_its_first(asm):
    import copy

    gated = _gated(asm)
    other = copy.copy(asm)
    other.encoder = GatedEncoder(asm.encoder)  # records what it is asked: must see nothing of the first request
    app = create_app(ServeConfig(assembly=gated, version=1, max_batch_chars=45, max_part_chars=45))
    items = ["hold" + t[4:] for t in _texts(1, 1, "h")] + _texts(1, 3, "v")  # two parts: the swap comes between

    async def go(c):
        first = asyncio.ensure_future(c.post("/v1/predict", json={"items": items}))
        await _entered(gated.encoder)
        app.state.engine.swap(other, 2)
        route = asyncio.ensure_future(c.post("/v1/route", json={"items": ["w2x2 r"]}))  # waits: goes before part 2
        await asyncio.sleep(0.1)
        gated.encoder.gate.set()
        return await first, await route

    r1, rr = asyncio.run(_run(app, go))
    assert r1.status_code == 200 and r1.json()["version"] == 1  # its second part ran on version 1 too (pinned)
    assert gated.encoder.calls == [items[:2], items[2:]] and other.encoder.seen() == ["w2x2 r"]
    assert rr.json()["version"] == 2  # its batch started after the swap


# -- defect 5: the request log ------------------------------------------------------------------------------------


def test_the_request_log_is_private(asm, tmp_path):
    old = os.umask(0o022)
    try:
        path = tmp_path / "logs" / "req.jsonl"
        with TestClient(create_app(ServeConfig(assembly=asm, request_log=str(path)))) as c:
            assert c.post("/v1/predict", json={"item": "w1x1 private"}).status_code == 200
        assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        loose = tmp_path / "loose.jsonl"
        loose.write_text("")
        loose.chmod(0o644)
        with TestClient(create_app(ServeConfig(assembly=asm, request_log=str(loose)))) as c:
            assert c.post("/v1/predict", json={"item": "w1x1 private"}).status_code == 200
        assert stat.S_IMODE(loose.stat().st_mode) == 0o600  # an existing file is narrowed to the owner
    finally:
        os.umask(old)


def test_the_request_log_is_rotated_by_size(asm, tmp_path):
    from manyfold.serve._reqlog import RequestLog

    path = tmp_path / "req.jsonl"
    with TestClient(create_app(ServeConfig(assembly=asm, request_log=str(path), request_log_max_bytes=400,
                                           request_log_backups=2))) as c:
        for i in range(12):
            assert c.post("/v1/predict", json={"items": [f"w1x1 request {i:02d}"]}).status_code == 200
    kept = [path, path.with_name("req.jsonl.1"), path.with_name("req.jsonl.2")]
    assert all(p.exists() and stat.S_IMODE(p.stat().st_mode) == 0o600 and p.stat().st_size <= 400 for p in kept)
    assert not path.with_name("req.jsonl.3").exists()
    lines = [json.loads(x) for p in reversed(kept) for x in p.read_text().splitlines()]
    numbers = [int(x["items"][0][-2:]) for x in lines]
    assert numbers == list(range(numbers[0], 12)) and numbers[0] > 0  # the newest kept, in order; the oldest deleted
    one = RequestLog(tmp_path / "one.jsonl", max_bytes=100, backups=0)
    for i in range(3):
        one.write([f"text {i}"], [{"label": "a", "escalated": False}], 1)
    one.close()
    assert [json.loads(x)["items"] for x in (tmp_path / "one.jsonl").read_text().splitlines()] == [["text 2"]]
    assert not (tmp_path / "one.jsonl.1").exists()
    with pytest.raises(manyfold.ConfigError, match="request_log_backups"):
        ServeConfig(assembly=asm, request_log_backups=-1)


# -- defect 7: the error contract ---------------------------------------------------------------------------------


def test_unreadable_bodies_and_unknown_paths_answer_the_documented_shape(asm):
    bad = {"not UTF-8": b'{"item": "caf\xe9"}', "nested too deeply": b"[" * 100_000 + b"]" * 100_000,
           "4300 digits": b'{"item": "a", "k": ' + b"9" * 5001 + b"}"}
    with TestClient(create_app(ServeConfig(assembly=asm, admin_token=TOKEN))) as c:
        for says, body in bad.items():
            for path, headers in (("/v1/predict", {}), ("/v1/route", {}), ("/v1/admin/reload", AUTH)):
                r = c.post(path, content=body, headers={"content-type": "application/json", **headers})
                assert r.status_code == 422, (path, says, r.text)
                assert set(r.json()) == {"error", "message", "field"} and r.json()["field"] == "body"
                assert r.json()["error"] == "invalid_request" and says in r.json()["message"]
        for method, path, status, code in (("GET", "/nope", 404, "not_found"), ("PUT", "/v1/predict", 405,
                                                                                 "method_not_allowed")):
            r = c.request(method, path)
            assert r.status_code == status and r.json()["error"] == code and set(r.json()) == {"error", "message", "field"}


def test_types_are_strict(asm):
    with TestClient(create_app(ServeConfig(assembly=asm, admin_token=TOKEN, name="nowhere",
                                           registry_root="/nonexistent"))) as c:
        for path, body, field in (("/v1/route", {"item": "w1x1", "k": True}, "k"),
                                  ("/v1/route", {"item": "w1x1", "k": 2.0}, "k"),
                                  ("/v1/route", {"item": "w1x1", "k": "2"}, "k"),
                                  ("/v1/predict", {"item": "w1x1", "escalate": "false"}, "escalate"),
                                  ("/v1/predict", {"item": "w1x1", "escalate": 0}, "escalate"),
                                  ("/v1/predict", {"items": ["w1x1", 5]}, "items.1"),
                                  ("/v1/admin/reload", {"version": 143.0}, "version"),
                                  ("/v1/admin/reload", {"version": True}, "version"),
                                  ("/v1/admin/reload", {"wait": "true"}, "wait")):
            r = c.post(path, json=body, headers=AUTH)
            assert r.status_code == 422 and r.json()["field"] == field, (body, r.text)
        assert c.post("/v1/route", json={"item": "w1x1", "k": 2}).status_code == 200
        assert c.post("/v1/predict", json={"item": "w1x1", "escalate": False}).status_code == 200


def test_admin_endpoints_authenticate_before_reading_the_body(asm):
    big = b'{"version": ' + b" " * 900_000 + b"not json"  # under max_body_bytes, unparseable
    with TestClient(create_app(ServeConfig(assembly=asm, admin_token=TOKEN))) as c:
        for method, path in (("POST", "/v1/admin/reload"), ("POST", "/v1/experts"), ("DELETE", "/v1/experts/alpha")):
            for headers, status in (({}, 401), ({"Authorization": "Bearer wrong"}, 403), ({"Authorization": "Basic x"}, 401)):
                r = c.request(method, path, content=big, headers={"content-type": "application/json", **headers})
                assert r.status_code == status and r.json()["error"] in ("unauthorized", "forbidden"), (path, r.text)
        r = c.post("/v1/admin/reload", content=b"x" * (2 << 20), headers={"content-type": "application/json"})
        assert r.status_code == 401  # not 413: the token first
        assert c.post("/v1/admin/reload", content=big, headers={"content-type": "application/json", **AUTH}
                      ).status_code == 422
    app = create_app(ServeConfig(assembly=asm, admin_token=TOKEN))
    sent: list[dict] = []

    async def receive():
        raise AssertionError("the body of an unauthenticated admin request was read")

    async def send(msg):
        sent.append(msg)

    scope = {"type": "http", "method": "POST", "path": "/v1/admin/reload", "headers": [(b"host", b"127.0.0.1")],
             "server": ("127.0.0.1", 80), "query_string": b""}
    asyncio.run(app(scope, receive, send))
    assert sent[0]["status"] == 401


# -- defect 8: /v1/route under admission control -------------------------------------------------------------------


def test_route_is_under_admission_control(asm):
    gated = _gated(asm)
    app = create_app(ServeConfig(assembly=gated, max_queue=2))

    async def go(c):
        held = asyncio.ensure_future(c.post("/v1/predict", json={"item": "hold w1x1"}))
        await _entered(gated.encoder)
        waiting = asyncio.ensure_future(c.post("/v1/route", json={"items": ["w2x2 w2x3", "w0x1 w0x2"], "k": 1}))
        await asyncio.sleep(0.05)
        full = [await c.post("/v1/route", json={"item": "w1x1"}) for _ in range(3)]
        gated.encoder.gate.set()
        return await held, await waiting, full, (await c.get("/metrics")).text

    held, waiting, full, m = asyncio.run(_run(app, go))
    assert held.status_code == 200 and waiting.status_code == 200
    assert all(r.status_code == 503 and r.headers["retry-after"] == "1" and r.json()["error"] == "overloaded"
               for r in full)
    want = [asm.forward(asm.encoder.encode([t]), [t]).expert_idx[0, 0] for t in ("w2x2 w2x3", "w0x1 w0x2")]
    assert [r["experts"][0]["name"] for r in waiting.json()["routes"]] == [str(asm.router.experts_[j]) for j in want]
    assert ["w2x2 w2x3", "w0x1 w0x2"] in gated.encoder.calls  # routed in a batch of its own, after the held one
    assert _metric(m, "manyfold_rejected_requests_total", reason="queue_full") == 3


# -- the command line ------------------------------------------------------------------------------------------


def test_the_cli_passes_the_request_log_rotation(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    import manyfold.serve
    from manyfold._cli import app

    seen = {}
    monkeypatch.setattr(manyfold.serve, "serve_main", lambda *a, **kw: seen.update(kw))
    log = str(tmp_path / "r.jsonl")
    r = CliRunner().invoke(app, ["serve", "x", "--request-log", log, "--request-log-max-bytes", "1000",
                                 "--request-log-backups", "0"])
    assert r.exit_code == 0, r.output
    assert (seen["request_log"], seen["request_log_max_bytes"], seen["request_log_backups"]) == (log, 1000, 0)


def test_the_generalist_deadline_answers_late_escalations_with_the_experts_and_counts_them(asm):
    """Over HTTP: with a generalist that takes longer than ``generalist_deadline_ms``, an escalated item waiting
    behind its call is answered degraded with the experts' label (reason ``generalist_deadline``), counted."""
    import copy

    every = copy.copy(asm)
    every.counters = copy.copy(asm.counters)
    every.policy_ = asm.policy_.with_thresholds(confidence_threshold=2.0)  # every item escalates
    gate = threading.Event()

    class SlowGeneralist(RecordingGeneralist):
        def signals(self, items):
            gate.wait(5)
            return super().signals(items)

    every.generalist = SlowGeneralist(asm.generalist)
    items = _texts(1, 2, "g")
    with pytest.raises(manyfold.ConfigError, match="generalist_deadline_ms must be a positive number"):
        ServeConfig(assembly=every, generalist_deadline_ms=0)
    with pytest.raises(manyfold.ConfigError, match="needs micro_batching=True and generalist_stage=True"):
        ServeConfig(assembly=every, generalist_deadline_ms=100, generalist_stage=False)
    cfg = ServeConfig(assembly=every, generalist_deadline_ms=300, max_batch_size=1)
    with TestClient(create_app(cfg)) as c:
        out = {}

        def ask(k):
            out[k] = c.post("/v1/predict", json={"item": items[k]})

        threads = [threading.Thread(target=ask, args=(k,)) for k in (0, 1)]
        threads[0].start()
        time.sleep(0.2)  # the first item's generalist call has started (and waits for the gate)
        threads[1].start()
        threads[1].join(5)
        late = out[1].json()["predictions"][0]
        gate.set()
        threads[0].join(5)
        first = out[0].json()["predictions"][0]
        m = c.get("/metrics").text
    assert late["escalated"] and late["degraded"] and late["reason"].startswith("generalist_deadline:")
    assert late["label"] == every.predict([items[1]], escalate=False)[0].label  # the experts' answer
    assert first["escalated"] and not first["degraded"]  # its call had started: it waited for it
    assert every.generalist.seen == [items[0]]
    assert _metric(m, "manyfold_generalist_deadline_items_total") == 1
