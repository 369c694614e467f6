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


def test_peer_system_scores_routed_experts_with_known_answers() -> None:
    """semantic-router's domain pick feeds our experts; no route is an out-of-scope answer."""
    from types import SimpleNamespace

    from manyfold.bench._run import _peer_system

    class Fixed:  # an expert that answers its own first label whatever the input
        def __init__(self, label: str) -> None:
            self.label = label

        def predict(self, X):
            return np.full(len(X), self.label)

    experts = {"a": Fixed("a1"), "b": Fixed("b1")}
    asm = SimpleNamespace(config=SimpleNamespace(oos_label="oos"), expert_names=["a", "b"], expert=experts.__getitem__)
    y = np.array(["a1", "a1", "b1", "b2", "oos", "oos"])
    routed = ["a", "b", "b", "b", "", "a"]  # right, wrong domain, right, right domain but b2, no route, false route
    peer = {"test_domains": routed, "fit_seconds": 1.5, "overhead_single_ms": {"median": 2.0}}
    r = _peer_system(peer, asm, np.zeros((6, 3), np.float32), y, {"a1": "a", "b1": "b", "b2": "b"}, 8.0, 20.0)
    assert r["in_scope_accuracy"] == 0.5  # a1 and b1 right; of 4 in-scope items
    assert r["routing_accuracy"] == 0.75 and r["oos_recall"] == 0.5
    assert r["relative_cost"] == pytest.approx(0.5)  # (8 + 2) / 20
