"""Sentence-transformers models on onnxruntime: exported once from the local weights, run in fp32 or int8.

``get_encoder("minilm:runtime=onnx")`` (or ``mpnet:...``, ``st:<path or hub id>?runtime=onnx``) gives
an :class:`OrtSentenceEncoder`. On its first use the model's transformer is exported to ONNX from the
same weights the PyTorch encoder loads (``torch.onnx.export``), optionally quantised to int8
(``quantize=int8``: onnxruntime dynamic quantisation, int8 weights per output channel), and kept under
``manyfold_home()/models/onnx/`` in a folder written atomically; later runs load it in well under a
second without importing torch. Tokenisation uses the model's own ``tokenizer.json`` (Rust
``tokenizers``), pooling and normalisation follow the model's sentence-transformers modules.

* fp32 gives the PyTorch encoder's vectors to float rounding, so it shares its ``id`` (and its
  cached vectors): the runtime is a deployment choice, like the device.
* int8 changes the vectors (cosine ~0.99 to fp32), so its ``id`` says so and nothing is shared.

Batches are formed by token length (dynamic padding: a batch is padded to its own longest text),
and every session uses the process's thread budget (:func:`manyfold.set_threads`) with idle
threads that sleep instead of spinning, so two stages of a server do not fight for the cores.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._exceptions import ArtifactError, ConfigError, missing_dependency
from .._io import atomic_dir, atomic_write_json, manyfold_home
from ._common import TextEncoder, check_texts, empty_matrix, format_options
from ._sentence_transformers import SentenceTransformerEncoder

__all__ = ["OrtSentenceEncoder", "RUNTIMES", "QUANTIZE"]

#: where a sentence-transformers model can run
RUNTIMES = ("torch", "onnx")
#: weight precision of the ONNX graph
QUANTIZE = ("none", "int8")
_EXPORT_VERSION = 1
_POOLING = ("mean", "cls")


def _fingerprint(model_dir: Path) -> str:
    """What identifies a model folder's weights without reading gigabytes: file names and sizes, plus the
    config, plus the export recipe's version."""
    h = hashlib.sha256(f"manyfold-onnx-export-v{_EXPORT_VERSION}".encode())
    for p in sorted(model_dir.rglob("*")):
        if p.is_file() and not p.name.startswith("."):
            h.update(f"{p.relative_to(model_dir).as_posix()}:{p.stat().st_size};".encode())
    cfg = model_dir / "config.json"
    if cfg.is_file():
        h.update(cfg.read_bytes())
    return h.hexdigest()[:16]


def _pooling_mode(config: dict) -> str:
    """``"mean"`` or ``"cls"`` from a sentence-transformers Pooling config (old or new key style)."""
    mode = config.get("pooling_mode")
    if mode is None:
        flags = [k[len("pooling_mode_"):] for k, v in config.items() if k.startswith("pooling_mode_") and v]
        mode = {"mean_tokens": "mean", "cls_token": "cls"}.get(flags[0], flags[0]) if len(flags) == 1 else "+".join(flags)
    if mode not in _POOLING:
        raise ConfigError(f"runtime=onnx supports mean or cls pooling; this model pools with {mode!r}")
    return str(mode)


def _export(model_dir: Path, target: Path, quantize: str) -> None:
    """Export ``model_dir`` (a sentence-transformers folder) into ``target``: ``model.onnx``,
    ``tokenizer.json`` and ``meta.json``, written in a temp sibling and renamed in one step."""
    try:
        import torch
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise missing_dependency("sentence-transformers", "text", "exporting a model for runtime=onnx") from None
    try:
        import onnx  # noqa: F401 - torch.onnx.export needs it
    except ImportError:
        raise missing_dependency("onnx", "export", "exporting a model for runtime=onnx") from None
    # a model of its own: the exporter leaves the module it traced unusable for eager runs
    st = SentenceTransformer(str(model_dir), device="cpu", local_files_only=True)
    st.eval()
    modules = [type(m).__name__ for m in st]
    if not modules or modules[0] != "Transformer" or "Pooling" not in modules:
        raise ConfigError(f"runtime=onnx supports Transformer + Pooling [+ Normalize] models; {str(model_dir)!r} "
                          f"has {' + '.join(modules)}")
    extra = [m for m in modules[1:] if m not in ("Pooling", "Normalize")]
    if extra:
        raise ConfigError(f"runtime=onnx supports Transformer + Pooling [+ Normalize] models; {str(model_dir)!r} "
                          f"also has {', '.join(extra)} (use runtime=torch)")
    pooling = _pooling_mode(st[modules.index("Pooling")].get_config_dict())
    transformer = st[0]
    auto_model = transformer.auto_model
    hf_tok = transformer.tokenizer
    backend = getattr(hf_tok, "backend_tokenizer", None) or getattr(hf_tok, "_tokenizer", None)
    if backend is None:
        raise ConfigError(f"runtime=onnx needs a fast (Rust) tokenizer; {str(model_dir)!r} has {type(hf_tok).__name__}")
    dim = int(auto_model.config.hidden_size)

    class _Body(torch.nn.Module):
        def __init__(self, m: Any) -> None:
            super().__init__()
            self.m = m

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            return self.m(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    sample = hf_tok(["an example text to trace", "short"], padding=True, return_tensors="pt")
    with atomic_dir(target) as tmp:
        fp32 = tmp / "model-fp32.onnx"
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                _Body(auto_model).eval(), (sample["input_ids"], sample["attention_mask"]), str(fp32),
                input_names=["input_ids", "attention_mask"], output_names=["last_hidden_state"],
                dynamic_axes={"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"},
                              "last_hidden_state": {0: "batch", 1: "tokens"}},
                opset_version=17, dynamo=False,
            )
        if quantize == "int8":
            from onnxruntime.quantization import QuantType, quantize_dynamic

            root = logging.getLogger()  # the quantiser logs a pre-processing hint on the root logger
            level = root.level
            root.setLevel(logging.ERROR)
            try:
                quantize_dynamic(str(fp32), str(tmp / "model.onnx"), weight_type=QuantType.QInt8, per_channel=True)
            finally:
                root.setLevel(level)
            fp32.unlink()
        else:
            os.replace(fp32, tmp / "model.onnx")
        backend.save(str(tmp / "tokenizer.json"))
        atomic_write_json(tmp / "meta.json", {
            "export_version": _EXPORT_VERSION, "source": str(model_dir), "quantize": quantize, "pooling": pooling,
            "normalize_module": "Normalize" in modules, "max_seq_length": int(transformer.max_seq_length),
            "pad_id": int(hf_tok.pad_token_id if hf_tok.pad_token_id is not None else 0), "dim": dim,
            "torch": torch.__version__,
        })


def onnx_model_dir(model_dir: Path, quantize: str) -> Path:
    """The exported model of ``model_dir`` at ``quantize`` precision, exported on first use (see the module docstring)."""
    name = model_dir.name.replace(" ", "_") or "model"
    target = manyfold_home() / "models" / "onnx" / f"{name}-{_fingerprint(model_dir)}-{'int8' if quantize == 'int8' else 'fp32'}"
    if (target / "meta.json").is_file() and (target / "model.onnx").is_file():
        return target
    try:
        _export(model_dir, target, quantize)
    except FileExistsError:  # another process finished first (or a stale incomplete folder: say so)
        if not ((target / "meta.json").is_file() and (target / "model.onnx").is_file()):
            raise ArtifactError(f"{str(target)!r} exists but is not a complete export; delete it to export again") from None
    return target


class OrtSentenceEncoder(TextEncoder):
    """A sentence-transformers model (``"minilm"``, ``"mpnet"``, a local folder or a hub id) on onnxruntime.

    ``quantize``: ``"none"`` (fp32: the PyTorch encoder's vectors, same ``id``) or ``"int8"``
    (dynamic quantisation, per-channel int8 weights: faster, slightly different vectors, own ``id``).
    ``normalize`` and ``prefix`` as in :class:`SentenceTransformerEncoder`. The export happens lazily,
    on the first :meth:`encode` (see the module docstring).
    """

    def __init__(self, model: str = "minilm", *, quantize: str = "none", normalize: bool = True, prefix: str = "") -> None:
        if quantize not in QUANTIZE:
            raise ConfigError(f"quantize must be one of {', '.join(QUANTIZE)}; got {quantize!r}")
        self._st = SentenceTransformerEncoder(model, normalize=normalize, prefix=prefix)
        self._quantize = quantize
        self._session: Any = None
        self._tok: Any = None
        self._meta: dict = {}
        self._lock = threading.Lock()

    @property
    def quantize(self) -> str:
        return self._quantize

    @property
    def id(self) -> str:
        """The PyTorch encoder's ``id`` for fp32 (same vectors); with ``|int8=dyn-pc-v1`` added for int8."""
        base = self._st.id
        return base if self._quantize == "none" else f"{base}|int8=dyn-pc-v{_EXPORT_VERSION}"

    @property
    def spec(self) -> str:
        """``"minilm:runtime=onnx"``, ``"mpnet:runtime=onnx,quantize=int8"``, ``"st:org/name?runtime=onnx"``."""
        st = self._st.spec
        opts = {"runtime": "onnx"}
        if self._quantize != "none":
            opts["quantize"] = self._quantize
        if st.startswith("st:"):
            sep = "," if "?" in st else "?"
        else:
            sep = "," if ":" in st else ":"
        return st + sep + format_options(opts)

    @property
    def dim(self) -> int:
        return self._st.dim if self._st.kind == "alias" else int(self._load()[2]["dim"])

    def __repr__(self) -> str:
        return f"OrtSentenceEncoder({self._st.model_name!r}, quantize={self._quantize!r})"

    def _model_dir(self) -> Path:
        st = self._st
        if st.kind == "alias":
            from ._models import minilm_model_path, mpnet_model_path

            return minilm_model_path() if st.model_name == "minilm" else mpnet_model_path()
        if st.kind == "path":
            return Path(st.model_name)
        try:  # a hub id the user named: its local snapshot (downloaded by sentence-transformers if need be)
            from huggingface_hub import snapshot_download
        except ImportError:
            raise missing_dependency("huggingface_hub", "text", "runtime=onnx with a hub id") from None
        try:
            return Path(snapshot_download(st.model_name, local_files_only=True))
        except Exception:  # noqa: BLE001 - not in the local hub cache yet: the user named it, so fetch it
            return Path(snapshot_download(st.model_name))

    def _load(self) -> tuple[Any, Any, dict]:
        with self._lock:
            if self._session is None:
                try:
                    import onnxruntime as ort
                except ImportError:
                    raise missing_dependency("onnxruntime", "onnx", "runtime=onnx") from None
                try:
                    from tokenizers import Tokenizer
                except ImportError:
                    raise missing_dependency("tokenizers", "onnx", "runtime=onnx") from None
                from .._threads import thread_budget

                folder = onnx_model_dir(self._model_dir(), self._quantize)
                meta = json.loads((folder / "meta.json").read_text())
                tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
                tok.no_padding()
                tok.enable_truncation(max_length=int(meta["max_seq_length"]))
                so = ort.SessionOptions()
                so.intra_op_num_threads = thread_budget()
                so.inter_op_num_threads = 1
                so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
                so.add_session_config_entry("session.intra_op.allow_spinning", "0")
                session = ort.InferenceSession(str(folder / "model.onnx"), so, providers=["CPUExecutionProvider"])
                if self._st.kind == "alias" and int(meta["dim"]) != self._st.dim:
                    raise ArtifactError(f"{str(folder)!r} gives {meta['dim']}-d vectors, expected {self._st.dim}")
                self._meta, self._tok, self._session = meta, tok, session
            return self._session, self._tok, self._meta

    def encode(self, items: Sequence[Any], *, batch_size: int = 64, show_progress: bool = False) -> np.ndarray:
        """Encode strings into an ``(n, dim)`` float32 matrix (unit rows if ``normalize``)."""
        texts = check_texts(items, "OrtSentenceEncoder")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size!r}")
        if not texts:
            return empty_matrix(self.dim)
        session, tok, meta = self._load()
        prefix = self._st.prefix
        encs = tok.encode_batch([prefix + t for t in texts] if prefix else texts)
        lengths = np.fromiter((len(e.ids) for e in encs), dtype=np.int64, count=len(encs))
        order = np.argsort(lengths, kind="stable")  # batches of like lengths: little padding
        out = np.empty((len(texts), int(meta["dim"])), dtype=np.float32)
        starts = range(0, len(texts), int(batch_size))
        if show_progress:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc=self.spec, unit="batch")
        pad, cls = int(meta["pad_id"]), meta["pooling"] == "cls"
        for s in starts:
            idx = order[s:s + int(batch_size)]
            width = int(lengths[idx].max())
            ids = np.full((len(idx), width), pad, dtype=np.int64)
            mask = np.zeros((len(idx), width), dtype=np.int64)
            for r, i in enumerate(idx):
                n = int(lengths[i])
                ids[r, :n] = encs[i].ids
                mask[r, :n] = 1
            hidden = session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
            if cls:
                pooled = hidden[:, 0, :]
            else:
                m = mask[:, :, None].astype(np.float32)
                pooled = (hidden * m).sum(axis=1) / np.clip(m.sum(axis=1), 1e-9, None)
            out[idx] = pooled
        if self._st.normalize or meta.get("normalize_module"):
            # sentence-transformers normalises when asked or when the model ends in a Normalize module
            out /= np.clip(np.linalg.norm(out, axis=1, keepdims=True), 1e-12, None)
        return out
