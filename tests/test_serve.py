"""Functional tests of the HTTP API on a tiny real assembly (hashing encoder, no model download)."""

from __future__ import annotations

import asyncio
import copy
import os
import re
import threading
import time
from pathlib import Path

import httpx
import pytest
from _data import missing

pytest.importorskip("fastapi")
pytest.importorskip("prometheus_client")

import manyfold  # noqa: E402
from manyfold import GeneralistError  # noqa: E402
from manyfold.serve import ServeConfig, create_app  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

DATA = os.environ.get("MANYFOLD_TEST_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data"))
TOKEN = "s3cret-admin"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("mfhome")
    old = os.environ.get("MANYFOLD_HOME")
    os.environ["MANYFOLD_HOME"] = str(home)
    yield home
    if old is None:
        os.environ.pop("MANYFOLD_HOME", None)
    else:
        os.environ["MANYFOLD_HOME"] = old


@pytest.fixture(scope="module")
def ds(home: Path):
    if not (Path(DATA) / "clinc150").is_dir():
        missing(f"CLINC150 not found under {DATA} (set MANYFOLD_TEST_DATA)")
    return manyfold.load_dataset("clinc150", DATA).subset(5, seed=0)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def asm(ds):
    # 1024-d hashing vectors (were 2048 and 4096): these tests check the HTTP API's behaviour against the
    # assembly's own answers, not its accuracy; the smaller heads fit in about half the time
    return manyfold.assemble(ds, encoder="hashing:dim=1024", generalist="hashing:dim=1024")


@pytest.fixture(scope="module")
def texts(ds) -> list[str]:
    return list(ds.split("test").items[:40])


def _client(asm, **kw) -> TestClient:
    return TestClient(create_app(ServeConfig(assembly=asm, admin_token=TOKEN, **kw)))


def _metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and all(f'{k}="{v}"' in line for k, v in labels.items()):
            m = re.match(rf"^{re.escape(name)}(\{{[^}}]*\}})? ([0-9.eE+-]+)$", line)
            if m:
                total += float(m.group(2))
    return total


class SlowEncoder:
    """Wraps an encoder and sleeps before each batch (to fill queues and hit timeouts)."""

    def __init__(self, enc, delay: float) -> None:
        self.enc, self.delay = enc, delay
        self.modality = getattr(enc, "modality", None)
        self.calls: list[int] = []

    def encode(self, items, **kw):
        self.calls.append(len(items))
        time.sleep(self.delay)
        return self.enc.encode(items, **kw)


def _variant(asm, **attrs):
    new = copy.copy(asm)
    for k, v in attrs.items():
        setattr(new, k, v)
    return new


# -- inference --------------------------------------------------------------------------
def test_predict_single_batch_route_experts(asm, texts):
    with _client(asm) as c:
        r = c.post("/v1/predict", json={"item": texts[0]})
        assert r.status_code == 200, r.text
        p = r.json()["predictions"][0]
        want = asm.predict([texts[0]])[0]
        assert p["label"] == want.label and p["escalated"] == want.escalated
        assert set(p["timings_ms"]) >= {"encode", "route", "experts", "generalist", "total", "queue"}
        assert p["out_of_scope"] == (p["label"] == "out_of_scope") and p["degraded"] is False
        r = c.post("/v1/predict", json={"items": texts[:10]})
        assert r.status_code == 200
        assert [q["label"] for q in r.json()["predictions"]] == [q.label for q in asm.predict(texts[:10])]
        r = c.post("/v1/route", json={"items": texts[:3], "k": 2})
        assert r.status_code == 200
        routes = r.json()["routes"]
        assert len(routes) == 3 and all(len(x["experts"]) == 2 for x in routes)
        assert routes[0]["experts"][0]["name"] == asm.predict([texts[0]])[0].experts[0]
        r = c.get("/v1/experts")
        assert r.status_code == 200 and {e["name"] for e in r.json()} == set(asm.expert_names)
        assert c.get("/healthz").json() == {"status": "ok"}
        assert c.get("/readyz").json()["ready"] is True
        assert c.get("/openapi.json").status_code == 200 and c.get("/docs").status_code == 200
        m = c.get("/metrics")
        assert m.status_code == 200 and "text/plain" in m.headers["content-type"]
        assert _metric(m.text, "manyfold_http_requests_total", endpoint="/v1/predict", status="200") == 2
        assert _metric(m.text, "manyfold_batch_size_items_count") >= 2
        assert "manyfold_stage_duration_seconds_bucket" in m.text and "manyfold_queue_depth" in m.text


def test_request_log_is_a_distillation_pool(asm, texts, tmp_path):
    from manyfold.flywheel import read_pool

    path = tmp_path / "logs" / "requests.jsonl"
    with _client(asm, request_log=str(path)) as c:
        assert c.post("/v1/predict", json={"item": texts[0]}).status_code == 200
        r = c.post("/v1/predict", json={"items": texts[1:4]})
        assert c.post("/v1/predict", json={"items": []}).status_code == 422  # refused: not logged
    rows = [__import__("json").loads(x) for x in path.read_text().splitlines()]
    assert [row["items"] for row in rows] == [texts[:1], texts[1:4]]
    assert rows[1]["labels"] == [p["label"] for p in r.json()["predictions"]]
    assert read_pool(path) == texts[:4]


def test_micro_batching_merges_concurrent_requests(asm, texts):
    slow = SlowEncoder(asm.encoder, 0.05)
    app = create_app(ServeConfig(assembly=_variant(asm, encoder=slow), max_wait_ms=50, max_batch_size=64))

    async def go():
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
                rs = await asyncio.gather(*[c.post("/v1/predict", json={"item": t}) for t in texts[:16]])
        return rs

    rs = asyncio.run(go())
    assert all(r.status_code == 200 for r in rs)
    assert len(slow.calls) < 16 and max(slow.calls) > 1  # fewer encoder calls than requests


# -- bad input: 4xx naming the field --------------------------------------------------------
class GatedGeneralist:
    """The real generalist, held until ``gate`` opens (so a test can look while escalated items wait)."""

    def __init__(self, g, delay: float = 0.0) -> None:
        self.g, self.labels_, self.delay = g, g.labels_, delay
        self.gate, self.calls = threading.Event(), []

    def signals(self, items):
        self.calls.append(len(items))
        assert self.gate.wait(20), "the test never opened the gate"
        time.sleep(self.delay)
        return self.g.signals(items)


def test_generalist_stage_answers_the_others_first(asm, texts):
    """An item the experts answer does not wait for an escalated one of the same micro-batch."""
    esc = asm.forward(asm.encoder.encode(texts), texts).escalated
    hard, easy = texts[int(esc.argmax())], texts[int((~esc).argmax())]
    assert esc.any() and (~esc).any()
    want = {t: p for t, p in zip([hard, easy], asm.predict([hard, easy]))}
    gated = GatedGeneralist(asm.generalist)
    app = create_app(ServeConfig(assembly=_variant(asm, generalist=gated), max_wait_ms=50))

    async def go():
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
                slow = asyncio.ensure_future(c.post("/v1/predict", json={"item": hard}))
                fast = await c.post("/v1/predict", json={"item": easy})
                held = not slow.done()  # the easy one came back while the hard one waits for the generalist
                depth = _metric((await c.get("/metrics")).text, "manyfold_generalist_queue_depth")
                gated.gate.set()
                return fast, await slow, held, depth

    fast, slow, held, depth = asyncio.run(go())
    assert held and depth == 0  # taken by the generalist worker (which is blocked on the gate)
    for r, t in ((fast, easy), (slow, hard)):
        assert r.status_code == 200, r.text
        p, w = r.json()["predictions"][0], want[t]
        assert (p["label"], p["escalated"], p["reason"]) == (w.label, w.escalated, w.reason)
        assert p["confidence"] == pytest.approx(w.confidence, abs=1e-5)
    assert slow.json()["predictions"][0]["timings_ms"]["generalist"] > 0
    assert fast.json()["predictions"][0]["timings_ms"]["generalist"] == 0


def test_generalist_stage_gathers_escalations_across_requests(asm, texts):
    """Escalated items of several requests share generalist calls; answers match the one-stage pipeline."""
    gated = GatedGeneralist(asm.generalist, delay=0.05)
    gated.gate.set()
    every = _variant(asm, counters=copy.copy(asm.counters), policy_=asm.policy_.with_thresholds(confidence_threshold=2.0))
    app = create_app(ServeConfig(assembly=_variant(every, generalist=gated), max_wait_ms=5, max_batch_size=4))

    async def go():
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
                rs = await asyncio.gather(*[c.post("/v1/predict", json={"items": texts[i:i + 2]})
                                            for i in range(0, 40, 2)])
                return rs, (await c.get("/metrics")).text

    rs, m = asyncio.run(go())
    got = [p for r in rs for p in r.json()["predictions"]]
    want = every.predict(texts)
    assert [(p["label"], p["escalated"]) for p in got] == [(w.label, w.escalated) for w in want]
    n_esc = sum(w.escalated for w in want)
    assert n_esc == len(texts)
    assert sum(gated.calls) == n_esc and _metric(m, "manyfold_generalist_batch_size_items_sum") == n_esc
    assert len(gated.calls) < n_esc  # at least one call served items of more than one request


def test_bad_input_names_the_field(asm):
    with _client(asm, max_items_per_request=4, max_body_bytes=5000) as c:
        r = c.post("/v1/predict", json={"items": ["a"] * 5})
        assert r.status_code == 422 and r.json()["field"] == "items"
        r = c.post("/v1/predict", json={"items": ["ok", "x" * 2001]})
        assert r.status_code == 422 and r.json()["field"] == "items.1"
        r = c.post("/v1/predict", json={"items": ["ok", 3]})
        assert r.status_code == 422 and r.json()["field"] == "items.1"
        r = c.post("/v1/predict", json={"items": ["ok", "   "]})
        assert r.status_code == 422 and r.json()["field"] == "items.1" and "whitespace" in r.json()["message"]
        r = c.post("/v1/predict", content=b'{"items": ["\\ud800"]}', headers={"content-type": "application/json"})
        assert r.status_code == 422 and r.json()["field"] == "items.0"
        r = c.post("/v1/predict", json={"items": []})
        assert r.status_code == 422 and r.json()["field"] == "items"
        r = c.post("/v1/predict", json={})
        assert r.status_code == 422 and "items" in r.json()["message"]
        r = c.post("/v1/predict", json={"item": "a", "bogus": 1})
        assert r.status_code == 422 and r.json()["field"] == "bogus"
        r = c.post("/v1/predict", content=b"{not json", headers={"content-type": "application/json"})
        assert r.status_code == 422 and r.json()["field"] == "body"
        r = c.post("/v1/route", json={"item": "a", "k": 0})
        assert r.status_code == 422 and r.json()["field"] == "k"
        r = c.post("/v1/predict", json={"items": ["y" * 1500] * 4})
        assert r.status_code == 413 and r.json()["field"] == "body"
        m = c.get("/metrics").text
        assert _metric(m, "manyfold_http_requests_total", status="413") == 1


# -- admin ----------------------------------------------------------------------------
def test_admin_auth(asm):
    with _client(asm) as c:
        assert c.delete("/v1/experts/banking").status_code == 401
        assert c.delete("/v1/experts/banking", headers={"Authorization": "Bearer nope"}).status_code == 403
        assert c.post("/v1/admin/reload", json={}).status_code == 401
        assert c.post("/v1/admin/reload", json={}, headers={"Authorization": "Bearer x"}).status_code == 403
        r = c.delete("/v1/experts/banking", headers=AUTH)  # authorised, but no dataset to refit the router on
        assert r.status_code == 409 and "dataset" in r.json()["message"]
        assert c.delete("/v1/experts/nope", headers=AUTH).status_code == 404


def test_add_and_remove_expert(asm, ds, texts):
    removed = asm.expert_names[0]
    labels = [lab for lab in ds.labels if ds.domain_of(lab) == removed]
    tr, va = ds.split("train"), ds.split("val")
    pairs = lambda s: [[t, lab] for t, lab in zip(s.items, s.labels.tolist()) if lab in labels]  # noqa: E731
    with _client(asm, dataset=ds, name="tiny") as c:
        r = c.delete(f"/v1/experts/{removed}", headers=AUTH)
        assert r.status_code == 200, r.text
        assert removed not in r.json()["experts"]
        assert removed not in {e["name"] for e in c.get("/v1/experts").json()}
        assert c.post("/v1/predict", json={"items": texts[:5]}).status_code == 200
        body = {"name": removed + "2", "labels": labels, "train": pairs(tr), "val": pairs(va)}
        r = c.post("/v1/experts", json=body, headers=AUTH)
        assert r.status_code == 201, r.text
        assert removed + "2" in r.json()["experts"] and r.json()["version"] >= 2
        r = c.post("/v1/experts", json={**body, "labels": ["zz"]}, headers=AUTH)
        assert r.status_code == 422 and "train" in r.json()["message"]
    assert removed in asm.expert_names  # the original object was never modified


# -- overload and timeouts ---------------------------------------------------------------------
def test_queue_full_503_and_timeout_504(asm, texts):
    slow = _variant(asm, encoder=SlowEncoder(asm.encoder, 0.4))
    app = create_app(ServeConfig(assembly=slow, max_queue=1, max_wait_ms=0, request_timeout_s=5))

    async def go():
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
                return await asyncio.gather(*[c.post("/v1/predict", json={"item": t}) for t in texts[:6]])

    codes = [r.status_code for r in asyncio.run(go())]
    assert 503 in codes and 200 in codes and set(codes) <= {200, 503}, codes
    with _client(slow, request_timeout_s=0.1) as c:
        r = c.post("/v1/predict", json={"item": texts[0]})
        assert r.status_code == 504 and r.json()["error"] == "timeout"
        assert _metric(c.get("/metrics").text, "manyfold_rejected_requests_total", reason="timeout") == 1
    app2 = create_app(ServeConfig(assembly=slow, max_queue=1, micro_batching=False))

    async def go2():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app2), base_url="http://t") as c:
            return await asyncio.gather(*[c.post("/v1/predict", json={"item": t}) for t in texts[:3]])

    codes = [r.status_code for r in asyncio.run(go2())]
    assert sorted(codes) == [200, 503, 503]


# -- failures: fallback, degraded, counted ----------------------------------------------------------
class BoomExpert:
    def __init__(self, e) -> None:
        self.name, self.labels_ = e.name, e.labels_

    def predict_proba(self, X):
        raise RuntimeError("expert weights went missing")


class BoomGeneralist:
    def __init__(self, g) -> None:
        self.labels_ = g.labels_

    def signals(self, items):
        raise GeneralistError("endpoint down")


def test_expert_failure_falls_back_to_generalist(asm, texts):
    X = asm.encoder.encode(texts)
    top = asm.router.experts_[asm.forward(X, texts).expert_idx[:, 0]]
    bad = str(top[0])
    j = list(asm.router.experts_).index(bad)
    routes = [*asm._route_experts]
    routes[j] = BoomExpert(routes[j])
    with _client(_variant(asm, _route_experts=routes), max_part_chars=4096) as c:  # one part: one batch
        r = c.post("/v1/predict", json={"items": texts})
        assert r.status_code == 200, r.text
        preds = r.json()["predictions"]
        hit = [p for p in preds if bad in p["experts"]]
        assert hit and all(p["reason"] == f"expert_failed: {bad}" and p["escalated"] for p in hit)
        assert all(not (p["reason"] or "").startswith("expert_failed") for p in preds if bad not in p["experts"])
        m = c.get("/metrics").text
        assert _metric(m, "manyfold_expert_failures_total", expert=bad) == 1
        assert _metric(m, "manyfold_expert_fallback_items_total", expert=bad) == len(hit)
    both = _variant(asm, _route_experts=routes, generalist=BoomGeneralist(asm.generalist))
    with _client(both) as c:  # expert and generalist down: an error status, never a silent answer
        r = c.post("/v1/predict", json={"item": texts[0]})
        assert r.status_code == 503 and "generalist" in r.json()["message"]


def test_generalist_failure_is_degraded_and_counted(asm, texts):
    broken = _variant(asm, generalist=BoomGeneralist(asm.generalist), counters=copy.copy(asm.counters),
                      policy_=asm.policy_.with_thresholds(confidence_threshold=2.0))  # escalate everything
    with _client(broken) as c:
        r = c.post("/v1/predict", json={"items": texts[:5]})
        assert r.status_code == 200
        preds = r.json()["predictions"]
        assert all(p["degraded"] and p["reason"].startswith("generalist_failed") for p in preds)
        m = c.get("/metrics").text
        assert _metric(m, "manyfold_generalist_failures_total") == 1
        assert _metric(m, "manyfold_degraded_items_total") == 5


def test_generalist_that_times_out_is_degraded_and_counted(asm, texts):
    """A real LLM endpoint that never answers: the client's timeout becomes degraded answers, counted."""
    import socket

    from manyfold.generalists import OpenAIGeneralist

    with socket.socket() as silent:  # accepts connections (the kernel does) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/v1"
        llm = OpenAIGeneralist(url, timeout=0.3).fit(None, asm.generalist.labels_)
        every = _variant(asm, generalist=llm, counters=copy.copy(asm.counters),
                         policy_=asm.policy_.with_thresholds(confidence_threshold=2.0))
        with _client(every) as c:
            t0 = time.perf_counter()
            r = c.post("/v1/predict", json={"items": texts[:3]})
            assert r.status_code == 200 and time.perf_counter() - t0 < 10
            preds = r.json()["predictions"]
            assert all(p["degraded"] and p["escalated"] and p["reason"].startswith("generalist_failed") for p in preds)
            assert all("timed out" in p["reason"].lower() or "timeout" in p["reason"].lower() for p in preds), preds[0]
            assert [p["label"] for p in preds] == [p.label for p in _variant(every, generalist=None).predict(texts[:3])]
            m = c.get("/metrics").text
            assert _metric(m, "manyfold_generalist_failures_total") == 1
            assert _metric(m, "manyfold_degraded_items_total") == 3


# -- hot swap -----------------------------------------------------------------------------
def test_hot_swap_under_concurrent_requests(asm, home, texts):
    reg = manyfold.Registry()
    v1 = reg.save(asm, "swap")
    v2 = reg.save(asm, "swap", note="second")
    with TestClient(create_app(ServeConfig(assembly="swap", version=v1, admin_token=TOKEN))) as c:
        for _ in range(100):
            if c.get("/readyz").status_code == 200:
                break
            time.sleep(0.1)
        assert c.get("/readyz").json()["version"] == v1
        results: list[tuple[int, int | None]] = []
        stop = threading.Event()

        def hammer(i: int) -> None:
            while not stop.is_set():
                r = c.post("/v1/predict", json={"items": texts[i:i + 3]})
                results.append((r.status_code, r.json().get("version")))

        threads = [threading.Thread(target=hammer, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        time.sleep(0.5)
        r = c.post("/v1/admin/reload", json={"version": v2, "wait": True}, headers=AUTH)
        assert r.status_code == 200 and r.json()["version"] == v2
        time.sleep(0.5)
        stop.set()
        for t in threads:
            t.join()
        assert results and all(code == 200 for code, _ in results)
        assert {v for _, v in results} == {v1, v2}
        r = c.post("/v1/admin/reload", json={}, headers=AUTH)  # background reload to the latest
        assert r.status_code == 202
        r = c.post("/v1/admin/reload", json={"version": 99, "wait": True}, headers=AUTH)
        assert r.status_code in (409, 422)
        assert _metric(c.get("/metrics").text, "manyfold_reloads_total", outcome="ok") >= 2


def test_serve_config_validates():
    with pytest.raises(manyfold.ConfigError, match="max_queue"):
        ServeConfig(assembly="x", max_queue=0)
    with pytest.raises(manyfold.ConfigError, match="assembly"):
        ServeConfig(assembly=3)


# -- fuzzing: no input gives a 5xx ---------------------------------------------------------
def test_fuzz_openapi_no_server_error(asm):
    """schemathesis generates valid and invalid requests for every operation of the OpenAPI schema."""
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis.checks import not_a_server_error

    app = create_app(ServeConfig(assembly=asm, admin_token=TOKEN, max_items_per_request=8, max_body_bytes=4096))
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    seen: dict[str, set[int]] = {}
    for result in schema.get_all_operations():
        op = result.ok()
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):

            @given(case=op.as_strategy(generation_mode=mode))
            @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck), database=None)
            def check(case) -> None:
                r = case.call_and_validate(headers=AUTH, checks=[not_a_server_error])
                seen.setdefault(op.label, set()).add(r.status_code)

            try:
                check()
            except Unsatisfiable:  # no input to break (e.g. GET /healthz has no parameters)
                assert mode == schemathesis.GenerationMode.NEGATIVE
    assert "POST /v1/predict" in seen and 200 in seen["POST /v1/predict"] and 422 in seen["POST /v1/predict"]
    assert all(code < 500 for codes in seen.values() for code in codes), seen


def test_shutdown_answers_requests_in_either_stage():
    """Stopping the batcher fails every request it holds (small stage, generalist stage, queued): none hangs."""
    from manyfold.serve._batching import MicroBatcher
    from manyfold.serve._engine import Pending
    from manyfold.serve._metrics import ServeMetrics

    gate = threading.Event()

    def run_batch(items, flags, defer=False, snap=None):  # "esc..." items escalate; "slow..." items hold the small stage
        if any(i.startswith("slow") for i in items):
            gate.wait(5)
        return [Pending(None, None, 0, i, {}) if i.startswith("esc") else i.upper() for i in items]

    def run_generalist(pending):
        gate.wait(5)
        return [p.item.upper() for p in pending]

    async def go():
        b = MicroBatcher(run_batch, ServeMetrics(), max_batch_size=1, max_wait_ms=0, max_queue=8,
                         run_generalist=run_generalist)
        await b.start()
        easy = b.submit(["easy"], True)
        assert (await asyncio.wait_for(easy, 2))[0] == ["EASY"]
        held = b.submit(["esc-1"], True)  # its generalist call blocks on the gate
        await asyncio.sleep(0.2)
        small = b.submit(["slow-1"], True)  # its small batch blocks on the gate
        await asyncio.sleep(0.2)
        queued = b.submit(["later"], True)  # waits behind it
        await b.stop()
        gate.set()
        return await asyncio.wait_for(asyncio.gather(held, small, queued, return_exceptions=True), 5)

    out = asyncio.run(go())
    assert all(isinstance(r, Exception) and "shutting down" in str(r) for r in out), out
