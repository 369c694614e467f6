"""A mini benchmark run: CLINC150 subset, hashing encoders (no real models), report files written."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from _data import missing

from manyfold.bench import BenchConfig, bench_main

SHARED = Path(os.environ.get("MANYFOLD_TEST_DATA") or Path(__file__).parents[1].parent / "shared" / "data")


def test_mini_bench_writes_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if not (SHARED / "clinc150").is_dir():
        missing(f"no CLINC150 copy under {SHARED}")
    monkeypatch.setenv("MANYFOLD_HOME", str(tmp_path / "home"))
    cfg = BenchConfig(small="hashing:dim=64", big="hashing:dim=128", generalist="concat:hashing:dim=96+hashing:dim=32,seed=1",
                      subset=3, data_sizes=(2,), scaling_sizes=(10, 30), n_single=5, batch=8, repeats=3,
                      sweep_points=5)
    res = bench_main("clinc150", data_dir=str(SHARED), out_dir=str(tmp_path / "out"), config=cfg, progress=False)
    out = tmp_path / "out"
    for suffix in (".md", ".json", "_pareto.png", "_latency_cdf.png", "_scaling.png", "_data_efficiency.png"):
        assert (out / f"bench_clinc150{suffix}").is_file(), suffix
    data = json.loads((out / "bench_clinc150.json").read_text())
    assert {"flat_small", "flat_big", "generalist", "assembly_linear_top2_esc", "assembly_linear_top1_noesc",
            "assembly_knn_top2_esc", "assembly_oracle-routing_top2_noesc"} <= set(data["systems"])
    for r in res["systems"].values():
        assert 0.0 <= r["in_scope_accuracy"] <= 1.0 and r["relative_cost"] > 0
    assert [r["n_experts"] for r in data["scaling"]] == [10, 30]
    assert "Which system suits which need" in (out / "bench_clinc150.md").read_text()
