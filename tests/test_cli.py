"""The CLI: the real commands on small data; errors are one readable line and a non-zero exit."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import manyfold


def run(*args: str, env_home=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "manyfold._cli", *args], capture_output=True, text=True, timeout=600)


def test_unknown_assembly_is_one_line_and_exit_2():
    out = run("predict", "nope", "hello")
    assert out.returncode == 2
    assert out.stderr.strip() == "error: unknown assembly 'nope'; there is no assembly yet"


def test_missing_data_dir_is_one_line(tmp_path):
    out = run("assemble", "clinc150", "--data-dir", str(tmp_path / "nowhere"), "--encoder", "hashing:dim=64")
    assert out.returncode != 0
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "nowhere" in lines[0]


def test_unknown_dataset_lists_choices():
    out = run("assemble", "imagenet")
    assert out.returncode == 2 and "clinc150" in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_saved_assembly_through_the_cli(tiny_asm, tiny_ds):
    reg = manyfold.Registry()
    reg.save(tiny_asm, "tiny", extra={"dataset": "clinc150", "data_dir": None})
    out = run("predict", "tiny", "what is my balance", "--json")
    assert out.returncode == 0, out.stderr
    pred = json.loads(out.stdout)
    assert pred["label"] and "timings_ms" in pred
    out = run("predict", "tiny", "")
    assert out.returncode == 2 and out.stderr.strip() == "error: item 0 is empty or only whitespace"
    out = run("predict", "tiny", "x" * 100_000)
    assert out.returncode == 2 and "100000 characters" in out.stderr
    out = run("list", "--json")
    assert json.loads(out.stdout)[0]["name"] == "tiny"
    out = run("experts", "list", "tiny", "--json")
    assert len(json.loads(out.stdout)) == 10
    out = run("experts", "remove", "tiny", "ghost")
    assert out.returncode == 2 and out.stderr.strip().startswith("error: unknown expert 'ghost'; valid choices: auto_and_commute")
    out = run("experts", "add", "tiny", "banking", "--domain", "banking")
    assert out.returncode == 2 and "already in 'tiny'" in out.stderr


@pytest.mark.slow
def test_assemble_evaluate_add_remove_full_clinc150_hashing(data_dir):
    """Full CLINC150 through the CLI on hashing encoders (about a minute)."""
    d = str(data_dir)
    common = ["--data-dir", d, "--encoder", "hashing:dim=256", "--generalist", "hashing:dim=512"]
    doms = manyfold.load_dataset("clinc150", d).domains
    out = run("assemble", "clinc150", "--name", "h", "--domains", ",".join(doms[:9]), *common)
    assert out.returncode == 0, out.stderr
    out = run("experts", "add", "h", "late", "--domain", doms[9], "--data-dir", d)
    assert out.returncode == 0, out.stderr
    out = run("evaluate", "h", "--json", "--data-dir", d)
    rep = json.loads(out.stdout)
    for key in ("in_scope_accuracy", "oos_recall", "oos_auroc", "escalation_rate", "routing_accuracy", "n_in_scope", "n_oos"):
        assert key in rep
    assert rep["n_in_scope"] == 4500 and rep["n_oos"] == 1000
    out = run("experts", "remove", "h", "late", "--data-dir", d)
    assert out.returncode == 0, out.stderr


def test_demo_quick_picks_the_generalist_itself():
    out = run("demo", "--quick", "--generalist", "mpnet")
    assert out.returncode == 2
    assert out.stderr.strip() == ("error: --quick picks the generalist (a head on MiniLM); leave out --generalist, "
                                  "or --quick")
