"""A model-free, deterministic hashing-trick text encoder (for fast tests and baselines)."""

from __future__ import annotations

import hashlib
import itertools
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from .._exceptions import ConfigError
from ._common import TextEncoder, check_texts, empty_matrix, format_options

__all__ = ["HashingEncoder"]

_TOKEN = re.compile(r"\w+", re.UNICODE)
_DEFAULTS = {"dim": 2048, "ngram_range": (1, 2), "char_ngrams": (3, 5), "seed": 0}
#: Bump when the feature recipe changes, so cached vectors of the old recipe are not reused.
_VERSION = 1


def _normalise(m: np.ndarray) -> None:
    """L2-normalise the rows of ``m`` in place (zero rows stay zero)."""
    norms = np.sqrt(np.einsum("ij,ij->i", m, m))[:, None]
    np.divide(m, norms, out=m, where=norms > 0)


def _check_range(value: Any, name: str, allow_none: bool) -> tuple[int, int] | None:
    if value is None and allow_none:
        return None
    try:
        lo, hi = (int(v) for v in value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a pair (min_n, max_n), got {value!r}") from None
    if not 1 <= lo <= hi:
        raise ConfigError(f"{name} must satisfy 1 <= min_n <= max_n, got {value!r}")
    return lo, hi


class HashingEncoder(TextEncoder):
    """Bag of hashed word n-grams (and character n-grams), L2-normalised, float32.

    No model and no fitting: every feature string is hashed with keyed
    BLAKE2b (the key is derived from ``seed``) into one of ``dim`` buckets with a
    ±1 sign (the "signed hashing trick"), so the output is identical across
    processes, machines and Python versions (unlike ``hash()``).

    Text is lower-cased and split into ``\\w+`` tokens. Word n-grams of length
    ``ngram_range`` and, unless ``char_ngrams`` is ``None``, character n-grams
    of length ``char_ngrams`` taken inside each space-padded word (like
    scikit-learn's ``char_wb``) are counted. The word part and the character
    part are each L2-normalised, added, and the sum L2-normalised again, so both
    views weigh the same. A text without any token (``""``, ``"!!"``) maps to the
    zero vector.

    >>> enc = HashingEncoder(dim=512)
    >>> enc.encode(["hello world"]).shape
    (1, 512)
    """

    def __init__(
        self,
        dim: int = 2048,
        ngram_range: tuple[int, int] = (1, 2),
        char_ngrams: tuple[int, int] | None = (3, 5),
        seed: int = 0,
    ) -> None:
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or not 2 <= int(dim) <= 1 << 24:
            raise ConfigError(f"dim must be an integer in [2, 16777216], got {dim!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) < 1 << 64:
            raise ConfigError(f"seed must be an integer in [0, 2**64), got {seed!r}")
        self._dim = int(dim)
        self._ngram_range = _check_range(ngram_range, "ngram_range", allow_none=False)
        self._char_ngrams = _check_range(char_ngrams, "char_ngrams", allow_none=True)
        self._seed = int(seed)
        self._key = int(seed).to_bytes(8, "little")
        self._memo: dict[str, int] = {}
        self._char_memo: dict[str, tuple[int, ...]] = {}

    # -- identity ---------------------------------------------------------------------
    @property
    def dim(self) -> int:
        """Number of hash buckets (the output width)."""
        return self._dim

    @property
    def id(self) -> str:
        """E.g. ``"hashing-d2048-w1-2-c3-5-s0-v1"``; changes with every parameter."""
        w = "w{}-{}".format(*self._ngram_range)
        c = "c{}-{}".format(*self._char_ngrams) if self._char_ngrams else "cnone"
        return f"hashing-d{self._dim}-{w}-{c}-s{self._seed}-v{_VERSION}"

    @property
    def spec(self) -> str:
        """``"hashing"`` for the defaults, else e.g. ``"hashing:dim=512,char=none"``."""
        opts: dict[str, str] = {}
        if self._dim != _DEFAULTS["dim"]:
            opts["dim"] = str(self._dim)
        if self._ngram_range != _DEFAULTS["ngram_range"]:
            opts["ngram"] = "{}-{}".format(*self._ngram_range)
        if self._char_ngrams != _DEFAULTS["char_ngrams"]:
            opts["char"] = "{}-{}".format(*self._char_ngrams) if self._char_ngrams else "none"
        if self._seed != _DEFAULTS["seed"]:
            opts["seed"] = str(self._seed)
        return "hashing" + (":" + format_options(opts) if opts else "")

    def __repr__(self) -> str:
        return (f"HashingEncoder(dim={self._dim}, ngram_range={self._ngram_range}, "
                f"char_ngrams={self._char_ngrams}, seed={self._seed})")

    # -- features -----------------------------------------------------------------------
    def _hash(self, feature: str) -> int:
        """Code ``2 * bucket + sign_bit`` of one feature string (keyed BLAKE2b, 64 bits)."""
        h = int.from_bytes(hashlib.blake2b(feature.encode("utf-8"), digest_size=8, key=self._key).digest(), "little")
        return (h % self._dim) * 2 + (h >> 63)

    def _codes(self, flat: list[str]) -> list[int]:
        """Hash many features, memoised (the memo is bounded)."""
        memo = self._memo
        missing = set(flat).difference(memo)
        if missing:
            if len(memo) + len(missing) > 1 << 21:  # bound memory on huge vocabularies
                memo.clear()
                missing = set(flat)
            for f in missing:
                memo[f] = self._hash(f)
        return list(map(memo.__getitem__, flat))

    def _token_char_codes(self, token: str) -> tuple[int, ...]:
        """Codes of the character n-grams of one space-padded token (memoised per token)."""
        hit = self._char_memo.get(token)
        if hit is None:
            clo, chi = self._char_ngrams  # type: ignore[misc]
            padded = f" {token} "
            feats = ["c" + padded[i:i + n] for n in range(clo, chi + 1) for i in range(max(len(padded) - n + 1, 1))]
            hit = tuple(self._codes(feats))
            if len(self._char_memo) >= 1 << 20:
                self._char_memo.clear()
            self._char_memo[token] = hit
        return hit

    def _features(self, text: str) -> tuple[list[str], list[int]]:
        """Word n-gram strings and character n-gram codes of one text."""
        tokens = _TOKEN.findall(text.lower())
        lo, hi = self._ngram_range
        words = [
            "w" + " ".join(tokens[i:i + n])
            for n in range(lo, hi + 1)
            for i in range(len(tokens) - n + 1)
        ]
        chars: list[int] = []
        if self._char_ngrams:
            for tok in tokens:
                chars.extend(self._token_char_codes(tok))
        return words, chars

    def _block(self, codes: list[list[int]]) -> np.ndarray:
        """Rows of L2-normalised signed bucket counts from per-text code lists."""
        n = len(codes)
        lengths = np.fromiter(map(len, codes), dtype=np.int64, count=n)
        flat = np.fromiter(itertools.chain.from_iterable(codes), dtype=np.int64, count=int(lengths.sum()))
        rows = np.repeat(np.arange(n, dtype=np.int64), lengths)
        signs = 1.0 - 2.0 * (flat & 1).astype(np.float64)
        m = np.bincount(rows * self._dim + (flat >> 1), weights=signs, minlength=n * self._dim)
        m = m.astype(np.float64, copy=False).reshape(n, self._dim)
        _normalise(m)
        return m

    # -- encode -------------------------------------------------------------------------
    def encode(self, items: Sequence[Any], *, batch_size: int = 64, show_progress: bool = False) -> np.ndarray:
        """Encode strings into an ``(n, dim)`` float32 matrix of unit (or zero) rows.

        ``batch_size`` bounds the temporary float64 work matrix; ``show_progress``
        shows a tqdm bar. A non-``str`` item raises :class:`InputError`.
        """
        texts = check_texts(items, "HashingEncoder")
        if not texts:
            return empty_matrix(self._dim)
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size!r}")
        step = max(int(batch_size), 256)  # tiny work blocks only add overhead here
        out = np.empty((len(texts), self._dim), dtype=np.float32)
        starts = range(0, len(texts), step)
        if show_progress:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc="hashing", unit="batch")
        for s in starts:
            chunk = texts[s:s + step]
            pairs = [self._features(t) for t in chunk]
            words = [w for w, _ in pairs]
            lengths = list(map(len, words))
            flat = self._codes([f for w in words for f in w])
            it = iter(flat)
            m = self._block([list(itertools.islice(it, k)) for k in lengths])
            if self._char_ngrams:
                m += self._block([c for _, c in pairs])
                _normalise(m)
            out[s:s + len(chunk)] = m
        return out
