"""Users' own labelled files: CSV, TSV, JSON Lines and Parquet, one file or a folder of splits.

:func:`load_files` turns a file (split into train / val / test here) or a folder
(``train.<ext>`` plus optional ``val`` / ``test`` files) into a text
:class:`Dataset`, checking every row and naming the first bad one.
:func:`load_files_ref` rebuilds the same dataset from its reference after checking
that every file still has the sha256 it had. :func:`read_label_map` reads a
label -> expert map.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import zlib
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._exceptions import ConfigError, DataError, NotFoundError, missing_dependency
from ._dataset import Dataset, Split

__all__ = [
    "FORMATS", "ROLES", "load_files", "load_files_ref", "read_label_map", "not_found", "resolve_shares", "split_indices",
]

#: File extension -> format name.
FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}
TEXT_COLUMNS = ("text", "utterance", "sentence", "query", "question", "item")
LABEL_COLUMNS = ("label", "intent", "category", "class", "target")
DOMAIN_COLUMN = "domain"
AUTO_OOS = ("out_of_scope", "oos")
#: Split role -> the file stems that fill it in a folder.
ROLES = {"train": ("train",), "val": ("val", "valid", "validation", "dev"), "test": ("test",)}
_DEFAULT_SHARES = {"file": (0.1, 0.2), "folder": (0.1, 0.0)}
_MISSING = object()


def check_label_counts(counts: Mapping[str, int], where: str, noun: str) -> None:
    """Every label needs one item to train on and one to validate: a :class:`DataError` naming the first that has not."""
    for lab, n in sorted(counts.items()):
        if n < 2:
            raise DataError(f"label {lab!r} has {n} {noun} in {where!r}; every label needs at least 2 {noun}s: "
                            "one to train, one to validate")


def not_found(kind: str, name: str, message: str, choices: tuple[str, ...] = ()) -> NotFoundError:
    """A :class:`NotFoundError` for ``kind`` ``name`` that reads ``message``."""
    err = NotFoundError(kind, name, choices)
    err.args = (message,)
    return err


def _extensions() -> str:
    return ", ".join(FORMATS)


def _format_of(path: Path) -> str:
    try:
        return FORMATS[path.suffix.lower()]
    except KeyError:
        raise ConfigError(
            f"cannot read {str(path)!r}: unknown file type {path.suffix or '(no extension)'!r}; "
            f"valid extensions: {_extensions()}"
        ) from None


# --- reading one file into columns -----------------------------------------------------------------


@dataclass
class _Table:
    """One file's columns; ``where[i]`` names row ``i`` in messages (``row 3 (line 4)``)."""

    path: Path
    columns: list[str]
    get: Callable[[str], list[Any]]
    where: list[str]

    @property
    def n_rows(self) -> int:
        return len(self.where)

    def at(self, i: int) -> str:
        return f"{str(self.path)!r} {self.where[i]}"


def _decode(path: Path, data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{str(path)!r} is not UTF-8 text (bad byte at offset {exc.start}); save it as UTF-8") from exc


def _read_delimited(path: Path, data: bytes, delimiter: str) -> _Table:
    reader = csv.reader(io.StringIO(_decode(path, data), newline=""), delimiter=delimiter)
    try:
        header = next(reader, None)
        columns = [c.strip() for c in header] if header else []
        if len(set(columns)) != len(columns):
            twice = sorted(c for c, n in Counter(columns).items() if n > 1)
            raise DataError(f"{str(path)!r}: the header names column(s) {', '.join(map(repr, twice))} twice")
        rows: list[list[str]] = []
        where: list[str] = []
        for row in reader:
            if not any(cell.strip() for cell in row):  # blank line or an all-empty row
                continue
            where.append(f"row {len(where) + 1} (line {reader.line_num})")
            if len(row) != len(columns):
                raise DataError(
                    f"{str(path)!r} {where[-1]} has {len(row)} fields but the header has {len(columns)}"
                )
            rows.append(row)
    except csv.Error as exc:
        raise DataError(f"{str(path)!r} line {reader.line_num}: not valid {delimiter!r}-separated text: {exc}") from exc
    index = {c: j for j, c in enumerate(columns)}
    return _Table(path, columns, lambda c: [r[index[c]] for r in rows], where)


def _read_jsonl(path: Path, data: bytes) -> _Table:
    objects: list[dict] = []
    where: list[str] = []
    columns: dict[str, None] = {}
    # split on "\n" only: str.splitlines would also cut at U+2028, which JSON strings may hold.
    for line_no, line in enumerate(_decode(path, data).split("\n"), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{str(path)!r} line {line_no} is not valid JSON: {exc.msg} (column {exc.colno})") from exc
        if not isinstance(obj, dict):
            raise DataError(f"{str(path)!r} line {line_no} is a JSON {type(obj).__name__}, not an object")
        objects.append(obj)
        where.append(f"row {len(where) + 1} (line {line_no})")
        columns.update(dict.fromkeys(obj))
    return _Table(path, list(columns), lambda c: [o.get(c, _MISSING) for o in objects], where)


def _read_parquet(path: Path, data: bytes) -> _Table:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise missing_dependency("pyarrow", "parquet", "reading Parquet files") from None
    try:
        table = pq.read_table(pa.BufferReader(data))
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ...
        raise DataError(f"{str(path)!r} is not a readable Parquet file: {exc}") from exc
    columns = [str(c) for c in table.column_names]
    if len(set(columns)) != len(columns):
        twice = sorted(c for c, n in Counter(columns).items() if n > 1)
        raise DataError(f"{str(path)!r} has column(s) {', '.join(map(repr, twice))} twice")
    where = [f"row {i + 1}" for i in range(table.num_rows)]
    return _Table(path, columns, lambda c: table.column(c).to_pylist(), where)


def _read_table(path: Path, data: bytes, fmt: str) -> _Table:
    if fmt == "csv":
        table = _read_delimited(path, data, ",")
    elif fmt == "tsv":
        table = _read_delimited(path, data, "\t")
    elif fmt == "jsonl":
        table = _read_jsonl(path, data)
    else:
        table = _read_parquet(path, data)
    if table.n_rows == 0:
        raise DataError(f"{str(path)!r} has no data rows")
    return table


# --- columns and values ----------------------------------------------------------------------------


def _pick_column(table: _Table, explicit: str | None, defaults: tuple[str, ...], what: str, option: str) -> str | None:
    """The column for ``what``: ``explicit`` if given (must exist), else the first default present."""
    found = ", ".join(map(repr, table.columns)) or "none"
    if explicit is not None:
        if explicit not in table.columns:
            raise ConfigError(f"{str(table.path)!r} has no {what} column {explicit!r} ({option}); its columns: {found}")
        return explicit
    for name in defaults:
        if name in table.columns:
            return name
    lowered = {c.lower(): c for c in table.columns}
    for name in defaults:
        if name in lowered:
            return lowered[name]
    if what == "domain":
        return None
    raise DataError(
        f"{str(table.path)!r} has no {what} column: none of {', '.join(defaults)} is there; "
        f"its columns: {found}; pass {option}='<column>'"
    )


def _describe(v: Any) -> str:
    if v is _MISSING:
        return "nothing (the key is missing)"
    if v is None:
        return "null"
    shown = repr(v)
    return f"{type(v).__name__} {shown[:40] + '...' if len(shown) > 40 else shown}"


def _texts(table: _Table, col: str) -> list[str]:
    out = table.get(col)
    for i, v in enumerate(out):
        if not isinstance(v, str):
            raise DataError(f"{table.at(i)}: the text column {col!r} holds {_describe(v)}, not text (mixed types)")
        if not v.strip():
            raise DataError(f"{table.at(i)}: empty text in column {col!r}")
    return out


def _names(table: _Table, col: str, what: str) -> list[str | None]:
    """Labels or domains: text (stripped) or integers (made text); empty -> ``None``; anything else is an error."""
    out: list[str | None] = []
    for i, v in enumerate(table.get(col)):
        if isinstance(v, str):
            out.append(v.strip() or None)
        elif isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)):
            out.append(str(int(v)))
        elif v is None or v is _MISSING:
            out.append(None)
        else:
            raise DataError(f"{table.at(i)}: the {what} column {col!r} holds {_describe(v)}; a {what} is text or an integer")
    return out


# --- options ---------------------------------------------------------------------------------------


def _check_share(value: Any, option: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ConfigError(f"{option} must be a number in [0, 1), got {value!r}")
    value = float(value)
    if not (0.0 <= value < 1.0) or math.isnan(value):
        raise ConfigError(f"{option} must be in [0, 1), got {value!r}")
    return value


def _check_options(text_col: Any, label_col: Any, domain_col: Any, oos_label: Any, seed: Any, name: Any) -> None:
    for option, value in (("text_col", text_col), ("label_col", label_col)):
        if value is not None and (not isinstance(value, str) or not value):
            raise ConfigError(f"{option} must be a column name or None, got {value!r}")
    if domain_col is not None and not isinstance(domain_col, str):
        raise ConfigError(f"domain_col must be a column name, '' (no domains) or None (auto), got {domain_col!r}")
    if oos_label is not None and (not isinstance(oos_label, str) or not oos_label.strip()):
        raise ConfigError(f"oos_label must be 'auto', a label or None, got {oos_label!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed must be a non-negative int, got {seed!r}")
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise ConfigError(f"name must be non-empty text or None, got {name!r}")


# --- splitting -------------------------------------------------------------------------------------


def _share_count(n: int, share: float) -> int:
    return 0 if share == 0 else max(1, math.floor(n * share + 0.5))


def split_indices(labels: list[str], val_share: float, test_share: float, seed: int) -> dict[str, np.ndarray]:
    """Seeded, stratified split of row indices into train / val / test.

    Each label gets its own stream (``default_rng([seed, crc32(label)])``), so a
    label's split does not move when other labels change. Per label of ``n``
    rows: ``test`` takes ``round(n * test_share)`` and ``val`` ``round(n * val_share)``
    (at least one each when the share is > 0), always leaving one for ``train``.
    Every split keeps the file's row order.
    """
    arr = np.asarray(labels)
    parts: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
    for lab in sorted(set(labels)):
        idx = np.flatnonzero(arr == lab)
        n = idx.size
        n_val = min(_share_count(n, val_share), n - 1)
        n_test = min(_share_count(n, test_share), n - 1 - n_val)
        perm = np.random.default_rng([int(seed), zlib.crc32(lab.encode("utf-8"))]).permutation(idx)
        parts["test"].append(perm[:n_test])
        parts["val"].append(perm[n_test : n_test + n_val])
        parts["train"].append(perm[n_test + n_val :])
    return {k: np.sort(np.concatenate(v)) if v else np.zeros(0, dtype=np.int64) for k, v in parts.items()}


def resolve_shares(
    files: Mapping[str, Path], val_share: Any, test_share: Any
) -> tuple[dict[str, float | None], list[str]]:
    """The val / test shares to split off the training data, and which splits are derived that way.

    ``files`` maps the roles present (``"data"`` for one file holding everything,
    else ``"train"`` plus optional ``"val"`` / ``"test"``) to where they are. A
    share given for a split that is already there is an error; a missing one
    takes the default: 0.1 / 0.2 for ``"data"``, 0.1 / 0 beside a ``"train"``.
    """
    shares = {"val": _check_share(val_share, "val_share"), "test": _check_share(test_share, "test_share")}
    defaults = dict(zip(("val", "test"), _DEFAULT_SHARES["file" if set(files) == {"data"} else "folder"]))
    for role, share in shares.items():
        if role in files and share is not None:
            raise ConfigError(
                f"{role}_share={share} was given but {str(files[role])!r} already holds the {role} split; drop one"
            )
        if role not in files and share is None:
            shares[role] = defaults[role]
    derived = [r for r in ("val", "test") if r not in files and shares[r]]
    if sum(shares[r] or 0.0 for r in derived) >= 1.0:
        raise ConfigError(
            f"val_share + test_share must be below 1 (something must stay to train on), got "
            f"{shares['val']} + {shares['test']}"
        )
    return shares, derived


# --- files and folders -----------------------------------------------------------------------------


def _folder_files(folder: Path) -> tuple[dict[str, Path], str]:
    """The split files of ``folder`` by role, and their common format."""
    found: dict[str, list[Path]] = {}
    entries = sorted(folder.iterdir())
    for f in entries:
        if not f.is_file() or f.suffix.lower() not in FORMATS:
            continue
        role = next((r for r, stems in ROLES.items() if f.stem.lower() in stems), None)
        if role is not None:
            found.setdefault(role, []).append(f)
    if "train" not in found:
        held = [p.name + ("/" if p.is_dir() else "") for p in entries]
        shown = ", ".join(held[:20]) + (" ..." if len(held) > 20 else "") if held else "nothing"
        raise DataError(
            f"folder {str(folder)!r} has no train file (train with one of {_extensions()}) and no label "
            f"subfolders of images; it holds: {shown}"
        )
    for role, files in found.items():
        if len(files) > 1:
            raise DataError(
                f"folder {str(folder)!r} holds {len(files)} {role} files: {', '.join(f.name for f in files)}; keep one"
            )
    files = {role: found[role][0] for role in ROLES if role in found}
    formats = {FORMATS[f.suffix.lower()] for f in files.values()}
    if len(formats) > 1:
        raise DataError(
            f"folder {str(folder)!r} mixes formats: {', '.join(f.name for f in files.values())}; use one format"
        )
    return files, formats.pop()


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise not_found("dataset", str(path), f"no such data file {str(path)!r}") from None
    except OSError as exc:
        raise DataError(f"cannot read {str(path)!r}: {exc}") from exc


def load_files(
    source: str | os.PathLike[str],
    *,
    text_col: str | None = None,
    label_col: str | None = None,
    domain_col: str | None = None,
    oos_label: str | None = "auto",
    val_share: float | None = None,
    test_share: float | None = None,
    seed: int = 0,
    name: str | None = None,
) -> Dataset:
    """Load a labelled data file or folder of split files as a text :class:`Dataset`.

    See :func:`manyfold.data.load_dataset` for the options; this is its path for
    anything that is not a built-in name.
    """
    path = Path(os.path.abspath(Path(source).expanduser()))  # absolute, symlinks kept as given
    if path.is_dir():
        files, fmt = _folder_files(path)
    elif path.is_file():
        fmt = _format_of(path)
        files = {"data": path}
    else:
        raise not_found("dataset", str(source), f"no such data file or folder {str(path)!r}")
    blobs = {role: _read_bytes(f) for role, f in files.items()}
    return _build(path, files, blobs, fmt, text_col=text_col, label_col=label_col, domain_col=domain_col,
                  oos_label=oos_label, val_share=val_share, test_share=test_share, seed=seed, name=name)


def load_files_ref(ref: Mapping[str, Any]) -> Dataset:
    """Rebuild a files dataset from its reference; every file must exist and match its recorded sha256."""
    try:
        path = Path(ref["path"])
        entries = {str(role): (Path(e["path"]), str(e["sha256"])) for role, e in ref["files"].items()}
        fmt, columns, split = str(ref["format"]), ref["columns"], ref["split"]
        options = {
            "text_col": columns["text"], "label_col": columns["label"], "domain_col": columns.get("domain") or "",
            "oos_label": ref["oos_label"], "val_share": split["val_share"], "test_share": split["test_share"],
            "seed": split["seed"], "name": ref["name"],
        }
    except (KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(f"malformed files dataset reference (missing or bad field {exc}): {dict(ref)!r}") from None
    if fmt not in FORMATS.values():
        raise ConfigError(f"dataset reference has unknown format {fmt!r}; valid formats: {', '.join(sorted(set(FORMATS.values())))}")
    roles = set(entries)
    if roles != {"data"} and not ("train" in roles and roles <= set(ROLES)):
        raise ConfigError(f"dataset reference has files for {sorted(roles)}; expected 'data' or 'train' (+ 'val', 'test')")
    blobs: dict[str, bytes] = {}
    for role, (p, digest) in entries.items():
        try:
            blobs[role] = p.read_bytes()
        except FileNotFoundError:
            raise DataError(f"the data file {str(p)!r} this assembly was built from is missing") from None
        except OSError as exc:
            raise DataError(f"cannot read the data file {str(p)!r} this assembly was built from: {exc}") from exc
        if hashlib.sha256(blobs[role]).hexdigest() != digest:
            raise DataError(
                f"the data file {str(p)!r} has changed since the assembly was built (sha256 differs); "
                "rebuild the assembly or restore the file"
            )
    return _build(path, {r: p for r, (p, _) in entries.items()}, blobs, fmt, **options)


def _build(path: Path, files: dict[str, Path], blobs: dict[str, bytes], fmt: str, *, text_col: str | None,
           label_col: str | None, domain_col: str | None, oos_label: str | None, val_share: Any, test_share: Any,
           seed: int, name: str | None) -> Dataset:
    _check_options(text_col, label_col, domain_col, oos_label, seed, name)
    single = set(files) == {"data"}
    shares, derived = resolve_shares(files, val_share, test_share)

    # Parse every file; the training file decides the columns, the others must have them.
    main = "data" if single else "train"
    tables = {role: _read_table(p, blobs[role], fmt) for role, p in files.items()}
    first = tables[main]
    tcol = _pick_column(first, text_col, TEXT_COLUMNS, "text", "text_col")
    lcol = _pick_column(first, label_col, LABEL_COLUMNS, "label", "label_col")
    dcol = None if domain_col == "" else _pick_column(first, domain_col, (DOMAIN_COLUMN,), "domain", "domain_col")
    if tcol == lcol:
        raise ConfigError(f"{str(first.path)!r}: the text and the label column are both {tcol!r}")
    if dcol is not None and dcol in (tcol, lcol):
        raise ConfigError(f"{str(first.path)!r}: the domain column {dcol!r} is also the text or label column")
    for role, table in tables.items():
        for col in (tcol, lcol):
            if col not in table.columns:
                raise DataError(
                    f"{str(table.path)!r} has no column {col!r} (as in {first.path.name}); "
                    f"its columns: {', '.join(map(repr, table.columns))}"
                )

    texts = {role: _texts(t, tcol) for role, t in tables.items()}
    labels: dict[str, list[str]] = {}
    for role, t in tables.items():
        raw = _names(t, lcol, "label")
        for i, lab in enumerate(raw):
            if lab is None:
                raise DataError(f"{t.at(i)}: empty label in column {lcol!r}")
        labels[role] = raw  # type: ignore[assignment]

    every = set().union(*map(set, labels.values()))
    if oos_label == "auto":
        hits = [lab for lab in AUTO_OOS if lab in every]
        if len(hits) > 1:
            raise DataError(f"{str(path)!r} has both {hits[0]!r} and {hits[1]!r} labels; name the out-of-scope one with oos_label=")
        oos = hits[0] if hits else None
    elif oos_label is not None:
        oos = oos_label.strip()
        if oos not in every:
            shown = ", ".join(sorted(every)[:20])
            raise ConfigError(f"oos_label {oos!r} is not a label in {str(path)!r}; its labels: {shown}")
    else:
        oos = None

    # Domains: every in-scope row of a file with the domain column has one; one domain per label.
    label_to_domain: dict[str, str] = {}
    first_seen: dict[str, str] = {}
    if dcol is not None:
        for role, t in tables.items():
            if dcol not in t.columns:
                continue
            for i, dom in enumerate(_names(t, dcol, "domain")):
                lab = labels[role][i]
                if lab == oos:
                    continue
                if dom is None:
                    raise DataError(f"{t.at(i)}: empty domain in column {dcol!r} for label {lab!r}")
                if label_to_domain.setdefault(lab, dom) != dom:
                    raise DataError(
                        f"label {lab!r} has two domains: {label_to_domain[lab]!r} ({first_seen[lab]}) "
                        f"and {dom!r} ({t.at(i)})"
                    )
                first_seen.setdefault(lab, t.at(i))

    counts = Counter(lab for lab in labels[main] if lab != oos)
    if not counts:
        raise DataError(f"{str(files[main])!r} has no in-scope labels: every row is out-of-scope ({oos!r})")
    check_label_counts(counts, str(files[main]), "example")
    for role, t in tables.items():
        for i, lab in enumerate(labels[role]):
            if lab != oos and lab not in counts:
                raise DataError(f"{t.at(i)}: label {lab!r} does not occur in the training data {str(files[main])!r}")
    if dcol is not None:
        missing = sorted(set(counts) - set(label_to_domain))
        if missing:  # cannot happen with one file; a folder's val/test have no labels of their own
            raise DataError(f"label(s) without a domain: {', '.join(missing[:10])}")

    # Splits: the files' own, plus val / test split off the training rows.
    parts = split_indices(labels[main], shares["val"] or 0.0, shares["test"] or 0.0, seed)
    main_texts, main_labels = texts[main], np.array(labels[main], dtype=str)
    splits: dict[str, Split] = {}
    for role in ROLES:
        if role != "train" and role in files:
            splits[role] = Split(texts[role], np.array(labels[role], dtype=str))
        elif role == "train" or role in derived:
            idx = parts[role]
            splits[role] = Split([main_texts[i] for i in idx.tolist()], main_labels[idx])

    ds_name = name.strip() if name is not None else (path.stem if single else path.name)
    ref = {
        "kind": "files",
        "path": str(path),
        "files": {role: {"path": str(p), "sha256": hashlib.sha256(blobs[role]).hexdigest()} for role, p in files.items()},
        "format": fmt,
        "columns": {"text": tcol, "label": lcol, "domain": dcol},
        "oos_label": oos,
        "split": {
            "val_share": None if "val" in files else shares["val"],
            "test_share": None if "test" in files else shares["test"],
            "seed": int(seed),
            "derived": derived,
        },
        "name": ds_name,
    }
    return Dataset(ds_name, splits, label_to_domain, oos, "text", {"source": ref, "path": str(path), "format": fmt})


# --- label -> expert maps --------------------------------------------------------------------------


def read_label_map(path: str | os.PathLike[str]) -> dict[str, str]:
    """Read a label -> expert map: JSON ``{"label": "expert", ...}`` or CSV/TSV with columns ``label,expert``.

    Labels and experts are non-empty text (surrounding spaces are dropped); a
    label listed twice with two experts is an error naming the row.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise not_found("label map", str(path), f"no such label map file {str(p)!r}")
    ext = p.suffix.lower()
    text = _decode(p, _read_bytes(p))
    out: dict[str, str] = {}
    if ext == ".json":
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{str(p)!r} is not valid JSON: {exc}") from exc
        if not isinstance(raw, dict):
            raise DataError(f"{str(p)!r} must hold a JSON object {{\"label\": \"expert\", ...}}, not a {type(raw).__name__}")
        for label, expert in raw.items():
            if not label.strip():
                raise DataError(f"{str(p)!r}: an empty label")
            if not isinstance(expert, str) or not expert.strip():
                raise DataError(f"{str(p)!r}: label {label!r} maps to {expert!r}; an expert is non-empty text")
            out[label.strip()] = expert.strip()
    elif ext in (".csv", ".tsv"):
        table = _read_delimited(p, text.encode("utf-8"), "," if ext == ".csv" else "\t")
        if "label" not in table.columns or "expert" not in table.columns:
            raise DataError(
                f"{str(p)!r} needs the columns 'label' and 'expert'; its columns: {', '.join(map(repr, table.columns))}"
            )
        for i, (label, expert) in enumerate(zip(table.get("label"), table.get("expert"))):
            label, expert = label.strip(), expert.strip()
            if not label or not expert:
                raise DataError(f"{table.at(i)}: empty {'label' if not label else 'expert'}")
            if out.setdefault(label, expert) != expert:
                raise DataError(f"{table.at(i)}: label {label!r} maps to {expert!r} here and to {out[label]!r} before")
    else:
        raise ConfigError(f"cannot read label map {str(p)!r}: unknown file type {ext or '(none)'!r}; valid: .json, .csv, .tsv")
    if not out:
        raise DataError(f"label map {str(p)!r} is empty")
    return out
