"""The web console's server side (fast, no browser): its files, headers and JSON endpoints on a toy assembly.

The console in a real browser is tested in ``test_console_browser.py`` (``pytest -m browser``).
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("prometheus_client")

import manyfold  # noqa: E402
from _toy import asm, ds  # noqa: E402,F401 (fixtures)
from fastapi.testclient import TestClient  # noqa: E402
from manyfold.serve import ServeConfig, create_app  # noqa: E402
from manyfold.serve._console import CONSOLE_ASSETS, CONSOLE_CSP, console_asset, json_safe  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")
TOKEN = "console-admin"


def _client(asm, **kw) -> TestClient:
    return TestClient(create_app(ServeConfig(assembly=asm, admin_token=TOKEN, **kw)))


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.script_text = ""
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"

    def handle_endtag(self, tag):
        self._in_script = False

    def handle_data(self, data):
        if self._in_script:
            self.script_text += data


def test_assets_ship_in_the_package():
    for name in CONSOLE_ASSETS:
        assert len(console_asset(name)) > 200, name
    with pytest.raises(KeyError, match="valid: index.html, console.js, console.css, favicon.svg"):
        console_asset("secret.txt")


def test_page_and_files_served_with_types_and_csp(asm):
    with _client(asm) as c:
        for path, ctype in (("/", "text/html"), ("/ui", "text/html"), ("/ui/", "text/html"),
                            ("/ui/console.js", "text/javascript"), ("/ui/console.css", "text/css"),
                            ("/ui/favicon.svg", "image/svg+xml")):
            r = c.get(path)
            assert r.status_code == 200, path
            assert r.headers["content-type"].startswith(ctype), (path, r.headers["content-type"])
            assert r.headers["content-security-policy"] == CONSOLE_CSP
            assert r.headers["x-content-type-options"] == "nosniff"
            assert r.headers["x-frame-options"] == "DENY"
        assert c.get("/ui/other.js").status_code == 404
        m = c.get("/metrics").text  # the console's files under one bounded endpoint label
        assert 'manyfold_http_requests_total{endpoint="/ui",method="GET",status="200"} 6.0' in m
        # a host the server does not answer gets no console either (DNS rebinding)
        r = c.get("/ui", headers={"Host": "attacker.example"})
        assert r.status_code == 400 and r.json()["error"] == "invalid_host"
    csp = dict(part.strip().split(" ", 1) for part in CONSOLE_CSP.split(";"))
    assert csp["script-src"] == "'self'" and csp["default-src"] == "'none'" and csp["connect-src"] == "'self'"
    assert "unsafe" not in CONSOLE_CSP


def test_page_has_no_inline_script_style_or_handlers():
    p = _Tags()
    p.feed(console_asset("index.html").decode())
    scripts = [a for t, a in p.tags if t == "script"]
    assert scripts and all(a.get("src", "").startswith("/ui/") for a in scripts)
    assert p.script_text.strip() == ""
    for tag, attrs in p.tags:
        assert not any(k.startswith("on") for k in attrs), (tag, attrs)
        assert "style" not in attrs, (tag, attrs)
        for k in ("src", "href"):
            assert not str(attrs.get(k) or "").startswith(("http:", "https:", "//")), (tag, attrs)  # nothing fetched
    js = re.sub(r"^\s*//.*$", "", console_asset("console.js").decode(), flags=re.M)  # code, not its comments
    for banned in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function",
                   "localStorage", "sessionStorage", "document.cookie", "http://", "https://"):
        if banned in ("http://", "https://"):
            assert all("w3.org" in line for line in js.splitlines() if banned in line), banned  # the SVG namespace only
        else:
            assert banned not in js, banned
    assert not re.search(r"setTimeout\(\s*['\"]", js) and not re.search(r"setInterval\(\s*['\"]", js)


def test_info_names_the_assembly_and_never_the_token(asm):
    with _client(asm) as c:
        r = c.get("/v1/console/info")
        assert r.status_code == 200
        info = r.json()
        assert info["ready"] is True and info["modality"] == "text"
        assert info["experts"] == list(asm.expert_names) and info["top_k"] == asm.config.top_k
        assert info["oos_label"] == "out_of_scope" and info["calibration"] and info["thresholds"]
        assert info["admin"] == {"token_configured": True, "registry": False}
        assert TOKEN not in r.text
        assert TOKEN not in c.get("/").text and TOKEN not in c.get("/ui/console.js").text
    with TestClient(create_app(ServeConfig(assembly=asm))) as c:
        assert c.get("/v1/console/info").json()["admin"]["token_configured"] is False


def test_stats_count_requests_per_expert_and_stage(asm, ds):
    texts = list(ds.split("test").items[:12])
    with _client(asm) as c:
        s0 = c.get("/v1/console/stats").json()
        assert s0["requests"] == {} and s0["items"] == 0 and s0["queue_depth"] == 0
        for t in texts:
            assert c.post("/v1/predict", json={"item": t}).status_code == 200
        assert c.post("/v1/route", json={"items": texts[:2]}).status_code == 200
        assert c.post("/v1/predict", json={"items": []}).status_code == 422
        c.get("/ui")  # the console's own requests are not traffic
        s = c.get("/v1/console/stats").json()
    assert s["requests"] == {"200": 13.0, "422": 1.0}
    assert s["items"] == 12
    want = {}
    for p in asm.predict(texts):
        want[p.experts[0]] = want.get(p.experts[0], 0) + 1
    assert {e: v["items"] for e, v in s["experts"].items() if v["items"]} == want
    esc = sum(p.escalated for p in asm.predict(texts))
    assert sum(v["escalated"] for v in s["experts"].values()) == esc
    total = s["stages"]["request"]
    assert total["le"][-1] is None and len(total["le"]) == len(total["counts"]) >= 20  # finer buckets
    assert total["counts"] == sorted(total["counts"]) and total["counts"][-1] == total["count"] == 13
    assert {"encode", "route", "experts", "queue", "batch_total"} <= set(s["stages"])
    assert s["time"] > 0 and s["uptime_s"] >= 0


def test_per_expert_counter_in_prometheus(asm, ds):
    with _client(asm) as c:
        c.post("/v1/predict", json={"items": list(ds.split("test").items[:5])})
        m = c.get("/metrics").text
    got = sum(float(x) for x in re.findall(r'^manyfold_expert_items_total\{expert="[^"]+"\} ([0-9.]+)$', m, re.M))
    assert got == 5
    assert 'manyfold_stage_duration_seconds_bucket{le="0.0075",stage="encode"}' in m


def test_console_off(asm):
    with _client(asm, console=False) as c:
        for path in ("/", "/ui", "/ui/console.js", "/v1/console/info", "/v1/console/stats"):
            assert c.get(path).status_code == 404, path
        assert c.get("/healthz").status_code == 200
    with pytest.raises(manyfold.ConfigError, match="console must be True or False, got 'yes'"):
        ServeConfig(assembly=asm, console="yes")


def test_json_safe():
    np = pytest.importorskip("numpy")
    assert json_safe({"a": np.float32(0.5), 1: (np.int64(2), float("nan")), "b": np.array([1.0, np.inf]),
                      "c": "NaN"}) == {"a": 0.5, "1": [2, None], "b": [1.0, None], "c": "NaN"}
