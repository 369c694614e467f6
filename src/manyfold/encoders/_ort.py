"""Sentence-transformers models on onnxruntime: exported once from the local weights, run in fp32 or int8.

``get_encoder("minilm:runtime=onnx")`` (or ``mpnet:...``, ``st:<path or hub id>?runtime=onnx``) gives
an :class:`OrtSentenceEncoder`. On its first use the model is exported to ONNX from the same weights
the PyTorch encoder loads, by the edge export's exporter (transformer + mean pooling + L2
normalisation in one graph, checked against PyTorch on a padded batch; see :mod:`manyfold.export`),
optionally quantised to int8 (``quantize=int8``: onnxruntime dynamic quantisation, int8 weights per
output channel), and kept under ``manyfold_home()/models/onnx/`` in a folder written atomically;
later runs load it in well under a second. Tokenisation uses the model's own ``tokenizer.json``
(Rust ``tokenizers``).

* fp32 gives the PyTorch encoder's vectors to float rounding, so it shares its ``id`` (and its
  cached vectors): the runtime is a deployment choice, like the device.
* int8 changes the vectors (cosine ~0.99 to fp32), so its ``id`` says so and nothing is shared; its
  activations are scaled per batch, so a text's int8 vector also varies slightly with its batch.

Batches are formed by token length (dynamic padding: a batch is padded to its own longest text, and
a call's texts, sorted by length, are cut into batches wherever padding would add more than a tenth
to the real tokens, so a server's batch of 64 short and long texts does not pay for 64 long ones),
and every session uses the process's thread budget (:func:`manyfold.set_threads`) with idle
threads that sleep instead of spinning, so two stages of a server do not fight for the cores.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._exceptions import ArtifactError, ConfigError, missing_dependency
from .._io import atomic_dir, atomic_write_bytes, atomic_write_json, manyfold_home
from ._common import TextEncoder, check_encode_args, empty_matrix, format_options
from ._sentence_transformers import SentenceTransformerEncoder

__all__ = ["OrtSentenceEncoder", "RUNTIMES", "QUANTIZE"]

#: where a sentence-transformers model can run
RUNTIMES = ("torch", "onnx")
#: weight precision of the ONNX graph
QUANTIZE = ("none", "int8")
_EXPORT_VERSION = 2  # 2: int8 graphs checked against fp32 before they are kept


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


def _thread_nice() -> int:
    """The calling thread's niceness (Linux keeps one per thread); 0 where it cannot be read."""
    try:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    except (AttributeError, OSError):
        return 0


#: a batch is cut where padding would add more than this share to its real tokens (plus PAD_ALLOWANCE)
PAD_SLACK = 0.1
PAD_ALLOWANCE = 8


def length_batches(sorted_lengths: np.ndarray, batch_size: int) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` covering ``sorted_lengths`` (token counts, ascending) with batches of at most
    ``batch_size`` texts, each cut before the text that would make its padded size (texts x longest) pass
    its real tokens by more than ``PAD_SLACK`` of them plus ``PAD_ALLOWANCE`` tokens.

    Padding costs compute in every layer, so a batch of 64 texts of 8 to 40 tokens costs about as much as
    64 texts of 40; cut by length it costs what its tokens cost, plus a few more session runs.
    """
    out: list[tuple[int, int]] = []
    start, real = 0, 0
    for i, n in enumerate(sorted_lengths.tolist()):
        if i > start and (i - start >= batch_size or (i + 1 - start) * n > (1 + PAD_SLACK) * (real + n) + PAD_ALLOWANCE):
            out.append((start, i))
            start, real = i, 0
        real += n
    if len(sorted_lengths):
        out.append((start, len(sorted_lengths)))
    return out


def ort_session(path: Path) -> Any:
    """An onnxruntime session on the process's thread budget whose idle threads sleep; its pool threads are
    created now, by the calling thread, so they run at that thread's priority (niceness)."""
    import onnxruntime as ort

    from .._threads import thread_budget

    so = ort.SessionOptions()
    so.intra_op_num_threads = thread_budget()
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def session_for_thread(sessions: dict[int, Any], lock: threading.Lock, make: Any) -> Any:
    """The session in ``sessions`` (keyed by niceness) for the calling thread's priority, made by ``make()`` on
    first use: a thread that runs at a lower priority (the server's worker for large requests) gets a session of
    its own whose pool threads share that priority, instead of running its work on the pool of a
    normal-priority thread."""
    nice = _thread_nice()
    found = sessions.get(nice)
    if found is None:
        with lock:
            if nice not in sessions:
                sessions[nice] = make()
            found = sessions[nice]
    return found


def encode_ids(session: Any, ids: Sequence[Sequence[int]], dim: int, pad: int, batch_size: int, *,
               show_progress: bool = False, desc: str = "") -> np.ndarray:
    """Token-id rows through an encoder graph (``input_ids`` and ``attention_mask`` in, pooled vectors out) in
    batches of like lengths (:func:`length_batches`: each padded to its own longest row); the vectors in the
    rows' order."""
    lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
    order = np.argsort(lengths, kind="stable")  # batches of like lengths: little padding
    out = np.empty((len(ids), int(dim)), dtype=np.float32)
    spans = length_batches(lengths[order], int(batch_size))
    if show_progress:
        from tqdm.auto import tqdm

        spans = tqdm(spans, desc=desc, unit="batch")
    for a, b in spans:
        idx = order[a:b]
        batch, mask = padded([ids[i] for i in idx], pad)
        out[idx] = session.run(None, {"input_ids": batch, "attention_mask": mask})[0]  # pooled (+ normalised)
    return out


def padded(rows: Sequence[Sequence[int]], pad: int) -> tuple[np.ndarray, np.ndarray]:
    """Token-id rows as an int64 ``input_ids`` matrix padded with ``pad`` to the longest row, and its
    ``attention_mask``."""
    width = max(map(len, rows))
    batch = np.full((len(rows), width), int(pad), dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for r, row in enumerate(rows):
        batch[r, :len(row)] = row
        mask[r, :len(row)] = 1
    return batch, mask


def onnx_model_dir(torch_encoder: SentenceTransformerEncoder, model_dir: Path, quantize: str) -> Path:
    """The exported model behind ``torch_encoder`` (whose weights are in ``model_dir``) at ``quantize``
    precision, exported on first use: the edge export's graph (transformer + mean pooling + L2
    normalisation, checked against PyTorch on a padded batch), int8 by ``quantize_dynamic`` with
    per-channel weights, in a folder written atomically (a failure leaves nothing)."""
    from ..export._onnx import _onnx, export_sentence_encoder, int8_dynamic

    name = model_dir.name.replace(" ", "_") or "model"
    flags = f"n{int(torch_encoder.normalize)}-{'int8' if quantize == 'int8' else 'fp32'}"
    target = manyfold_home() / "models" / "onnx" / f"{name}-{_fingerprint(model_dir)}-{flags}"
    if _complete(target):
        return target
    # a model of its own: the tracer must not share the module a PyTorch encoder of this process runs
    twin = SentenceTransformerEncoder(torch_encoder.model_name, normalize=torch_encoder.normalize)
    try:
        with atomic_dir(target) as tmp:
            entry = export_sentence_encoder(twin, tmp)
            if quantize == "int8":
                fp32 = tmp / "encoder.onnx"
                int8 = tmp / "encoder-int8.onnx"
                atomic_write_bytes(int8, int8_dynamic(_onnx().load(str(fp32))).SerializeToString())
                entry["int8_probe_cosine_min"] = _check_int8(fp32, int8, tmp / "tokenizer.json", entry, twin.model_name)
                os.replace(int8, fp32)
            atomic_write_json(tmp / "meta.json", {**entry, "export_version": _EXPORT_VERSION, "quantize": quantize,
                                                  "source": str(model_dir)})
    except FileExistsError:  # another process finished first (or an old incomplete folder: say so)
        if not _complete(target):
            raise ArtifactError(f"{str(target)!r} exists but is not a complete export; delete it to export again") from None
    return target


#: the int8 graph must give vectors at least this close (cosine, every probe text) to the fp32 graph's
INT8_MIN_COSINE = 0.9
_PROBE = ["what is my checking account balance", "set an alarm for six thirty tomorrow morning",
          "how do i say thank you in french", "book a table for four at an italian place tonight",
          "my card was declined at the store, why?", "play some jazz", "is it going to rain this weekend in boston",
          "transfer 200 dollars from savings to checking", "what's the capital of australia", "hi"]


def _check_int8(fp32: Path, int8: Path, tokenizer: Path, entry: dict, model: str) -> float:
    """The smallest cosine between the int8 and the fp32 graph's vectors on a few probe texts; an
    :class:`ArtifactError` when it is below :data:`INT8_MIN_COSINE` (quantisation broke the model)."""
    import onnxruntime as ort
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer))
    tok.enable_truncation(max_length=int(entry["max_length"]))
    tok.enable_padding(pad_id=int(entry["pad_id"]), pad_token=str(entry["pad_token"]))
    enc = tok.encode_batch(_PROBE)
    feeds = {"input_ids": np.asarray([e.ids for e in enc], np.int64),
             "attention_mask": np.asarray([e.attention_mask for e in enc], np.int64)}
    a, b = (ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, feeds)[0] for p in (fp32, int8))
    cos = (a * b).sum(1) / np.clip(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12, None)
    low = float(cos.min())
    if low < INT8_MIN_COSINE:
        raise ArtifactError(f"int8 quantisation breaks {model!r}: its vectors are at cosine {low:.3f} to the fp32 "
                            f"graph's on a probe text (at least {INT8_MIN_COSINE} needed); use runtime=onnx without "
                            "quantize (fp32)")
    return round(low, 5)


def _complete(folder: Path) -> bool:
    return all((folder / n).is_file() for n in ("meta.json", "encoder.onnx", "tokenizer.json"))


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
        self._folder: Path | None = None
        self._sessions: dict[int, Any] = {}  # by the niceness of the threads that run them
        self._lock = threading.Lock()

    @property
    def quantize(self) -> str:
        """``"none"`` (fp32) or ``"int8"``."""
        return self._quantize

    def exported(self) -> tuple[Path, dict[str, Any]]:
        """The folder of the graph this encoder runs (``encoder.onnx``, ``tokenizer.json``; exported on first
        use) and its description (``meta.json``: the edge export's encoder entry, plus ``quantize``)."""
        self._load()
        assert self._folder is not None
        return self._folder, dict(self._meta)

    @property
    def torch_encoder(self) -> SentenceTransformerEncoder:
        """The same model on PyTorch (what the graph is exported from; fp32 gives its vectors)."""
        return self._st

    @property
    def id(self) -> str:
        """The PyTorch encoder's ``id`` for fp32 (same vectors); with ``|int8=dyn-pc-v<export version>`` added for int8."""
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

    def _new_session(self, folder: Path) -> Any:
        return ort_session(folder / "encoder.onnx")

    def _load(self) -> tuple[Any, Any, dict]:
        with self._lock:
            if self._session is None:
                try:
                    import onnxruntime  # noqa: F401
                except ImportError:
                    raise missing_dependency("onnxruntime", "onnx", "runtime=onnx") from None
                try:
                    from tokenizers import Tokenizer
                except ImportError:
                    raise missing_dependency("tokenizers", "onnx", "runtime=onnx") from None
                folder = onnx_model_dir(self._st, self._model_dir(), self._quantize)
                meta = json.loads((folder / "meta.json").read_text())
                tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
                tok.no_padding()
                tok.enable_truncation(max_length=int(meta["max_length"]))
                session = self._new_session(folder)
                if self._st.kind == "alias" and int(meta["dim"]) != self._st.dim:
                    raise ArtifactError(f"{str(folder)!r} gives {meta['dim']}-d vectors, expected {self._st.dim}")
                self._folder, self._meta, self._tok, self._session = folder, meta, tok, session
                self._sessions[_thread_nice()] = session
            return self._session, self._tok, self._meta

    def _session_here(self) -> Any:
        """The session for the calling thread's priority: a thread that runs at a lower priority (the server's
        worker for large requests) gets a session of its own whose pool threads share that priority, instead of
        running its work on the pool of a normal-priority thread. (Call after :meth:`_load`.)"""
        return session_for_thread(self._sessions, self._lock, lambda: self._new_session(self._folder))

    def encode(self, items: Sequence[Any], *, batch_size: int = 64, show_progress: bool = False) -> np.ndarray:
        """Encode strings into an ``(n, dim)`` float32 matrix (unit rows if ``normalize``)."""
        texts = check_encode_args(items, batch_size, "OrtSentenceEncoder")
        if not texts:
            return empty_matrix(self.dim)
        _, tok, meta = self._load()
        session = self._session_here()
        prefix = self._st.prefix
        encs = tok.encode_batch([prefix + t for t in texts] if prefix else texts)
        return encode_ids(session, [e.ids for e in encs], int(meta["dim"]), int(meta["pad_id"]), batch_size,
                          show_progress=show_progress, desc=self.spec)
