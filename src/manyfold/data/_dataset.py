"""The modality-agnostic dataset type: :class:`Split` and :class:`Dataset`.

A :class:`Split` is a pair of aligned sequences (``items``, ``labels``); the items
can be anything indexable (a ``list[str]`` of utterances, an ``(n, 28, 28)``
``uint8`` array of images, ...). A :class:`Dataset` is a set of named splits plus
the label -> domain map that the router / expert machinery groups experts by; an
empty map means the dataset has no domains (the core then groups labels itself).
"""

from __future__ import annotations

import zlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Union

import numpy as np

from .._exceptions import ConfigError, NotFoundError

__all__ = ["OOS_LABEL", "Split", "Dataset"]

#: The label every out-of-scope item carries (CLINC150's ``"oos"`` is mapped to it).
OOS_LABEL = "out_of_scope"

Items = Union[list, np.ndarray]


def _as_labels(raw: Any) -> np.ndarray:
    """``raw`` as a 1-d ``str`` array: str labels kept, integer labels (not bool) turned into ``str``.

    Anything else is a :class:`ConfigError` naming the first bad index and its type.
    """
    if isinstance(raw, np.ndarray):
        if raw.ndim != 1:
            raise ConfigError(f"Split.labels must be 1-d, got shape {raw.shape}")
        if raw.dtype.kind == "U" or raw.size == 0:
            return raw.astype(str)
        if raw.dtype.kind in "iu":
            return raw.astype(str)
        if raw.dtype.kind != "O":
            raise ConfigError(f"Split.labels must be strings or integers; label 0 is {raw.dtype.type.__name__}")
        values = raw.tolist()
    elif isinstance(raw, (list, tuple)):
        values = list(raw)
    else:
        arr = np.asarray(raw)
        if arr.ndim != 1:
            raise ConfigError(f"Split.labels must be 1-d, got shape {arr.shape}")
        return _as_labels(arr)
    out = []
    for i, v in enumerate(values):
        if isinstance(v, str):
            out.append(v)
        elif isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)):
            out.append(str(int(v)))
        else:
            shape = f" of shape {np.shape(v)}" if isinstance(v, (list, tuple, np.ndarray)) else ""
            raise ConfigError(f"Split.labels must be strings or integers; label {i} is {type(v).__name__}{shape}")
    return np.array(out, dtype=str) if out else np.zeros(0, dtype=str)


def _take(items: Items, idx: np.ndarray) -> Items:
    if isinstance(items, np.ndarray):
        return items[idx]
    return [items[i] for i in idx.tolist()]


@dataclass(frozen=True, eq=False, repr=False)
class Split:
    """One split of a dataset: ``items[i]`` has label ``labels[i]``.

    ``items`` is a ``list`` (e.g. of ``str``) or a numpy array whose first axis
    indexes items; ``labels`` is a 1-d numpy array of ``str``. Lengths must match.
    Integer labels (Python or numpy ints, not bools) are accepted and stored as
    ``str`` (``7`` becomes ``"7"``), so files with numeric classes load as they are.
    """

    items: Items
    labels: np.ndarray

    def __post_init__(self) -> None:
        if not isinstance(self.items, (list, np.ndarray)):
            raise ConfigError(f"Split.items must be a list or a numpy array, not {type(self.items).__name__}")
        labels = _as_labels(self.labels)
        if len(self.items) != len(labels):
            raise ConfigError(f"Split has {len(self.items)} items but {len(labels)} labels")
        object.__setattr__(self, "labels", labels)

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, indices: Any) -> Split:
        """A new split holding the items at ``indices`` (in that order)."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        return Split(_take(self.items, idx), self.labels[idx])

    def label_counts(self) -> dict[str, int]:
        """``{label: number of items}``, sorted by label."""
        return dict(sorted(Counter(self.labels.tolist()).items()))

    def __repr__(self) -> str:
        kind = f"ndarray{tuple(self.items.shape)}" if isinstance(self.items, np.ndarray) else "list"
        return f"Split(n={len(self)}, items={kind}, labels={len(set(self.labels.tolist()))} distinct)"


@dataclass(frozen=True, eq=False, repr=False)
class Dataset:
    """A named set of splits plus the label -> domain map.

    Parameters
    ----------
    name:
        The dataset's name (``"clinc150"``, ``"mnist"``, ...).
    splits:
        ``{split name: Split}``; the built-in loaders give ``"train"``, ``"val"``, ``"test"``.
    label_to_domain:
        Every in-scope label -> its domain (any non-empty text). Every label in
        the splits other than ``oos_label`` must be a key. Empty: the dataset has
        no domains (:attr:`has_domains` is ``False``) and its labels are the ones
        found in the splits.
    oos_label:
        The label of out-of-scope items (:data:`OOS_LABEL` for CLINC150), or
        ``None`` when the dataset has no out-of-scope items.
    modality:
        What the items are: ``"text"`` (``list[str]``) or ``"image"`` (one uint8
        ``(n, H, W)`` / ``(n, H, W, 3)`` array, or a list of uint8 arrays when sizes differ).
    info:
        Free-form provenance (license, commit, subset, ...). ``info["source"]``
        is the dataset reference that :func:`~manyfold.data.load_dataset_ref`
        rebuilds the dataset from (set by every loader).
    """

    name: str
    splits: dict[str, Split]
    label_to_domain: dict[str, str]
    oos_label: str | None = OOS_LABEL
    modality: str = "text"
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.splits:
            raise ConfigError(f"dataset {self.name!r} has no splits")
        if self.oos_label is not None and self.oos_label in self.label_to_domain:
            raise ConfigError(f"the out-of-scope label {self.oos_label!r} must not have a domain")
        for label, domain in self.label_to_domain.items():
            if not isinstance(label, str) or not label:
                raise ConfigError(f"label_to_domain of {self.name!r}: every label must be non-empty text, got {label!r}")
            if not isinstance(domain, str) or not domain:
                raise ConfigError(f"label {label!r} of {self.name!r} has domain {domain!r}; a domain is non-empty text")
        found: set[str] = set()
        for sname, sp in self.splits.items():
            if not isinstance(sp, Split):
                raise ConfigError(f"split {sname!r} must be a Split, not {type(sp).__name__}")
            found.update(sp.labels.tolist())
            if self.label_to_domain:
                unknown = set(sp.labels.tolist()) - set(self.label_to_domain) - {self.oos_label}
                if unknown:
                    shown = ", ".join(sorted(unknown)[:10])
                    raise ConfigError(f"split {sname!r} of {self.name!r} has labels without a domain: {shown}")
        object.__setattr__(self, "splits", dict(self.splits))
        object.__setattr__(self, "label_to_domain", dict(self.label_to_domain))
        object.__setattr__(self, "info", dict(self.info))
        labels = self.label_to_domain if self.label_to_domain else found - {self.oos_label}
        object.__setattr__(self, "_labels", sorted(labels))

    # -- lookups ---------------------------------------------------------------
    def split(self, name: str) -> Split:
        """The split called ``name``; an unknown name is a :class:`ConfigError` naming the valid ones."""
        try:
            return self.splits[name]
        except KeyError:
            valid = ", ".join(repr(s) for s in self.splits)
            raise ConfigError(f"dataset {self.name!r} has no split {name!r}; valid splits: {valid}") from None

    @property
    def split_names(self) -> list[str]:
        """The split names, in their stored order."""
        return list(self.splits)

    @property
    def has_domains(self) -> bool:
        """Whether the labels are grouped into domains (``label_to_domain`` is not empty)."""
        return bool(self.label_to_domain)

    @property
    def domains(self) -> list[str]:
        """The sorted list of distinct domains; ``[]`` when the dataset has none."""
        return sorted(set(self.label_to_domain.values()))

    @property
    def labels(self) -> list[str]:
        """The sorted in-scope labels (the out-of-scope label is not one).

        The keys of ``label_to_domain`` when the dataset has domains, else every
        label found in the splits.
        """
        return list(self._labels)  # type: ignore[attr-defined]

    def _need_domains(self, what: str) -> None:
        if not self.label_to_domain:
            raise ConfigError(
                f"dataset {self.name!r} has no domains (label_to_domain is empty), so it has no {what}; "
                "check has_domains first"
            )

    def domain_of(self, label: str) -> str | None:
        """The domain of ``label``; ``None`` for the out-of-scope label; unknown -> :class:`NotFoundError`.

        A dataset without domains raises :class:`ConfigError`.
        """
        self._need_domains(f"domain for label {label!r}")
        if self.oos_label is not None and label == self.oos_label:
            return None
        try:
            return self.label_to_domain[label]
        except KeyError:
            raise NotFoundError("label", label, self.label_to_domain) from None

    def labels_of(self, domain: str) -> list[str]:
        """The sorted in-scope labels of ``domain``; unknown -> :class:`NotFoundError`.

        A dataset without domains raises :class:`ConfigError`.
        """
        self._need_domains(f"domain {domain!r}")
        out = sorted(lab for lab, dom in self.label_to_domain.items() if dom == domain)
        if not out:
            raise NotFoundError("domain", domain, self.domains)
        return out

    # -- derived datasets --------------------------------------------------------
    def subset(self, n_per_label: int, seed: int = 0, *, n_oos: int | None = None) -> Dataset:
        """A small stratified copy for fast tests and smoke runs.

        In every split, keeps ``min(n_per_label, count)`` items of each label
        (``n_oos`` items of the out-of-scope label; default ``n_per_label``),
        drawn without replacement. The result is deterministic for a given
        ``seed`` (each split gets its own stream, derived from the seed and the
        split's name) and keeps the original item order.
        """
        if isinstance(n_per_label, bool) or not isinstance(n_per_label, (int, np.integer)) or n_per_label < 1:
            raise ConfigError(f"n_per_label must be a positive int, got {n_per_label!r}")
        if n_oos is not None and (isinstance(n_oos, bool) or not isinstance(n_oos, (int, np.integer)) or n_oos < 0):
            raise ConfigError(f"n_oos must be a non-negative int or None, got {n_oos!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ConfigError(f"seed must be a non-negative int, got {seed!r}")
        n_oos = n_per_label if n_oos is None else n_oos
        new: dict[str, Split] = {}
        for sname, sp in self.splits.items():
            rng = np.random.default_rng([int(seed), zlib.crc32(sname.encode("utf-8"))])
            keep: list[np.ndarray] = []
            for lab in sorted(set(sp.labels.tolist())):
                idx = np.flatnonzero(sp.labels == lab)
                k = n_oos if lab == self.oos_label else n_per_label
                k = min(int(k), idx.size)
                if k:
                    keep.append(rng.choice(idx, size=k, replace=False))
            chosen = np.sort(np.concatenate(keep)) if keep else np.zeros(0, dtype=np.int64)
            new[sname] = sp.take(chosen)
        info = dict(self.info)
        params = {"n_per_label": int(n_per_label), "n_oos": int(n_oos), "seed": int(seed)}
        info["subset"] = params
        source = info.get("source")
        if isinstance(source, dict):  # the reference rebuilds the subset too
            info["source"] = {**source, "subsets": [*source.get("subsets", []), params]}
        return Dataset(self.name, new, self.label_to_domain, self.oos_label, self.modality, info)

    def __repr__(self) -> str:
        sizes = ", ".join(f"{k}={len(v)}" for k, v in self.splits.items())
        grouping = f"in {len(self.domains)} domains" if self.has_domains else "without domains"
        return (
            f"Dataset({self.name!r}, {self.modality}, splits: {sizes}; "
            f"{len(self.labels)} labels {grouping}, oos_label={self.oos_label!r})"
        )
