"""``load_dataset``: one entry point for built-in datasets (by name) and users' files (by path).

``load_dataset_ref`` rebuilds a dataset from the reference that every loaded
dataset carries in ``info["source"]``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .._exceptions import ConfigError, DataError, NotFoundError
from ._clinc150 import load_clinc150
from ._dataset import Dataset
from ._files import load_files, load_files_ref, not_found
from ._images import is_image_folder, load_image_folder, load_image_folder_ref
from ._mnist import load_mnist

__all__ = ["DATASETS", "TEXT_DATASETS", "IMAGE_DATASETS", "load_dataset", "load_dataset_ref"]

#: The built-in dataset names :func:`load_dataset` accepts.
DATASETS = ("clinc150", "mnist", "fashion-mnist")
#: The built-in datasets whose items are text.
TEXT_DATASETS = ("clinc150",)
#: The built-in datasets whose items are images (uint8 ``(n, 28, 28)`` arrays).
IMAGE_DATASETS = ("mnist", "fashion-mnist")

_FILE_DEFAULTS: dict[str, Any] = {
    "text_col": None, "label_col": None, "domain_col": None, "oos_label": "auto",
    "val_share": None, "test_share": None, "seed": 0, "name": None, "mode": "auto", "size": None,
}
_TEXT_ONLY = ("text_col", "label_col", "domain_col")
_IMAGE_ONLY = ("mode", "size")
# Options of the built-in loaders that have no meaning for files (nothing to download) but are harmless.
_IGNORED_FOR_FILES = ("download", "progress")


def load_dataset(
    source: str | os.PathLike[str],
    data_dir: str | os.PathLike[str] | None = None,
    *,
    text_col: str | None = None,
    label_col: str | None = None,
    domain_col: str | None = None,
    oos_label: str | None = "auto",
    val_share: float | None = None,
    test_share: float | None = None,
    seed: int = 0,
    name: str | None = None,
    mode: str = "auto",
    size: int | tuple[int, int] | None = None,
    **builtin_options: Any,
) -> Dataset:
    """Load a built-in dataset by name, or a labelled file, folder of files or folder of images by path.

    **Built-ins** (:data:`DATASETS`): ``data_dir`` and ``builtin_options``
    (``download``, ``progress``, and ``variant`` for CLINC150) go to
    :func:`load_clinc150` / :func:`load_mnist`; the file options below do not apply.

    **A file** (``.csv``, ``.tsv``, ``.jsonl``/``.ndjson``, ``.parquet``): one row
    per item; ``val`` and ``test`` are split off it (``val_share=0.1``,
    ``test_share=0.2`` by default). **A folder**: ``train.<ext>``, optionally
    ``val.<ext>`` (or ``valid``, ``validation``, ``dev``) and ``test.<ext>``; a
    missing val is split off train (``val_share=0.1``), a missing test only if
    ``test_share > 0``. Splits are seeded (``seed``) and stratified per label,
    every label keeping at least one training item. ``data_dir`` is not used.

    Columns: ``text_col`` (default: the first of text, utterance, sentence,
    query, question, item), ``label_col`` (label, intent, category, class,
    target), ``domain_col`` (``domain`` if present; ``""`` ignores any domain
    column: the dataset then has no domains). Labels may be integers (made text).
    ``oos_label="auto"`` takes rows labelled ``out_of_scope`` or ``oos`` as
    out-of-scope; a string names that label; ``None``: no out-of-scope label.
    ``name`` defaults to the file stem or folder name.

    **A folder of images** (``root/label/x.png`` or ``root/domain/label/x.png``,
    optionally inside ``train/``, ``val/``, ``test/`` folders; PNG, JPEG, BMP,
    GIF, WebP): labels are the subfolder names; splits as for a file (or a folder
    of split files when ``train/`` is there); ``mode`` (``"auto"``, ``"L"``,
    ``"RGB"``) and ``size`` (an int or ``(H, W)``: resize, bilinear) apply; the
    column options do not. A folder named ``out_of_scope`` / ``oos`` holds
    out-of-scope images.

    Every option is recorded in the dataset's reference (``info["source"]``,
    see :func:`dataset_ref`). Anything that is neither a built-in name nor an
    existing file or folder is a :class:`NotFoundError`.
    """
    file_options = {
        "text_col": text_col, "label_col": label_col, "domain_col": domain_col, "oos_label": oos_label,
        "val_share": val_share, "test_share": test_share, "seed": seed, "name": name, "mode": mode, "size": size,
    }
    if isinstance(source, str) and source in DATASETS:
        given = [k for k, v in file_options.items() if v != _FILE_DEFAULTS[k]]
        if given:
            raise ConfigError(
                f"option(s) {', '.join(given)} apply to data files, not to the built-in dataset {source!r}"
            )
        if source == "clinc150":
            return load_clinc150(data_dir, **builtin_options)
        return load_mnist(data_dir, kind=source, **builtin_options)
    if not isinstance(source, (str, os.PathLike)):
        raise ConfigError(f"load_dataset needs a dataset name or a path, not {type(source).__name__}")
    path = Path(source).expanduser()
    if not (path.is_file() or path.is_dir()):
        raise not_found(
            "dataset", os.fspath(source),
            f"unknown dataset {os.fspath(source)!r}: not a built-in name ({', '.join(DATASETS)}) and no such file or folder",
            DATASETS,
        )
    unknown = sorted(set(builtin_options) - set(_IGNORED_FOR_FILES))
    if unknown:
        valid = ", ".join([*_FILE_DEFAULTS, *_IGNORED_FOR_FILES])
        raise ConfigError(f"unknown option(s) {', '.join(unknown)} for a data file; valid options: {valid}")
    try:
        empty = path.is_dir() and not any(not p.name.startswith(".") for p in path.iterdir())
    except OSError as exc:
        raise DataError(f"cannot list folder {str(path)!r}: {exc.strerror or exc}") from None
    if empty:
        raise DataError(
            f"folder {str(path)!r} is empty: put train.<ext> (+ val, test) data files in it, "
            "or images in label subfolders (label/x.png)"
        )
    images = is_image_folder(path)
    wrong = [k for k in (_TEXT_ONLY if images else _IMAGE_ONLY) if file_options[k] != _FILE_DEFAULTS[k]]
    if wrong:
        what = f"the image folder {str(path)!r}" if images else f"the data file(s) {str(path)!r}"
        fits = "data files" if images else "image folders"
        raise ConfigError(f"option(s) {', '.join(wrong)} apply to {fits}, not to {what}")
    for k in _IMAGE_ONLY if not images else _TEXT_ONLY:
        file_options.pop(k)
    if images:
        return load_image_folder(path, **file_options)
    return load_files(path, **file_options)


def load_dataset_ref(ref: Mapping[str, Any], *, data_dir: str | os.PathLike[str] | None = None) -> Dataset:
    """Rebuild the dataset a reference (from :func:`dataset_ref`) describes: same rows in the same splits.

    Built-ins are loaded by name, from ``data_dir`` when given, else from the
    recorded one. Files must all exist and match their recorded sha256, else a
    :class:`DataError` names the file; an image folder must hold exactly the
    recorded images (same paths, sizes and sha256), else a :class:`DataError`
    names the folder. Subsets recorded in the reference are
    taken again.

    A reference usually comes from a manifest, which is not trusted: before
    anything is read it must name data and nothing else (see
    :func:`manyfold._trust.check_dataset_ref`: a files reference names its file or
    split files directly inside its folder, by absolute path with a data-file
    extension and a sha256; a built-in takes no option but ``variant``), else an
    :class:`~manyfold.ArtifactError`.
    """
    from .._trust import check_dataset_ref

    check_dataset_ref(ref)
    kind = ref.get("kind")
    if kind == "builtin":
        name = ref.get("name")
        if name not in DATASETS:
            raise NotFoundError("built-in dataset", str(name), DATASETS)
        options = ref.get("options") or {}
        if not isinstance(options, Mapping):
            raise ConfigError(f"the options of dataset reference {dict(ref)!r} must be a dict")
        ds = load_dataset(name, data_dir if data_dir is not None else ref.get("data_dir"), **options)
    elif kind == "files":
        ds = load_files_ref(ref)
    elif kind == "images":
        ds = load_image_folder_ref(ref)
    else:
        raise ConfigError(f"unknown dataset reference kind {kind!r}; valid kinds: 'builtin', 'files', 'images'")
    for sub in ref.get("subsets") or []:
        try:
            ds = ds.subset(sub["n_per_label"], sub["seed"], n_oos=sub["n_oos"])
        except (KeyError, TypeError):
            raise ConfigError(f"malformed subset {sub!r} in dataset reference; needs n_per_label, n_oos, seed") from None
    return ds
