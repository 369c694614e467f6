"""Integration test of the Ray Serve deployment (``manyfold serve NAME --ray``); run with ``pytest -m ray``.

Marked ``slow`` too, so the default run (``-m 'not slow'``) leaves it out:
starting Ray takes tens of seconds on a small machine. ``.ci/run`` installs
``manyfold[ray]`` and runs it with ``MANYFOLD_REQUIRE_RAY=1``: there a missing
Ray or missing data is a failure, not a skip.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from _data import missing
from _toy import answers_ready, wait_until

pytestmark = [pytest.mark.ray, pytest.mark.slow]

DATA = os.environ.get("MANYFOLD_TEST_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data"))
REQUIRED = os.environ.get("MANYFOLD_REQUIRE_RAY") == "1"


def _need(module: str):
    if REQUIRED:
        import importlib

        return importlib.import_module(module)  # CI: a missing dependency fails the test
    return pytest.importorskip(module)


def test_ray_serve_deployment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ray = _need("ray")
    serve = _need("ray.serve")
    httpx = _need("httpx")
    import manyfold
    from manyfold.serve import ServeConfig, build_ray_app

    if not (Path(DATA) / "clinc150").is_dir():
        if REQUIRED:
            pytest.fail(f"CLINC150 not found under {DATA} (set MANYFOLD_TEST_DATA)")
        missing(f"CLINC150 not found under {DATA} (set MANYFOLD_TEST_DATA)")
    monkeypatch.setenv("MANYFOLD_HOME", str(tmp_path))
    ds = manyfold.load_dataset("clinc150", DATA).subset(3, seed=0)
    asm = manyfold.assemble(ds, encoder="hashing", generalist="hashing:dim=2048", domains=ds.domains[:3])
    manyfold.Registry().save(asm, "tiny")
    texts = list(ds.split("test").items[:8])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ray.init(num_cpus=2, include_dashboard=False, runtime_env={"env_vars": {"MANYFOLD_HOME": str(tmp_path)}})
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_ray_app(ServeConfig(assembly="tiny"), expert_replicas=1), name="manyfold", route_prefix="/")
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: answers_ready(base), timeout=120, interval=1, what=f"{base}/readyz answering 200")
        r = httpx.post(base + "/v1/predict", json={"items": texts}, timeout=60)
        assert r.status_code == 200, r.text
        got = [p["label"] for p in r.json()["predictions"]]
        assert got == [p.label for p in asm.predict(texts)]  # remote experts answer like local ones
        assert httpx.post(base + "/v1/predict", json={"items": []}, timeout=30).status_code == 422
        assert {e["name"] for e in httpx.get(base + "/v1/experts", timeout=30).json()} == set(asm.expert_names)
    finally:
        serve.shutdown()
        ray.shutdown()
