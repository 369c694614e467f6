"""Issue 14, defects 6, 9 and 10 (Host header) on the HTTP API: a corrupt version to reload is a 4xx while the old
one keeps serving; a new expert may not own the out-of-scope label or labels without examples; a request for a
host the server does not know (DNS rebinding) is refused."""

from __future__ import annotations

import asyncio
import json
import socket

import pytest
from _toy import asm, ds, uvicorn_in_thread, wait_until  # noqa: F401 (asm, ds: fixtures)

pytest.importorskip("fastapi")
pytest.importorskip("prometheus_client")

import manyfold  # noqa: E402
from manyfold import Registry  # noqa: E402
from manyfold.serve import ServeConfig, create_app  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

TOKEN = "s3cret-admin"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _wait_ready(c: TestClient) -> dict:
    return wait_until(lambda: (r := c.get("/readyz")).status_code == 200 and r.json(), timeout=5,
                      what="the server ready")


# -- defect 6: reloading a corrupt version ------------------------------------------------------------


def test_reloading_a_corrupt_or_untrusted_version_is_a_4xx_and_the_old_one_keeps_serving(asm, tmp_path, monkeypatch):
    monkeypatch.delenv("MANYFOLD_TRUST_REMOTE", raising=False)
    reg = Registry(tmp_path / "reg")
    for _ in range(4):
        reg.save(asm, "r")
    m2 = reg.manifest("r", 2)
    for e in m2["experts"][:1]:  # v2: a flipped byte in a new copy of one expert's weights
        src = reg.root / "objects" / e["ref"]
        data = bytearray((src / "arrays.safetensors").read_bytes())
        data[-5] ^= 0xFF
        dst = reg.root / "objects" / (e["ref"][:-4] + "beef")
        dst.mkdir()
        (dst / "state.json").write_bytes((src / "state.json").read_bytes())
        (dst / "arrays.safetensors").write_bytes(bytes(data))
        e["ref"] = dst.name
    (reg.root / "assemblies" / "r" / "v0002.json").write_text(json.dumps(m2))
    v3 = reg.root / "assemblies" / "r" / "v0003.json"
    v3.write_text(v3.read_text()[:200])  # v3: a truncated manifest
    m4 = reg.manifest("r", 4)  # v4: an encoder that is not built in (this server did not opt in)
    hub = manyfold.get_encoder("st:someone/model")
    m4["encoder"] = {"spec": hub.spec, "id": hub.id}
    (reg.root / "assemblies" / "r" / "v0004.json").write_text(json.dumps(m4))

    cfg = ServeConfig(assembly="r", version=1, registry_root=str(reg.root), admin_token=TOKEN)
    with TestClient(create_app(cfg)) as c:
        assert _wait_ready(c)["version"] == 1
        for v, status, code, says in ((2, 409, "bad_artifact", "checksum mismatch"),
                                      (3, 409, "bad_artifact", "corrupted or truncated JSON"),
                                      (4, 403, "untrusted", "someone/model")):
            r = c.post("/v1/admin/reload", json={"version": v, "wait": True}, headers=AUTH)
            assert r.status_code == status, r.text
            body = r.json()
            assert body["error"] == code and says in body["message"] and set(body) == {"error", "message", "field"}
            p = c.post("/v1/predict", json={"item": "w0x1 w0x2 please"})
            assert p.status_code == 200 and p.json()["version"] == 1
        r = c.post("/v1/admin/reload", json={"version": 2}, headers=AUTH)  # in the background: failed, still v1
        assert r.status_code == 202
        state = wait_until(lambda: (st := c.get("/readyz").json())["reload"]["state"] == "failed" and st, timeout=5,
                           what="the reload failed")
        assert state["version"] == 1 and "checksum mismatch" in state["reload"]["error"]
        assert "status=\"500\"" not in c.get("/metrics").text


# -- defect 9: validating a new expert --------------------------------------------------------------------


def test_new_expert_may_not_own_the_out_of_scope_label_or_labels_without_examples(asm, ds):
    tr = [[t, "fresh"] for t in ("q1 fresh thing", "q2 fresh stuff", "q3 fresh item")]
    va = [[t, "fresh"] for t in ("q4 fresh thing", "q5 fresh stuff")]
    with TestClient(create_app(ServeConfig(assembly=asm, admin_token=TOKEN, dataset=ds, save_changes=False))) as c:
        cases = [
            ({"labels": ["fresh", "out_of_scope"], "train": tr + [["zz yy", "out_of_scope"]]}, "reserved out-of-scope"),
            ({"labels": ["fresh", "ghost"]}, "no training example of the label(s) ['ghost']"),
            ({"labels": ["fresh", "fresh"]}, "appear more than once"),
            ({"labels": ["fresh", "intent0"], "train": tr + [["w0x1 w0x2", "intent0"]]}, "already belong to other experts"),
        ]
        for change, says in cases:
            body = {"name": "newbie", "labels": ["fresh"], "train": tr, "val": va, **change}
            r = c.post("/v1/experts", json=body, headers=AUTH)
            assert r.status_code == 422, (change, r.text)
            assert says in r.json()["message"]
        assert c.get("/v1/experts").json()[-1]["name"] != "newbie"
        r = c.post("/v1/experts", json={"name": "newbie", "labels": ["fresh"], "train": tr, "val": va}, headers=AUTH)
        assert r.status_code == 201, r.text
        assert "newbie" in r.json()["experts"]


# -- defect 10: the Host header ------------------------------------------------------------------------------


def test_unknown_hosts_are_refused(asm):
    with TestClient(create_app(ServeConfig(assembly=asm))) as c:
        for host in ("localhost:8000", "127.0.0.1", "[::1]:8000", "LOCALHOST.", "testserver"):
            assert c.post("/v1/predict", json={"item": "w1x1"}, headers={"host": host}).status_code == 200, host
        for host in ("attacker.example", "attacker.example:8000", "localhost.attacker.example", "127.0.0.1.nip.io"):
            for method, path in (("POST", "/v1/predict"), ("GET", "/metrics"), ("GET", "/v1/experts")):
                r = c.request(method, path, json={"item": "w1x1"} if method == "POST" else None, headers={"host": host})
                assert r.status_code == 400, (host, path)
                assert r.json()["error"] == "invalid_host" and r.json()["field"] == "host"
        m = c.get("/metrics").text
        assert 'manyfold_http_requests_total{endpoint="/v1/predict",method="POST",status="400"} 4.0' in m
    cfg = ServeConfig(assembly=asm, allowed_hosts=["*.example.com", "API.other.org"])
    assert cfg.allowed_hosts == ("*.example.com", "api.other.org")
    with TestClient(create_app(cfg)) as c:
        ok = {"a.example.com": 200, "x.y.example.com:443": 200, "api.other.org": 200, "localhost": 200,
              "example.com": 400, "evilexample.com": 400, "other.org": 400}
        assert {h: c.get("/healthz", headers={"host": h}).status_code for h in ok} == ok
    with TestClient(create_app(ServeConfig(assembly=asm, allowed_hosts=("*",)))) as c:
        assert c.get("/healthz", headers={"host": "anything.example"}).status_code == 200
    for bad in ("example.com", ("a b",), (3,)):
        with pytest.raises(manyfold.ConfigError, match="allowed_hosts"):
            ServeConfig(assembly=asm, allowed_hosts=bad)


def _raw_get(port: int, host: str) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(f"GET /healthz HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    return int(data.split(b" ", 2)[1])


def test_a_real_server_refuses_a_rebound_host_name(asm):
    """On a socket (uvicorn): a page whose name now resolves to 127.0.0.1 gets 400; the address itself is fine."""
    with uvicorn_in_thread(create_app(ServeConfig(assembly=asm))) as (_, port):
        assert _raw_get(port, f"127.0.0.1:{port}") == 200
        assert _raw_get(port, f"localhost:{port}") == 200
        assert _raw_get(port, f"rebound.attacker.example:{port}") == 400


def test_serve_main_adds_the_bound_host_and_decides_trust(monkeypatch):
    uvicorn = pytest.importorskip("uvicorn")
    seen = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(config=app.state.config, **kw))
    monkeypatch.setenv("MANYFOLD_TRUST_REMOTE", "1")
    from manyfold.serve import serve_main

    serve_main("x", host="myhost.lan", port=8123)
    assert seen["config"].allowed_hosts == ("myhost.lan",) and seen["config"].trust_remote is True
    serve_main("x", host="0.0.0.0", port=8123, allowed_hosts=("api.example.com",))
    assert seen["config"].allowed_hosts == ("api.example.com",)
    with pytest.raises(manyfold.ConfigError, match="trust_remote"):
        ServeConfig(assembly="x", trust_remote="yes")


def test_request_without_host_header_passes():
    """HTTP/1.0 without Host (no browser sends that): answered."""
    from manyfold.serve._hosts import HostCheck

    got = []

    async def app(scope, receive, send):
        got.append(scope["path"])

    async def send(msg):
        got.append(msg.get("status", "body"))

    scope = {"type": "http", "path": "/healthz", "headers": [], "server": ("127.0.0.1", 8000)}
    asyncio.run(HostCheck(app)(scope, None, send))
    scope["headers"] = [(b"host", b"evil.example")]
    asyncio.run(HostCheck(app)(scope, None, send))
    assert got == ["/healthz", 400, "body"]


def test_a_registry_version_has_its_models_loaded_before_it_serves(asm, tmp_path, monkeypatch):
    """The first request must not pay for loading the encoders' weights: the server loads them before it is ready."""
    import manyfold.encoders

    reg = Registry(tmp_path / "reg")
    reg.save(asm, "r")
    loaded = []
    monkeypatch.setattr(manyfold.encoders, "load_models", lambda enc: loaded.append(enc.id) or 1)
    cfg = ServeConfig(assembly="r", version=1, registry_root=str(reg.root), admin_token=TOKEN)
    with TestClient(create_app(cfg)) as c:
        assert _wait_ready(c)["version"] == 1
        assert loaded and loaded[0] == asm.encoder.id  # the routing encoder (and the generalist's, when it has one)
        assert len(loaded) == 1 + (asm.generalist is not None)
