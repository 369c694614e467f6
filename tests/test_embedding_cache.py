"""Tests of the on-disk EmbeddingCache and the CachedEncoder wrapper."""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from manyfold import _io
from manyfold._exceptions import InputError
from manyfold.encoders import CachedEncoder, EmbeddingCache, Encoder, HashingEncoder


class Counting:
    """Wraps an encoder and records every item it was asked to encode."""

    def __init__(self, inner, fail_after: int | None = None):
        self.inner, self.calls, self.fail_after = inner, [], fail_after
        self.modality = getattr(inner, "modality", None)

    id = property(lambda self: self.inner.id)
    spec = property(lambda self: self.inner.spec)
    dim = property(lambda self: self.inner.dim)

    def encode(self, items, *, batch_size=64, show_progress=False):
        if self.fail_after is not None and len(self.calls) >= self.fail_after:
            raise RuntimeError("encoder crashed")
        self.calls.append(list(items))
        return self.inner.encode(items, batch_size=batch_size, show_progress=show_progress)


class ArrayEncoder:
    """A toy non-text encoder: a vector of simple statistics of a numeric array."""

    id, spec, dim = "toy-array-v1", "toy", 3

    def encode(self, items, *, batch_size=64, show_progress=False):
        arrays = [np.asarray(getattr(a, "data", a), dtype=np.float64) for a in items]
        return np.array([[a.mean(), a.max(), a.size] for a in arrays], dtype=np.float32).reshape(-1, 3)


class Box:
    """An item numpy cannot turn into a numeric array: it cannot be cached, only encoded."""

    def __init__(self, data):
        self.data = data


def texts(n: int) -> list[str]:
    return [f"sentence number {i} about topic {i % 17}" for i in range(n)]


def files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_second_run_encodes_nothing(tmp_path):
    base = HashingEncoder(dim=128)
    data = texts(50) + texts(10)  # 10 repeats
    first = CachedEncoder(Counting(base), EmbeddingCache(tmp_path))
    x1 = first.encode(data)
    assert (first.misses, first.hits) == (50, 10)
    assert sum(map(len, first.encoder.calls)) == 50
    assert np.array_equal(x1, base.encode(data))

    second = CachedEncoder(Counting(base), EmbeddingCache(tmp_path))  # a fresh process, same disk
    x2 = second.encode(data)
    assert (second.misses, second.hits) == (0, 60) and second.encoder.calls == []
    assert np.array_equal(x1, x2) and x2.dtype == np.float32
    assert isinstance(second, Encoder)
    assert (second.id, second.spec, second.dim) == (base.id, base.spec, base.dim)

    x3 = second.encode(data[:5] + ["a brand new sentence"])
    assert second.misses == 1 and second.encoder.calls == [["a brand new sentence"]]
    assert np.array_equal(x3, base.encode(data[:5] + ["a brand new sentence"]))


def test_keys_depend_on_encoder_id(tmp_path):
    cache = EmbeddingCache(tmp_path)
    a = CachedEncoder(HashingEncoder(dim=64), cache)
    b = CachedEncoder(HashingEncoder(dim=64, seed=1), cache)
    a.encode(["same text"])
    b.encode(["same text"])
    assert a.misses == b.misses == 1
    assert EmbeddingCache.key(a.id, "same text") != EmbeddingCache.key(b.id, "same text")
    assert len(cache.stats()["encoders"]) == 2


def test_empty_and_bad_items(tmp_path):
    enc = CachedEncoder(HashingEncoder(dim=16), EmbeddingCache(tmp_path))
    out = enc.encode([])
    assert out.shape == (0, 16) and out.dtype == np.float32
    with pytest.raises(InputError, match="item 2 is a bytes"):
        enc.encode(["a", "b", b"c"])
    assert enc.misses == 0 and files(tmp_path) == []


def test_array_items_are_keyed_by_bytes_shape_dtype(tmp_path):
    enc = CachedEncoder(ArrayEncoder(), EmbeddingCache(tmp_path))
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    items = [a, a.copy(), a.reshape(3, 2), a.astype(np.float64)]
    x = enc.encode(items)
    assert enc.misses == 3 and enc.hits == 1  # the copy is a hit; reshape and dtype change are not
    again = CachedEncoder(ArrayEncoder(), EmbeddingCache(tmp_path))
    assert np.array_equal(again.encode(items), x) and again.misses == 0
    assert EmbeddingCache.key("e", Box([1.0])) is None
    boxed = again.encode([Box([1.0, 5.0]), a, Box([1.0, 5.0])])
    assert again.misses == 2 and again.hits == 4 + 1  # unkeyable items are always encoded
    assert np.array_equal(boxed[0], [3.0, 5.0, 2.0]) and np.array_equal(boxed[1], x[0])


@pytest.mark.parametrize("damage", ["flip", "truncate", "garbage"])
def test_corrupted_shard_is_skipped_and_recomputed(tmp_path, damage):
    base = HashingEncoder(dim=64)
    data = texts(20)
    CachedEncoder(base, EmbeddingCache(tmp_path)).encode(data)
    (shard,) = tmp_path.rglob("*.safetensors")
    raw = bytearray(shard.read_bytes())
    if damage == "flip":  # a silent bit flip inside the vectors: only the checksum can see it
        raw[-100] ^= 0x40
    elif damage == "truncate":
        raw = raw[: len(raw) // 2]
    else:
        raw = bytearray(b"not a safetensors file at all")
    shard.write_bytes(bytes(raw))

    enc = CachedEncoder(base, EmbeddingCache(tmp_path))
    with pytest.warns(RuntimeWarning, match="corrupted embedding-cache shard"):
        x = enc.encode(data)
    assert enc.misses == 20 and np.array_equal(x, base.encode(data))
    assert list(tmp_path.rglob("*.corrupt")) and EmbeddingCache(tmp_path).stats()["corrupt"] == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        third = CachedEncoder(base, EmbeddingCache(tmp_path))
        assert np.array_equal(third.encode(data), x) and third.misses == 0


def test_shard_of_another_encoder_is_rejected(tmp_path):
    cache = EmbeddingCache(tmp_path)
    CachedEncoder(HashingEncoder(dim=64), cache).encode(["x", "y"])
    other = HashingEncoder(dim=64, seed=9)
    (shard,) = tmp_path.rglob("*.safetensors")
    target = cache.encoder_dir(other.id)
    target.mkdir(parents=True)
    os.replace(shard, target / shard.name)
    enc = CachedEncoder(other, EmbeddingCache(tmp_path))
    with pytest.warns(RuntimeWarning, match="another encoder"):
        x = enc.encode(["x", "y"])
    assert enc.misses == 2 and np.array_equal(x, other.encode(["x", "y"]))


def test_encoder_failure_writes_nothing(tmp_path):
    enc = CachedEncoder(Counting(HashingEncoder(dim=32), fail_after=1), EmbeddingCache(tmp_path, shard_size=10))
    with pytest.raises(RuntimeError, match="crashed"):
        enc.encode(texts(25))
    shards = list(tmp_path.rglob("*.safetensors"))
    assert len(shards) == 1  # the one finished chunk is kept, nothing partial
    assert not [p for p in files(tmp_path) if p.suffix == ".tmp" or p.name.startswith(".")]
    again = CachedEncoder(HashingEncoder(dim=32), EmbeddingCache(tmp_path, shard_size=10))
    again.encode(texts(25))
    assert (again.hits, again.misses) == (10, 15)


def test_interrupted_write_leaves_no_partial_file(tmp_path, monkeypatch):
    real_replace = os.replace

    def interrupted(src, dst):
        if str(dst).endswith(".safetensors"):
            raise KeyboardInterrupt
        return real_replace(src, dst)

    monkeypatch.setattr(_io.os, "replace", interrupted)
    enc = CachedEncoder(HashingEncoder(dim=32), EmbeddingCache(tmp_path))
    with pytest.raises(KeyboardInterrupt):
        enc.encode(texts(5))
    assert [p.name for p in files(tmp_path)] == ["encoder.json"]

    def disk_full(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_io.os, "replace", disk_full)
    enc = CachedEncoder(HashingEncoder(dim=32), EmbeddingCache(tmp_path / "other"))
    with pytest.warns(RuntimeWarning, match="could not write the embedding cache"):
        x = enc.encode(texts(5))
    assert np.array_equal(x, HashingEncoder(dim=32).encode(texts(5)))
    assert files(tmp_path / "other") == []


def test_many_small_shards_are_compacted(tmp_path):
    base = HashingEncoder(dim=16, char_ngrams=None)
    data = texts(140)
    enc = CachedEncoder(base, EmbeddingCache(tmp_path, shard_size=2))
    x = enc.encode(data)
    assert len(list(tmp_path.rglob("*.safetensors"))) == 70
    again = CachedEncoder(base, EmbeddingCache(tmp_path))
    assert np.array_equal(again.encode(data), x) and again.misses == 0
    assert len(list(tmp_path.rglob("*.safetensors"))) == 1
    assert EmbeddingCache(tmp_path).stats()["items"] == 140


def test_clear_and_stats(tmp_path):
    cache = EmbeddingCache(tmp_path)
    a, b = HashingEncoder(dim=8), HashingEncoder(dim=8, seed=2)
    CachedEncoder(a, cache).encode(texts(7))
    CachedEncoder(b, cache).encode(texts(3))
    st = cache.stats()
    assert st["items"] == 10 and st["shards"] == 2 and st["bytes"] > 0 and st["corrupt"] == 0
    assert st["encoders"][a.id]["items"] == 7 and st["encoders"][b.id]["items"] == 3
    cache.clear(a.id)
    assert set(cache.stats()["encoders"]) == {b.id}
    enc = CachedEncoder(a, cache)
    enc.encode(texts(7))
    assert enc.misses == 7  # the in-memory index was dropped too
    cache.clear()
    assert cache.stats()["items"] == 0 and not tmp_path.exists()


def test_default_root_is_under_manyfold_home(tmp_path, monkeypatch):
    monkeypatch.setenv("MANYFOLD_HOME", str(tmp_path))
    assert EmbeddingCache().root == tmp_path / "cache" / "embeddings"


def test_25k_items_second_pass_is_fast(tmp_path):
    base = HashingEncoder(dim=384, char_ngrams=None)
    data = [f"utterance {i} for intent {i % 150} with some words" for i in range(25_000)]
    first = CachedEncoder(base, EmbeddingCache(tmp_path))
    x1 = first.encode(data)
    assert first.misses == 25_000 and len(list(tmp_path.rglob("*.safetensors"))) == 7
    t0 = time.perf_counter()
    second = CachedEncoder(base, EmbeddingCache(tmp_path))
    x2 = second.encode(data)
    elapsed = time.perf_counter() - t0
    assert second.misses == 0 and np.array_equal(x1, x2)
    assert elapsed < 5.0, f"warm cache pass over 25k items took {elapsed:.2f}s"


def test_raw_pixels_are_not_cached_but_model_features_are(tmp_path):
    from manyfold.encoders import cached_encoder, get_encoder

    cache = EmbeddingCache(tmp_path / "c")
    pixels = get_encoder("pixels")
    assert cached_encoder(pixels, cache) is pixels  # a division is cheaper than a cache read
    assert isinstance(cached_encoder(HashingEncoder(dim=64), cache), CachedEncoder)


# -- one progress line per job (issue 13) ------------------------------------------------------------

class _Bars:
    """Stands in for tqdm: records every bar made and what it was told."""

    made: list = []

    def __init__(self, *a, total=None, desc=None, **k):
        self.total, self.desc, self.n, self.postfix, self.closed = total, desc, 0.0, None, False
        _Bars.made.append(self)

    def update(self, n):
        self.n += n

    def set_postfix_str(self, s, refresh=True):
        self.postfix = s

    def close(self):
        self.closed = True


@pytest.fixture
def bars(monkeypatch):
    import tqdm.auto

    _Bars.made = []
    monkeypatch.setattr(tqdm.auto, "tqdm", _Bars)
    return _Bars.made


def test_a_call_over_many_shards_shows_one_bar_and_calls_the_model_in_pieces(tmp_path, bars):
    from manyfold.encoders._cache import PIECE

    inner = Counting(HashingEncoder(dim=16))
    enc = CachedEncoder(inner, EmbeddingCache(tmp_path, shard_size=2 * PIECE))
    items = texts(5 * PIECE + 7)
    seen = []
    enc.encode(items, show_progress=True)
    assert len(bars) == 1 and bars[0].total == len(items) and bars[0].n == len(items) and bars[0].closed
    assert max(len(c) for c in inner.calls) == PIECE and sum(len(c) for c in inner.calls) == len(items)
    enc.encode(items + ["one more"], on_progress=seen.append)  # a job's callback instead of a bar of its own
    assert seen == [1] and len(bars) == 1


def test_encode_ahead_fills_every_model_of_a_job_under_one_line(tmp_path, bars):
    from manyfold.encoders import ConcatEncoder, encode_ahead

    cache = EmbeddingCache(tmp_path)
    a, b = Counting(HashingEncoder(dim=16, seed=1)), Counting(HashingEncoder(dim=8, seed=2))
    router = CachedEncoder(a, cache)
    gen = CachedEncoder(ConcatEncoder([CachedEncoder(a, cache), CachedEncoder(b, cache)]), cache)
    train, test = texts(700), texts(900)[600:]  # 100 items in both
    lines = []
    done = encode_ahead([(router, train), (gen, test + train[:5])], log=lines.append)
    # a's items from both pairs, merged: each distinct text once; b only what the generalist will see
    assert done == {a.spec: 900, b.spec: 305}
    assert sorted(sum(a.calls, [])) == sorted(set(train) | set(test))
    assert sorted(sum(b.calls, [])) == sorted(set(test) | set(train[:5]))
    assert len(bars) == 1 and bars[0].closed and bars[0].n == pytest.approx(bars[0].total)
    assert len(lines) == 1 and "1,205 items with 2 models" in lines[0]
    a.calls.clear()
    assert encode_ahead([(router, train), (gen, test)], log=lines.append) == {} and a.calls == [] and len(bars) == 1
    np.testing.assert_array_equal(gen.encode(test[:3]), np.hstack([a.inner.encode(test[:3]), b.inner.encode(test[:3])]))
