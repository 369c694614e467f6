"""Datasets for manyfold: a modality-agnostic :class:`Dataset` and loaders.

>>> from manyfold.data import load_dataset, OOS_LABEL
>>> ds = load_dataset("clinc150")                      # doctest: +SKIP
>>> ds.split("train"), ds.domains[:3], ds.subset(5, seed=0)  # doctest: +SKIP

Files are looked up in ``data_dir``, else ``$MANYFOLD_DATA``, else
``manyfold_home()/data``; missing ones are downloaded from pinned public
sources and every file is checked against a pinned checksum.
"""

from ._clinc150 import load_clinc150
from ._dataset import OOS_LABEL, Dataset, Split
from ._fetch import ENV_VAR as DATA_ENV_VAR
from ._fetch import default_data_root
from ._mnist import FASHION_MNIST_CLASSES, load_mnist
from ._registry import DATASETS, load_dataset

__all__ = [
    "OOS_LABEL",
    "Split",
    "Dataset",
    "load_clinc150",
    "load_mnist",
    "load_dataset",
    "DATASETS",
    "FASHION_MNIST_CLASSES",
    "DATA_ENV_VAR",
    "default_data_root",
]
