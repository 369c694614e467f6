"""Issue 14, defect 10: `manyfold list` on a broken manifest, leftovers of killed writes (`manyfold gc`),
`experts add` checking the expert's name before any data is read, and CI failing without the shared data."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from _toy import ENC, toy_csv

import manyfold
from manyfold import ArtifactError, Registry
from manyfold._cli import main

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_torch_thread")

# toy_asm (conftest): assemble(toy_dataset(), encoder=ENC, generalist=GEN) built once a session, copied per module


@pytest.mark.parametrize("damage", ["half", "empty object", "format only", "no experts"])
def test_list_names_a_broken_manifest_and_exits_non_zero(toy_asm, capsys, damage):
    reg = Registry()
    reg.save(toy_asm, "good")
    reg.save(toy_asm, "bad")
    p = reg.root / "assemblies" / "bad" / "v0001.json"
    text = p.read_text()
    p.write_text({"half": text[: len(text) // 2], "empty object": "{}", "format only": '{"format": 2}',
                  "no experts": json.dumps({**json.loads(text), "experts": []})}[damage])
    rows = {r["name"]: r for r in reg.list()}
    assert "error" in rows["bad"] and rows["good"]["version"] == 1
    with pytest.raises(SystemExit) as ex:
        main(["list"])
    out, err = capsys.readouterr()
    assert ex.value.code == 2
    assert "good  v1  3 experts" in out and "bad  error: " in out and "vNone" not in out
    assert "1 assembly cannot be read: bad" in err


def _leftovers(reg: Registry, name: str) -> list[Path]:
    """What kill -9 during writes leaves: a manifest's temp file, a half-built object folder, a pseudo-label temp."""
    d = reg.root / "assemblies" / name
    fd, tmp_manifest = tempfile.mkstemp(prefix=".v0002.json.", suffix=".tmp", dir=d)
    os.write(fd, b'{"format": 2, "na')
    os.close(fd)
    half = Path(tempfile.mkdtemp(prefix=".expert-0123456789abcdef01234567.", suffix=".tmp", dir=reg.root / "objects"))
    (half / "state.json").write_text("{}")
    fly = reg.root / "flywheel" / name
    fly.mkdir(parents=True)
    (fly / "v0002.pseudo.jsonl.tmp").write_text('{"text": "x"')
    return [Path(tmp_manifest), half, fly / "v0002.pseudo.jsonl.tmp"]


def _age(paths: list[Path], seconds: float) -> None:
    t = time.time() - seconds
    for p in paths:
        os.utime(p, (t, t))


def test_gc_removes_leftovers_of_killed_writes_and_unreferenced_objects(toy_asm, capsys):
    reg = Registry()
    reg.save(toy_asm, "g")
    refs_before = sorted(p.name for p in (reg.root / "objects").iterdir())
    left = _leftovers(reg, "g")
    (reg.root / "objects" / "expert-00000000000000000000ffff").mkdir()  # no manifest refers to it
    orphan = reg.root / "objects" / "expert-00000000000000000000ffff"

    main(["gc"])  # everything is new: a save could be in progress, nothing goes
    assert all(p.exists() for p in [*left, orphan])
    assert "removed 0 unreferenced objects" in capsys.readouterr().out

    _age([*left, orphan], 3600)
    main(["gc", "--dry-run"])
    assert "would remove 1 unreferenced object, 0 pseudo-label files, 3 leftover temporary files" in capsys.readouterr().out
    assert all(p.exists() for p in [*left, orphan])

    main(["gc"])
    out = capsys.readouterr().out
    assert "removed 1 unreferenced object, 0 pseudo-label files, 3 leftover temporary files" in out
    assert not any(p.exists() for p in [*left, orphan])
    assert sorted(p.name for p in (reg.root / "objects").iterdir()) == refs_before  # every referenced object stays
    assert reg.load("g").expert_names == toy_asm.expert_names


def test_gc_removes_nothing_while_a_manifest_is_unreadable(toy_asm):
    reg = Registry()
    reg.save(toy_asm, "h")
    orphan = reg.root / "objects" / "router-00000000000000000000aaaa"
    orphan.mkdir()
    _age([orphan], 3600)
    (reg.root / "assemblies" / "h" / "v0001.json").write_text("{")
    with pytest.raises(ArtifactError, match="corrupted or truncated JSON"):
        reg.gc()
    assert orphan.exists()


def test_experts_add_checks_the_name_before_loading_anything(tmp_path, monkeypatch, capsys):
    ds = manyfold.load_dataset(str(toy_csv(tmp_path / "toy.csv")))
    Registry().save(manyfold.assemble(ds, encoder=ENC, generalist=None, domains=["alpha", "beta"], cache=False), "toy")
    calls = []
    real = manyfold.data.load_dataset_ref

    def spy(*a, **kw):
        calls.append(a)
        return real(*a, **kw)

    monkeypatch.setattr(manyfold.data, "load_dataset_ref", spy)
    for bad, match in (("a/b", "invalid expert name 'a/b'"), (" padded", "invalid expert name"),
                       ("alpha", "already in 'toy'")):
        with pytest.raises(SystemExit) as ex:
            main(["experts", "add", "toy", bad, "--domain", "gamma"])
        assert ex.value.code == 2 and match in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["experts", "add", "toy", "new", "--domain", "gamma", "--kind", "cnn"])
    assert "unknown expert kind 'cnn'" in capsys.readouterr().err
    assert calls == []  # no data was read for any of them
    main(["experts", "add", "toy", "gamma", "--domain", "gamma"])
    assert len(calls) == 1 and Registry().versions("toy") == [1, 2]


def test_ci_fails_when_the_shared_data_is_missing(tmp_path):
    env = {**os.environ, "MANYFOLD_TEST_DATA": str(tmp_path / "no-data")}
    r = subprocess.run(["bash", str(ROOT / ".ci" / "run")], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert "error: the shared data is missing" in r.stderr and "no-data" in r.stderr
