"""LazyExpertStore: LRU eviction order, hit/miss counters, count and byte bounds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from manyfold._exceptions import ConfigError, ExpertNotFoundError
from manyfold._lazy import LazyExpertStore, expert_nbytes
from manyfold.experts import HeadExpert


def _expert(name: str, d: int = 8) -> HeadExpert:
    """A real HeadExpert with hand-set weights (no training needed)."""
    rng = np.random.default_rng(abs(hash(name)) % 2**32)
    config = {"type": "HeadExpert", "params": HeadExpert(name).get_params(), "labels": [f"{name}.a", f"{name}.b"],
              "temperature": 1.0, "n_features_in": d,
              "card": {"name": name, "description": "", "domain": None, "labels": [f"{name}.a", f"{name}.b"],
                       "metrics": {}, "size": 2 * d + 2, "lineage": {}}}
    arrays = {"W": rng.standard_normal((d, 2)).astype(np.float32), "b": np.zeros(2, np.float32)}
    return HeadExpert.from_state(config, arrays)


@pytest.fixture
def store(tmp_path: Path) -> LazyExpertStore:
    s = LazyExpertStore(tmp_path / "experts", max_experts=2)
    for n in ("a", "b", "c"):
        s.add(_expert(n))
    return s


def test_lru_eviction_order_and_counters(store: LazyExpertStore) -> None:
    assert len(store) == 3 and "a" in store and list(store) == ["a", "b", "c"]
    store.get("a")
    store.get("b")
    assert store.loaded == ["a", "b"] and (store.hits, store.misses) == (0, 2)
    store.get("a")  # a hit: a becomes the most recent
    assert store.loaded == ["b", "a"] and store.hits == 1
    store.get("c")  # a miss over the bound: b, the least recently used, goes
    assert store.loaded == ["a", "c"] and store.evictions == 1 and store.misses == 3
    store.get("b")
    assert store.loaded == ["c", "b"] and store.evictions == 2
    assert len(store.loaded) <= 2


def test_loaded_expert_predicts_like_the_original(tmp_path: Path) -> None:
    e = _expert("x")
    s = LazyExpertStore(tmp_path)
    s.add(e)
    X = np.random.default_rng(1).standard_normal((5, 8)).astype(np.float32)
    np.testing.assert_allclose(s.get("x").predict_proba(X), e.predict_proba(X), rtol=1e-6)
    assert s.stats()["loaded_bytes"] == expert_nbytes(e)
    # a fresh store over the same directory finds the files
    assert "x" in LazyExpertStore(tmp_path)


def test_byte_bound_and_errors(tmp_path: Path) -> None:
    one = expert_nbytes(_expert("a"))
    s = LazyExpertStore(tmp_path, max_bytes=2 * one)
    for n in "abcd":
        s.add(_expert(n))
    for n in "abcdab":
        s.get(n)
        assert s.loaded_bytes <= 2 * one
    assert s.loaded == ["a", "b"] and s.misses == 6 and s.evictions == 4
    with pytest.raises(ExpertNotFoundError):
        s.get("zz")
    with pytest.raises(ConfigError):
        LazyExpertStore(tmp_path, max_experts=0)
    s.add(_expert("a"))  # replacing drops the loaded copy
    assert "a" not in s.loaded
