"""Benchmark metric functions on hand-made cases with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from manyfold.bench._metrics import apgr, pgr, quality_curve, share_to_recover, summarise


def _half_right(n: int = 100) -> tuple[np.ndarray, np.ndarray]:
    small = np.zeros(n, bool)
    small[::2] = True  # the small model is right on half
    return small, np.ones(n, bool)  # the big one on all


def test_perfect_router_apgr_is_three_quarters() -> None:
    small, big = _half_right()
    score = (~small).astype(float)  # send exactly the items the small model gets wrong first
    x, q = quality_curve(score, small, big)
    assert q[0] == pytest.approx(0.5) and q[-1] == pytest.approx(1.0)
    # PGR rises linearly to 1 at share 0.5, then stays: area = 0.25 + 0.5
    assert apgr(x, q, 0.5, 1.0) == pytest.approx(0.75)
    assert share_to_recover(x, q, 0.5, 1.0, 0.5) == pytest.approx(0.25)
    assert share_to_recover(x, q, 0.5, 1.0, 0.95) == pytest.approx(0.475)


def test_random_router_apgr_is_one_half() -> None:
    small, big = _half_right(10_000)
    rng = np.random.default_rng(0)
    x, q = quality_curve(rng.random(len(small)), small, big)
    assert apgr(x, q, 0.5, 1.0) == pytest.approx(0.5, abs=0.01)
    assert share_to_recover(x, q, 0.5, 1.0, 0.8) == pytest.approx(0.8, abs=0.02)


def test_worst_router_and_exact_linear_curve() -> None:
    small, big = _half_right()
    x, q = quality_curve(small.astype(float), small, big)  # sends the items it already gets right first
    assert apgr(x, q, 0.5, 1.0) == pytest.approx(0.25)
    # a straight line from (0, small) to (1, big): APGR 0.5, p% of the gap at share p
    assert apgr([0, 1], [0.5, 1.0], 0.5, 1.0) == pytest.approx(0.5)
    assert share_to_recover([0, 1], [0.5, 1.0], 0.5, 1.0, 0.8) == pytest.approx(0.8)


def test_curve_points_ends_and_no_gap() -> None:
    small, big = _half_right()
    x, q = quality_curve(np.arange(100.0), small, big, points=11)
    assert len(x) == 11 and x[0] == 0 and x[-1] == 1
    assert np.isnan(pgr([0.7], 0.7, 0.7)).all()
    assert np.isnan(apgr([0, 1], [0.7, 0.7], 0.7, 0.7))
    assert np.isnan(share_to_recover([0, 1], [0.5, 0.6], 0.5, 1.0, 0.5))  # never reaches half the gap
    # a curve that starts past 0 and stops short of 1 is held flat at its ends
    assert apgr([0.5], [1.0], 0.5, 1.0) == pytest.approx(1.0)


def test_summarise() -> None:
    assert summarise([3.0, 1.0, 2.0]) == {"median": 2.0, "min": 1.0, "max": 3.0, "n": 3}
    assert summarise([])["n"] == 0
