"""The OpenAI-compatible generalist against a real HTTP server on loopback."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

import manyfold
from manyfold import GeneralistError, OpenAIGeneralist


class _Handler(BaseHTTPRequestHandler):
    seen: list = []

    def log_message(self, *args):  # keep test output clean
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _Handler.seen.append((self.path, self.headers.get("Authorization"), body))
        text = body["messages"][-1]["content"]
        if "slow" in text:
            time.sleep(2)
        answer = "balance" if "balance" in text else "I think it is weather" if "sky" in text else "out_of_scope"
        data = json.dumps({"choices": [{"message": {"role": "assistant", "content": answer}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture()
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()


def test_answers_are_one_hot_and_invalid_answers_are_flagged(server, monkeypatch):
    monkeypatch.setenv("TEST_KEY", "sekrit")
    g = OpenAIGeneralist(server, model="m", api_key_env="TEST_KEY", timeout=5).fit(None, ["balance", "weather", "out_of_scope"])
    assert g.labels_.tolist() == ["balance", "weather", "out_of_scope"]
    proba, feats = g.signals(["what is my balance", "why is the sky blue", "tell me a joke"])
    assert g.labels_[proba.argmax(1)].tolist() == ["balance", "out_of_scope", "out_of_scope"]
    np.testing.assert_array_equal(feats, [[0, 0], [1, 1], [1, 0]])  # [is_oos, invalid_answer]
    path, auth, body = _Handler.seen[-1]
    assert path == "/v1/chat/completions" and auth == "Bearer sekrit" and body["model"] == "m"
    assert "balance, weather, out_of_scope" in body["messages"][0]["content"]
    g2 = OpenAIGeneralist.from_state(*g.to_state())
    assert g2.predict(["my balance please"]).tolist() == ["balance"]


def test_timeout_and_unreachable_endpoint_raise_generalist_error(server):
    g = OpenAIGeneralist(server, timeout=0.5).fit(None, ["balance"])
    with pytest.raises(GeneralistError, match="failed"):
        g.signals(["slow question"])
    g = OpenAIGeneralist("http://127.0.0.1:9/v1", timeout=0.5).fit(None, ["balance"])
    with pytest.raises(GeneralistError, match="127.0.0.1:9"):
        g.signals(["anything"])


def test_llm_generalist_inside_an_assembly(server, tiny_ds):
    """An assembly escalates to the LLM endpoint; a dead endpoint degrades, counted."""
    asm = manyfold.assemble(tiny_ds, encoder="hashing:dim=256", generalist=OpenAIGeneralist(server, timeout=5), cache=False)
    # this toy LLM knows one label, so the calibrated policy hardly escalates to it; force escalation of
    # everything to drive every request through the HTTP endpoint
    assert asm.calibration_["val_escalation_rate"] <= asm.config.max_escalation_rate + 1e-9
    # few escalated items leave most of the false-OOS budget unspent; that must not lower the stage-2
    # threshold to zero (which would call every escalated item out-of-scope)
    from manyfold._fit import MIN_OOS_PROBA

    assert MIN_OOS_PROBA <= asm.policy_.thresholds_["oos_threshold_escalated"] <= 2.0
    asm.policy_ = asm.policy_.with_thresholds(confidence_threshold=1.01)
    te = tiny_ds.split("test")
    n_before = len(_Handler.seen)
    preds = asm.predict(te.items[:40])
    assert all(p.escalated for p in preds) and not any(p.degraded for p in preds)
    assert len(_Handler.seen) == n_before + 40  # one chat completion per escalated item
    asm.generalist.base_url = "http://127.0.0.1:9/v1"
    preds = asm.predict(te.items[:40])
    assert all(p.degraded for p in preds if p.escalated) and asm.counters["generalist_failures"] == 1
