"""CLINC150 (Larson et al., EMNLP 2019): 150 intents in 10 domains, plus out-of-scope queries."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from .._exceptions import ConfigError, DataError
from ._dataset import OOS_LABEL, Dataset, Split
from ._fetch import CLINC150_COMMIT, ensure_files
from ._refs import builtin_ref

__all__ = ["load_clinc150"]

_VARIANTS = {"full": "data_full.json", "oos_plus": "data_oos_plus.json"}
_UPSTREAM_OOS = "oos"


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"corrupted or truncated JSON in {str(path)!r}: {exc}") from exc


def _pairs(raw: dict, key: str, path: Path) -> list[tuple[str, str]]:
    items = raw.get(key)
    if not isinstance(items, list):
        raise DataError(f"{str(path)!r} has no list {key!r}; is it a CLINC150 data file?")
    out = []
    for i, pair in enumerate(items):
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(x, str) for x in pair)):
            raise DataError(f"{str(path)!r}: item {i} of {key!r} is not a [text, intent] pair: {pair!r}")
        out.append((pair[0], pair[1]))
    return out


def load_clinc150(
    data_dir: str | os.PathLike[str] | None = None,
    *,
    variant: str = "full",
    download: bool = True,
    progress: bool = True,
) -> Dataset:
    """Load CLINC150 as a text :class:`Dataset` with splits ``train``, ``val``, ``test``.

    Each split holds the in-scope items of the upstream split followed by the
    out-of-scope items of ``oos_<split>``; upstream's ``"oos"`` intent becomes
    :data:`OOS_LABEL` (``"out_of_scope"``). ``label_to_domain`` comes from
    ``domains.json`` (150 intents -> 10 domains). Counts for ``variant="full"``:
    train 15000 + 100 OOS, val 3000 + 100, test 4500 + 1000 (``"oos_plus"``
    has 250 OOS training items).

    The directory is ``data_dir`` if given, else ``$MANYFOLD_DATA``, else
    ``manyfold_home()/data``; it may be the parent of ``clinc150/`` or that
    folder itself. Files are checked against pinned sha256 values; missing ones
    are downloaded (with ``download=True``) from github.com/clinc/oos-eval at
    commit ``828f809...``, else a :class:`DataError` names the directory and files.
    Data license: CC BY 3.0. ``info["source"]`` is the dataset reference.
    """
    if variant not in _VARIANTS:
        raise ConfigError(f"unknown CLINC150 variant {variant!r}; valid variants: {', '.join(map(repr, _VARIANTS))}")
    data_name = _VARIANTS[variant]
    directory = ensure_files("clinc150", [data_name, "domains.json"], data_dir, download=download, progress=progress)

    domains_path = directory / "domains.json"
    domains = _read_json(domains_path)
    if not isinstance(domains, dict):
        raise DataError(f"{str(domains_path)!r} is not a {{domain: [intent, ...]}} object")
    label_to_domain: dict[str, str] = {}
    for domain, intents in domains.items():
        if not isinstance(intents, list) or not all(isinstance(x, str) for x in intents):
            raise DataError(f"{str(domains_path)!r}: domain {domain!r} is not a list of intents")
        for intent in intents:
            if intent in label_to_domain:
                raise DataError(f"{str(domains_path)!r}: intent {intent!r} is in two domains")
            label_to_domain[intent] = domain

    data_path = directory / data_name
    raw = _read_json(data_path)
    if not isinstance(raw, dict):
        raise DataError(f"{str(data_path)!r} is not a JSON object of splits")
    splits: dict[str, Split] = {}
    seen: set[str] = set()
    for name in ("train", "val", "test"):
        in_scope = _pairs(raw, name, data_path)
        oos = _pairs(raw, f"oos_{name}", data_path)
        if any(intent == _UPSTREAM_OOS for _, intent in in_scope):
            raise DataError(f"{str(data_path)!r}: split {name!r} holds out-of-scope items")
        if any(intent != _UPSTREAM_OOS for _, intent in oos):
            raise DataError(f"{str(data_path)!r}: split 'oos_{name}' holds in-scope items")
        seen.update(intent for _, intent in in_scope)
        texts = [t for t, _ in in_scope] + [t for t, _ in oos]
        labels = np.array([i for _, i in in_scope] + [OOS_LABEL] * len(oos), dtype=str)
        splits[name] = Split(texts, labels)
    if seen != set(label_to_domain):
        diff = sorted(seen ^ set(label_to_domain))
        raise DataError(
            f"the intents of {str(data_path)!r} and {str(domains_path)!r} differ: {', '.join(diff[:10])}"
        )
    info = {
        "source": builtin_ref("clinc150", data_dir, **({} if variant == "full" else {"variant": variant})),
        "url": "https://github.com/clinc/oos-eval",
        "commit": CLINC150_COMMIT,
        "variant": variant,
        "license": "CC BY 3.0",
        "path": str(directory),
    }
    return Dataset("clinc150", splits, label_to_domain, OOS_LABEL, "text", info)
