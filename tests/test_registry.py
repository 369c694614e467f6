"""Save / load round trips, versioning, corruption and interrupted saves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import manyfold
from manyfold import ArtifactError, AssemblyNotFoundError, Registry


def _files(root: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


def test_round_trip_gives_identical_predictions(tiny_asm, tiny_ds, tmp_path):
    reg = Registry(tmp_path)
    assert reg.save(tiny_asm, "tiny") == 1
    loaded = reg.load("tiny")
    items = tiny_ds.split("test").items
    a, b = tiny_asm.predict(items), loaded.predict(items)
    assert [p.label for p in a] == [p.label for p in b]
    np.testing.assert_allclose([p.confidence for p in a], [p.confidence for p in b], rtol=1e-6)
    assert [p.escalated for p in a] == [p.escalated for p in b]
    assert reg.list()[0]["name"] == "tiny" and reg.versions("tiny") == [1]
    assert not list(tmp_path.rglob("*.pkl")) and not list(tmp_path.rglob("*.tmp"))


def test_a_generalist_whose_encoder_now_builds_another_model_is_refused(tiny_asm, tmp_path, monkeypatch):
    """The generalist's head fits the vectors of the model it was trained on: a spec that now builds another
    version of the model (a new recipe, another id) must not silently feed it other vectors."""
    import manyfold.encoders as encoders

    reg = Registry(tmp_path)
    reg.save(tiny_asm, "tiny")
    real = encoders.get_encoder

    class Renamed:
        def __init__(self, enc):
            self._enc = enc

        def __getattr__(self, name):
            return getattr(self._enc, name)

        @property
        def id(self):
            return self._enc.id + "-r99"

    monkeypatch.setattr(encoders, "get_encoder",
                        lambda spec, *a, **k: Renamed(real(spec)) if spec == "hashing:dim=1024" else real(spec, *a, **k))
    with pytest.raises(ArtifactError, match=r"generalist was trained on encoder '.*', but its spec 'hashing:dim=1024' "
                                            r"builds '.*-r99'.*train the assembly again"):
        reg.load("tiny")
    monkeypatch.setattr(encoders, "get_encoder", real)
    assert reg.load("tiny").generalist.encoder_id_ == tiny_asm.generalist.encoder_id_


def test_new_version_after_adding_an_expert_shares_the_other_files(tiny_ds, tiny_asm_nine, tmp_path):
    doms = tiny_ds.domains
    asm = tiny_asm_nine  # conftest: hashing:dim=256, generalist hashing:dim=512, domains doms[:9]; a fresh copy
    reg = Registry(tmp_path)
    reg.save(asm, "grow")
    objects = tmp_path / "objects"
    m1 = reg.manifest("grow", 1)
    expert_dirs = [objects / e["ref"] for e in m1["experts"]]
    snap = {d.name: _files(d) for d in expert_dirs}
    tr, va = tiny_ds.split("train"), tiny_ds.split("val")
    asm.add_expert(manyfold.LinearExpert(doms[9]), tr.items, tr.labels, va.items, va.labels, labels=tiny_ds.labels_of(doms[9]))
    assert reg.save(asm, "grow") == 2
    m2 = reg.manifest("grow", 2)
    assert {e["ref"] for e in m1["experts"]} < {e["ref"] for e in m2["experts"]}
    assert {d.name: _files(d) for d in expert_dirs} == snap  # not a byte, not an mtime changed
    assert len(reg.load("grow", 1).experts) == 9 and len(reg.load("grow").experts) == 10


def test_unknown_name_lists_choices(tiny_asm, tmp_path):
    reg = Registry(tmp_path)
    reg.save(tiny_asm, "alpha")
    with pytest.raises(AssemblyNotFoundError, match="unknown assembly 'beta'; valid choices: alpha"):
        reg.load("beta")
    with pytest.raises(manyfold.ConfigError, match="invalid assembly name"):
        reg.load("../etc")


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete"])
def test_corrupted_artifacts_are_refused(tiny_asm, tmp_path, damage):
    reg = Registry(tmp_path)
    reg.save(tiny_asm, "c")
    ref = reg.manifest("c")["experts"][3]["ref"]
    f = tmp_path / "objects" / ref / "arrays.safetensors"
    data = f.read_bytes()
    if damage == "truncate":
        f.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        f.write_bytes(data[:-10] + bytes(b ^ 0xFF for b in data[-10:]))
    else:
        f.unlink()
    with pytest.raises(ArtifactError, match="arrays.safetensors"):
        reg.load("c")


def test_corrupted_manifest_is_refused(tiny_asm, tmp_path):
    reg = Registry(tmp_path)
    reg.save(tiny_asm, "m")
    mf = tmp_path / "assemblies" / "m" / "v0001.json"
    mf.write_text(mf.read_text()[:100])
    with pytest.raises(ArtifactError, match="corrupted or truncated JSON"):
        reg.load("m")


def test_interrupted_save_leaves_the_registry_consistent(tiny_asm, tmp_path, monkeypatch):
    reg = Registry(tmp_path)
    reg.save(tiny_asm, "keep")
    before = _files(tmp_path)
    import manyfold._registry as R

    calls = {"n": 0}
    real = R.save_arrays

    def flaky(path, arrays, metadata=None):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # Ctrl-C midway through writing the objects
        real(path, arrays, metadata)

    monkeypatch.setattr(R, "save_arrays", flaky)
    for e in tiny_asm.experts[:3]:  # make three expert objects new, so that they must be written
        e.card_.metrics["touched"] = 1.0
    try:
        with pytest.raises(KeyboardInterrupt):
            reg.save(tiny_asm, "keep")
    finally:
        for e in tiny_asm.experts[:3]:
            del e.card_.metrics["touched"]
    assert calls["n"] == 2
    assert reg.versions("keep") == [1]
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith((".tmp", ".old"))]
    after = _files(tmp_path)
    assert {k: v for k, v in after.items() if k in before} == before
    reg.load("keep")
