"""Dataset references: the JSON-able record of where a dataset came from.

Every loader stores one in ``Dataset.info["source"]``; a saved assembly keeps it
so that :func:`~manyfold.data.load_dataset_ref` can rebuild the very same data.
"""

from __future__ import annotations

import copy
import os
from typing import Any

from .._exceptions import ConfigError
from ._dataset import Dataset

__all__ = ["builtin_ref", "dataset_ref"]


def builtin_ref(name: str, data_dir: str | os.PathLike[str] | None, **options: Any) -> dict[str, Any]:
    """The reference of a built-in dataset: its name, ``data_dir`` as given, and non-default options."""
    ref: dict[str, Any] = {"kind": "builtin", "name": name, "data_dir": None if data_dir is None else os.fspath(data_dir)}
    if options:
        ref["options"] = dict(options)
    return ref


def dataset_ref(ds: Dataset) -> dict[str, Any]:
    """The reference of ``ds`` (a copy of ``ds.info["source"]``), for :func:`load_dataset_ref`.

    Built-ins: ``{"kind": "builtin", "name", "data_dir"}`` (plus ``"options"`` such
    as a non-default CLINC150 variant); files: ``{"kind": "files", "path", "files",
    "format", "columns", "oos_label", "split", "name"}``; image folders:
    ``{"kind": "images", "path", "listing", "mode", "size", "oos_label", "split",
    "name"}`` (``listing`` holds the sha256 of every image's relative path, size
    and sha256, and their count and total bytes). A subset adds
    ``"subsets"``. A dataset built by hand has none: :class:`ConfigError`.
    """
    if not isinstance(ds, Dataset):
        raise ConfigError(f"dataset_ref needs a Dataset, not {type(ds).__name__}")
    ref = ds.info.get("source")
    if not isinstance(ref, dict) or "kind" not in ref:
        raise ConfigError(
            f"dataset {ds.name!r} has no reference (info['source']): only datasets from load_dataset carry one"
        )
    return copy.deepcopy(ref)
