"""Datasets for manyfold: a modality-agnostic :class:`Dataset` and loaders.

>>> from manyfold.data import load_dataset, OOS_LABEL
>>> ds = load_dataset("clinc150")                      # doctest: +SKIP
>>> ds.split("train"), ds.domains[:3], ds.subset(5, seed=0)  # doctest: +SKIP
>>> mine = load_dataset("tickets.csv", text_col="message")  # doctest: +SKIP
>>> same = load_dataset_ref(dataset_ref(mine))        # doctest: +SKIP

Built-in files are looked up in ``data_dir``, else ``$MANYFOLD_DATA``, else
``manyfold_home()/data``; missing ones are downloaded from pinned public
sources and every file is checked against a pinned checksum. Users' own CSV,
TSV, JSON Lines and Parquet files (one file, or a folder of split files) and
folders of labelled images (``root/label/x.png``) load by path; every dataset
records a reference to rebuild it from. :func:`read_image` decodes one image
(a path, bytes or a file object) safely into a uint8 array.
"""

from ._clinc150 import load_clinc150
from ._dataset import OOS_LABEL, Dataset, Split
from ._fetch import ENV_VAR as DATA_ENV_VAR
from ._fetch import default_data_root
from ._files import read_label_map
from ._images import IMAGE_EXTENSIONS, IMAGE_MODES, read_image
from ._mnist import FASHION_MNIST_CLASSES, load_mnist
from ._refs import dataset_ref
from ._registry import DATASETS, IMAGE_DATASETS, TEXT_DATASETS, load_dataset, load_dataset_ref

__all__ = [
    "OOS_LABEL",
    "Split",
    "Dataset",
    "load_clinc150",
    "load_mnist",
    "load_dataset",
    "load_dataset_ref",
    "dataset_ref",
    "read_label_map",
    "read_image",
    "IMAGE_EXTENSIONS",
    "IMAGE_MODES",
    "DATASETS",
    "TEXT_DATASETS",
    "IMAGE_DATASETS",
    "FASHION_MNIST_CLASSES",
    "DATA_ENV_VAR",
    "default_data_root",
]
