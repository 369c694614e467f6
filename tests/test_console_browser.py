"""The web console end to end in a real headless browser: Debian's Chromium (``/usr/bin/chromium``) driven by
Playwright, against ``manyfold serve``'s app under uvicorn on loopback with a toy assembly.

Behind the ``browser`` marker (``python -m pytest -m browser``; the default suite does not run it). Needs
``pip install -e ".[browser]"`` and the system Chromium (``apt-get install chromium``); never ``playwright
install`` (it downloads a browser). Where either is missing the tests are skipped, except under CI (``CI`` set,
as ``.ci/run`` runs), where they fail.

The page runs under its own CSP in these tests (no ``bypass_csp``), so every page-side check is a function, never
a string to evaluate (which the CSP refuses as eval).

Screenshots of each view (and the phone view) go to ``$MANYFOLD_CONSOLE_SHOTS`` when it is set (the ones in
``docs/console/`` were taken so: ``MANYFOLD_CONSOLE_SHOTS=docs/console python -m pytest -m browser``), else to
a temporary folder.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("one_torch_thread")]

CHROMIUM = os.environ.get("MANYFOLD_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TOKEN = "browser-admin-token"
XSS = "<img src=x onerror=alert(1)>"


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() not in ("", "0", "false", "no"):
        pytest.fail(f"{reason}; CI must run the browser tests (.ci/run installs chromium and playwright)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def shots() -> Path:
    out = os.environ.get("MANYFOLD_CONSOLE_SHOTS")
    path = Path(out) if out else Path(tempfile.mkdtemp(prefix="console_shots_"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def toy():
    pytest.importorskip("fastapi")
    import manyfold
    from _toy import ENC, GEN, toy_dataset

    ds = toy_dataset()
    return ds, manyfold.assemble(ds, encoder=ENC, generalist=GEN, cache=False)


@pytest.fixture(scope="module")
def server(toy, tmp_path_factory: pytest.TempPathFactory):
    """uvicorn on a free loopback port serving registry version 1 of the toy assembly (versions 1 and 2 saved, the
    dataset given so that experts can be added and removed)."""
    import manyfold
    from manyfold.serve import ServeConfig, create_app

    ds, asm = toy
    root = tmp_path_factory.mktemp("console_registry")
    reg = manyfold.Registry(root)
    reg.save(asm, "toy", note="first")
    reg.save(asm, "toy", note="second")
    app = create_app(ServeConfig(assembly="toy", version=1, registry_root=str(root), dataset=ds, admin_token=TOKEN))
    with _serving(app) as base:
        yield base


@contextmanager
def _serving(app):
    """``app`` under uvicorn on a free loopback port, until the block ends; yields its base URL once ready."""
    from _toy import answers_ready, uvicorn_in_thread, wait_until

    with uvicorn_in_thread(app, log_level="warning", access_log=False) as (_, port):
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: answers_ready(base), timeout=60, interval=0.1, what=f"{base}/readyz answering 200")
        yield base


@pytest.fixture(scope="module")
def context(tmp_path_factory: pytest.TempPathFactory):
    """A persistent context on a fresh user-data-dir of the system Chromium (nothing downloaded)."""
    if not Path(CHROMIUM).is_file():
        _unavailable(f"no Chromium at {CHROMIUM} (apt-get install -y chromium chromium-driver)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed (pip install -e '.[browser]'; never 'playwright install')")
    profile = tmp_path_factory.mktemp("chromium_profile")
    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(str(profile), executable_path=CHROMIUM, headless=True, args=ARGS,
                                                   viewport={"width": 1280, "height": 900})
        yield ctx
        ctx.close()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture()
def page(context, server):
    pg = context.new_page()
    pg.dialogs = []  # any alert() would land here (the XSS check)
    pg.on("dialog", lambda d: (pg.dialogs.append(d.message), d.dismiss()))
    pg.console_errors = []
    pg.on("console", lambda m: m.type == "error" and pg.console_errors.append(m.text))
    yield pg
    pg.close()


def _open(page, server: str, view: str) -> None:
    page.goto(f"{server}/ui#{view}")
    page.wait_for_function("() => document.getElementById('assembly').textContent.indexOf('toy') >= 0")
    assert page.is_visible(f"#view-{view}")


def _ask(page, text: str) -> str:
    page.fill("#text", text)
    page.click("#predict-btn")
    page.wait_for_function("([t]) => document.getElementById('r-input').textContent === t && "
                           "document.getElementById('predict-status').textContent === 'answered'", arg=[text])
    return page.text_content("#r-label")


# -- 1. the playground answers what /v1/predict answers ------------------------------------------------------
def test_playground_same_label_as_api(page, server, toy, shots):
    ds, _ = toy
    texts = list(ds.split("test").items[::5])[:6] + ["nothing any expert knows about zebra"]
    _open(page, server, "playground")
    for t in texts:
        shown = _ask(page, t)
        want = httpx.post(server + "/v1/predict", json={"item": t}).json()["predictions"][0]
        assert shown == want["label"], t
        assert page.text_content("#r-escalated") == ("yes" if want["escalated"] else "no")
        bars = page.locator("#r-experts .bar-row")
        assert bars.count() >= 1 and page.text_content("#r-experts .bar-row .bar-name") == want["experts"][0]
        stages = page.locator("#r-times .bar-name").all_text_contents()
        assert {"encode", "route", "experts", "total", "queue"} <= set(stages)
    page.screenshot(path=str(shots / "playground.png"), full_page=True)
    assert not page.dialogs and not page.console_errors


def test_xss_string_rendered_as_text(page, server):
    _open(page, server, "playground")
    _ask(page, XSS)
    assert page.text_content("#r-input") == XSS
    assert page.locator("#result img").count() == 0 and page.locator("img[src=x]").count() == 0
    page.wait_for_timeout(300)  # an onerror handler would have fired by now
    assert page.dialogs == []


def test_playground_image_upload(page, tmp_path, shots):
    """An image assembly (the 8x8-pixel one of test_serve_images): the playground takes a file instead of a text
    and answers what a multipart upload to /v1/predict answers."""
    pytest.importorskip("PIL.Image")
    import numpy as np
    from manyfold.serve import ServeConfig, create_app
    import manyfold
    from test_serve_images import LABELS, TinyPixels, data, pattern, png

    experts = [manyfold.HeadExpert("rows"), manyfold.HeadExpert("cols")]
    img_asm = manyfold.Assembly(TinyPixels(), manyfold.LinearRouter(), experts).fit(*data(10, 0), *data(4, 1),
                                                                                    label_to_expert=LABELS)
    with _serving(create_app(ServeConfig(assembly=img_asm))) as base:
        page.goto(f"{base}/ui#playground")
        page.wait_for_selector("#image-row", state="visible")
        assert page.is_hidden("#text-row")
        rng = np.random.default_rng(7)
        for label in ("top", "left"):
            path = tmp_path / f"{label}.png"
            path.write_bytes(png(np.kron(pattern(label, rng), np.ones((4, 4), np.uint8))))
            page.set_input_files("#image", str(path))
            page.click("#predict-btn")
            page.wait_for_function("([t]) => document.getElementById('r-input').textContent === t && "
                                   "document.getElementById('predict-status').textContent === 'answered'",
                                   arg=[path.name])
            with path.open("rb") as f:
                want = httpx.post(base + "/v1/predict", files={"file": (path.name, f, "image/png")}).json()
            assert page.text_content("#r-label") == want["predictions"][0]["label"] == label
        assert page.is_visible("#image-preview")
        page.screenshot(path=str(shots / "playground_image.png"), full_page=True)
    assert not page.dialogs


# -- 2. every expert has its card ---------------------------------------------------------------------------
def test_experts_page_lists_every_expert(page, server, shots):
    experts = httpx.get(server + "/v1/experts").json()
    _open(page, server, "experts")
    page.wait_for_function("n => document.querySelectorAll('#expert-cards article').length === n", arg=len(experts))
    names = page.locator("#expert-cards article h3").all_text_contents()
    assert sorted(names) == sorted(e["name"] for e in experts)
    for e in experts:
        card = page.locator(f"#expert-cards article[data-expert='{e['name']}']")
        assert sorted(card.locator(".chip").all_text_contents()) == sorted(e["labels"])
    assert page.locator("#calibration tr").count() >= 5
    page.screenshot(path=str(shots / "experts.png"), full_page=True)


# -- 3. the live view sees traffic within 5 s ------------------------------------------------------------------
def test_live_rps_after_50_requests(page, server, toy, shots):
    ds, _ = toy
    texts = list(ds.split("test").items)
    _open(page, server, "live")
    page.wait_for_function("() => document.getElementById('live-queue').textContent !== '\u2013'")
    with httpx.Client(base_url=server) as c:
        for i in range(50):
            assert c.post("/v1/predict", json={"item": texts[i % len(texts)]}).status_code == 200
    t0 = time.perf_counter()
    page.wait_for_function("() => parseFloat(document.getElementById('live-rps').textContent) > 0", timeout=5000)
    waited = time.perf_counter() - t0
    assert waited <= 5.0
    assert float(page.text_content("#live-rps")) > 0
    assert page.text_content("#live-p50").endswith(" ms")  # the window holds the 50 requests
    assert page.locator("#live-stages tbody tr").count() >= 4
    assert page.locator("#live-experts .bar-row").count() >= 1
    page.wait_for_timeout(2500)  # one more poll: the sparklines have two points
    page.screenshot(path=str(shots / "live.png"), full_page=True)


# -- 4. phone width, keyboard only ----------------------------------------------------------------------------
_CONTROLS = """() => Array.from(document.querySelectorAll('button, input, select, textarea'))
  .filter(e => !e.disabled && e.offsetParent !== null).map(e => e.id)"""
_FOCUS = """() => { const e = document.activeElement; const s = getComputedStyle(e);
  return {id: e.id, style: s.outlineStyle, width: parseFloat(s.outlineWidth)}; }"""


def _tab_through(page, n: int) -> dict[str, dict]:
    seen: dict[str, dict] = {}
    page.evaluate("() => document.activeElement && document.activeElement.blur()")
    page.focus("body")
    for _ in range(n):
        page.keyboard.press("Tab")
        f = page.evaluate(_FOCUS)
        if f["id"]:
            seen.setdefault(f["id"], f)
    return seen


def test_phone_width_and_keyboard_only(context, server, shots):
    page = context.new_page()
    try:
        page.set_viewport_size({"width": 390, "height": 844})
        _open(page, server, "playground")
        # the views, switched with the keyboard only: Enter on one tab, Space on the next
        for i, view in enumerate(("playground", "experts", "live", "admin")):
            page.focus(f"#tab-{view}")
            page.keyboard.press("Enter" if i % 2 == 0 else "Space")
            page.wait_for_selector(f"#view-{view}", state="visible")
            page.wait_for_timeout(300)  # its data came
            width = page.evaluate("() => document.documentElement.scrollWidth")
            assert width <= 390, (view, width)
            controls = page.evaluate(_CONTROLS)
            seen = _tab_through(page, len(controls) + 3)
            missing = [c for c in controls if c not in seen]
            assert not missing, (view, missing)
            for cid in controls:
                assert seen[cid]["style"] != "none" and seen[cid]["width"] >= 2, (view, seen[cid])
        # operate the playground by keyboard: type, Space toggles the checkbox, Enter on the button asks
        page.focus("#tab-playground")
        page.keyboard.press("Enter")
        page.focus("#text")
        page.keyboard.type("w1x2 w1x3 please")
        page.keyboard.press("Tab")
        assert page.evaluate("() => document.activeElement.id") == "escalate"
        page.keyboard.press("Space")
        assert page.is_checked("#escalate") is False
        page.keyboard.press("Space")
        assert page.is_checked("#escalate") is True
        page.keyboard.press("Tab")
        assert page.evaluate("() => document.activeElement.id") == "predict-btn"
        page.keyboard.press("Enter")
        page.wait_for_function("() => document.getElementById('predict-status').textContent === 'answered'")
        assert page.evaluate("() => document.documentElement.scrollWidth") <= 390
        page.screenshot(path=str(shots / "phone.png"), full_page=True)
        # an admin button pressed with Space is answered visibly (no token: 401)
        page.focus("#tab-admin")
        page.keyboard.press("Enter")
        page.focus("#reload-btn")
        page.keyboard.press("Space")
        page.wait_for_selector("#admin-log li")
        assert "401" in page.text_content("#admin-log li")
    finally:
        page.close()


# -- 5. admin: refused without the token, done with it (last: it changes the server) ---------------------------
def _answer(page, button: str, n: int) -> str:
    page.click(button)
    page.wait_for_function("n => document.querySelectorAll('#admin-log li').length >= n", arg=n)
    return page.text_content("#admin-log li:first-child")


def test_admin_needs_the_token(page, server, toy, shots):
    ds, asm = toy
    victim = asm.expert_names[0]
    labels = [lab for lab in ds.labels if ds.domain_of(lab) == victim]
    _open(page, server, "admin")
    page.wait_for_function("() => document.querySelectorAll('#remove-name option').length > 0")
    page.select_option("#remove-name", victim)
    n = 0
    # without a token, then with a wrong one: refused, said so, nothing changed
    for typed, code in (("", "401"), ("not-the-token", "403")):
        page.fill("#token", typed)
        for button in ("#remove-btn", "#reload-btn"):
            n += 1
            text = _answer(page, button, n)
            assert code in text, text
        page.fill("#add-name", "extra")
        page.fill("#add-train", "intent0, w0x1 w0x2")
        page.fill("#add-val", "intent0, w0x3 w0x4")
        n += 1
        assert code in _answer(page, "#add-btn", n)
    assert victim in [e["name"] for e in httpx.get(server + "/v1/experts").json()]
    # with the token: reload version 2, remove an expert, add it back under a new name
    page.fill("#token", TOKEN)
    n += 1
    text = _answer(page, "#reload-btn", n)
    assert "200 ready, version 2" in text, text
    n += 1
    text = _answer(page, "#remove-btn", n)
    assert text.count("200 removed") == 1 and victim not in text.split("experts:")[1], text
    assert victim not in [e["name"] for e in httpx.get(server + "/v1/experts").json()]
    tr, va = ds.split("train"), ds.split("val")
    lines = lambda s: "\n".join(f"{lab}, {t}" for t, lab in zip(s.items, s.labels.tolist()) if lab in labels)  # noqa: E731
    page.fill("#add-name", victim + "_new")
    page.fill("#add-train", lines(tr))
    page.fill("#add-val", lines(va))
    n += 1
    text = _answer(page, "#add-btn", n)
    assert "201 added" in text and victim + "_new" in text, text
    assert victim + "_new" in [e["name"] for e in httpx.get(server + "/v1/experts").json()]
    page.wait_for_function("v => Array.from(document.querySelectorAll('#remove-name option')).some(o => o.value === v)",
                           arg=victim + "_new")
    # the token never left the page: no cookie, no web storage
    assert context_cookies(page) == []
    assert page.evaluate("() => localStorage.length + sessionStorage.length") == 0
    assert TOKEN not in page.content().replace(f'value="{TOKEN}"', "")
    page.screenshot(path=str(shots / "admin.png"), full_page=True)


def context_cookies(page) -> list:
    return page.context.cookies()
