"""``load_dataset``: one entry point for every built-in dataset, by name."""

from __future__ import annotations

import os
from typing import Any

from .._exceptions import NotFoundError
from ._clinc150 import load_clinc150
from ._dataset import Dataset
from ._mnist import load_mnist

__all__ = ["DATASETS", "load_dataset"]

#: The names :func:`load_dataset` accepts.
DATASETS = ("clinc150", "mnist", "fashion-mnist")


def load_dataset(name: str, data_dir: str | os.PathLike[str] | None = None, **kwargs: Any) -> Dataset:
    """Load a built-in dataset by name (one of :data:`DATASETS`).

    ``data_dir`` and ``kwargs`` (``download``, ``progress``, and ``variant`` for
    CLINC150) are passed to :func:`load_clinc150` or :func:`load_mnist`. An
    unknown name is a :class:`NotFoundError` listing the choices.
    """
    if name == "clinc150":
        return load_clinc150(data_dir, **kwargs)
    if name in ("mnist", "fashion-mnist"):
        return load_mnist(data_dir, kind=name, **kwargs)
    raise NotFoundError("dataset", name, DATASETS)
