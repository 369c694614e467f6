"""MNIST and Fashion-MNIST from their gzipped IDX files."""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np

from .._exceptions import ConfigError, DataError
from ._dataset import Dataset, Split
from ._fetch import PINNED, ensure_files, verify_file
from ._refs import builtin_ref

__all__ = ["load_mnist", "FASHION_MNIST_CLASSES"]

#: Fashion-MNIST class names, by class index 0-9.
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
_MNIST_CLASSES = tuple(str(d) for d in range(10))

# Two domains each, so that a router has more than one expert to choose between.
_DOMAINS = {
    "mnist": {lab: ("low" if int(lab) <= 4 else "high") for lab in _MNIST_CLASSES},
    "fashion-mnist": {
        lab: ("footwear_and_bags" if lab in {"Sandal", "Sneaker", "Bag", "Ankle boot"} else "clothing")
        for lab in FASHION_MNIST_CLASSES
    },
}
_CLASSES = {"mnist": _MNIST_CLASSES, "fashion-mnist": FASHION_MNIST_CLASSES}
_INFO = {
    "mnist": {"url": "http://yann.lecun.com/exdb/mnist/ (mirror ossci-datasets.s3.amazonaws.com/mnist/)",
              "license": "CC BY-SA 3.0 (Yann LeCun and Corinna Cortes)"},
    "fashion-mnist": {"url": "https://github.com/zalandoresearch/fashion-mnist", "license": "MIT (Zalando SE)"},
}

_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", 60000),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", 10000),
}
_IMAGES_MAGIC, _LABELS_MAGIC = 2051, 2049
N_VAL = 5000


def _parse_idx(data: bytes, *, magic: int, shape: tuple[int, ...], source: str) -> np.ndarray:
    """Parse one uint8 IDX blob, checking its magic number and that it holds exactly ``shape``.

    ``shape`` may use ``-1`` for "any" in a dimension. Truncated, padded or
    mislabelled data is a :class:`DataError` naming ``source``.
    """
    ndim = len(shape)
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{source}: IDX file is truncated ({len(data)} bytes, the header alone is {header})")
    got = int.from_bytes(data[:4], "big")
    if got != magic:
        raise DataError(f"{source}: bad IDX magic number {got} (expected {magic}: uint8 with {ndim} dimension(s))")
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if any(want not in (-1, have) for want, have in zip(shape, dims)):
        raise DataError(f"{source}: IDX dimensions {dims}, expected {shape}")
    need = header + int(np.prod(dims, dtype=np.int64))
    if len(data) != need:
        state = "truncated" if len(data) < need else "too long"
        raise DataError(f"{source}: IDX file is {state}: {len(data)} bytes, expected {need} for dimensions {dims}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims).copy()


def _read_gz(path: Path) -> bytes:
    try:
        with gzip.open(path, "rb") as fh:
            return fh.read()
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise DataError(f"{str(path)!r} is not a valid gzip file (truncated or corrupted): {exc}") from exc


def _load_pair(directory: Path, kind: str, images_name: str, labels_name: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    arrays = []
    for name, magic, shape in ((images_name, _IMAGES_MAGIC, (n, 28, 28)), (labels_name, _LABELS_MAGIC, (n,))):
        path = directory / name
        raw = _read_gz(path)
        arr = _parse_idx(raw, magic=magic, shape=shape, source=repr(str(path)))
        rf = PINNED[kind][name]
        if rf.decompressed:
            verify_file(path, rf, content=raw)
        arrays.append(arr)
    images, codes = arrays
    if codes.size and int(codes.max()) > 9:
        raise DataError(f"{str(directory / labels_name)!r}: label {int(codes.max())} is out of range 0-9")
    return images, codes


def load_mnist(
    data_dir: str | os.PathLike[str] | None = None,
    *,
    kind: str = "mnist",
    download: bool = True,
    progress: bool = True,
) -> Dataset:
    """Load MNIST or Fashion-MNIST as an image :class:`Dataset`.

    Items are ``uint8`` arrays of shape ``(n, 28, 28)``; labels are strings:
    ``"0"``..``"9"`` for MNIST, the class names (:data:`FASHION_MNIST_CLASSES`)
    for Fashion-MNIST. Splits: ``train`` = the first 55,000 training images,
    ``val`` = the last 5,000, ``test`` = the 10,000 test images. There is no
    out-of-scope label (``oos_label=None``).

    Domains: these datasets have none upstream, so two are defined here to give
    a router more than one expert to work with -- MNIST: ``"low"`` (digits 0-4)
    and ``"high"`` (5-9); Fashion-MNIST: ``"footwear_and_bags"`` (Sandal,
    Sneaker, Bag, Ankle boot) and ``"clothing"`` (the other six).

    The directory is resolved as for :func:`load_clinc150` (folder ``mnist/`` or
    ``fashion-mnist/``). Checks: IDX magic numbers and sizes (a truncated file is
    a :class:`DataError`), and the pinned checksums -- for MNIST the well-known
    MD5s of the *decompressed* files (so any faithful re-gzip is accepted), for
    Fashion-MNIST the sha256 of the original ``.gz`` files. Downloads come from
    ``ossci-datasets.s3.amazonaws.com/mnist/`` and the Zalando S3 mirror.
    """
    if kind not in _CLASSES:
        raise ConfigError(f"unknown kind {kind!r}; valid kinds: {', '.join(map(repr, _CLASSES))}")
    names = [n for pair in _FILES.values() for n in pair[:2]]
    directory = ensure_files(kind, names, data_dir, download=download, progress=progress)
    classes = np.array(_CLASSES[kind], dtype=str)
    loaded = {split: _load_pair(directory, kind, img, lab, n) for split, (img, lab, n) in _FILES.items()}
    (x_tr, y_tr), (x_te, y_te) = loaded["train"], loaded["test"]
    cut = len(x_tr) - N_VAL
    splits = {
        "train": Split(x_tr[:cut], classes[y_tr[:cut]]),
        "val": Split(x_tr[cut:], classes[y_tr[cut:]]),
        "test": Split(x_te, classes[y_te]),
    }
    info = dict(_INFO[kind], path=str(directory), source=builtin_ref(kind, data_dir))
    return Dataset(kind, splits, _DOMAINS[kind], None, "image", info)
