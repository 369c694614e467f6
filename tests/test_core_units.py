"""Fast unit tests with known answers: heads, experts, routers, metrics, OOS detector."""

from __future__ import annotations

import numpy as np
import pytest

from manyfold import CentroidRouter, ConfigError, HeadExpert, KNNRouter, LinearRouter, NotFittedError
from manyfold._heads import HeadSpec, fit_temperature, head_logits, softmax, train_head
from manyfold._metrics import auroc, macro_f1
from manyfold._oos import OOSDetector
from manyfold.routers import top_k


def blobs(n_per=30, seed=0, d=8, centers=4, spread=0.1):
    rng = np.random.default_rng(seed)
    C = np.eye(d, dtype=np.float32)[:centers] * 3
    X = np.concatenate([C[i] + spread * rng.standard_normal((n_per, d)) for i in range(centers)]).astype(np.float32)
    y = np.repeat(np.array([f"l{i}" for i in range(centers)]), n_per)
    return X, y


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_head_separates_blobs(kind):
    X, y = blobs()
    yi = np.array([int(v[1]) for v in y])
    params = train_head(X, yi, 4, HeadSpec(kind=kind, l2=1e-4, hidden=16, max_iter=100))
    assert (head_logits(params, X).argmax(1) == yi).all()


def test_head_spec_errors_name_the_value():
    with pytest.raises(ConfigError, match="'conv'.*linear, mlp"):
        HeadSpec(kind="conv")
    with pytest.raises(ConfigError, match="l2 must be >= 0, got -1"):
        HeadSpec(l2=-1)


def test_temperature_recovers_known_scale():
    rng = np.random.default_rng(0)
    true = rng.standard_normal((4000, 5)) * 2
    y = np.array([rng.choice(5, p=p) for p in softmax(true)])
    t = fit_temperature(true * 3.0, y)  # logits three times too sharp
    assert 2.4 < t < 3.6


def test_expert_contract_and_round_trip():
    X, y = blobs()
    e = HeadExpert("e1", l2=1e-4)
    assert not hasattr(e, "labels_")
    with pytest.raises(NotFittedError):
        e.predict(X)
    assert e.fit(X, y, X_val=X, y_val=y) is e
    assert e.labels_.tolist() == ["l0", "l1", "l2", "l3"]
    p = e.predict_proba(X)
    np.testing.assert_allclose(p.sum(1), 1, rtol=1e-5)
    assert (e.predict(X) == y).all()
    assert e.card_.labels == ("l0", "l1", "l2", "l3") and e.card_.size == 8 * 4 + 4
    assert e.card_.metrics["val_accuracy"] == 1.0 and e.card_.lineage["source"] == "supervised"
    e2 = HeadExpert.from_state(*e.to_state())
    np.testing.assert_array_equal(e2.predict_proba(X), p)
    with pytest.raises(ConfigError, match="features"):
        e.predict(X[:, :3])


def test_expert_name_is_checked():
    X, y = blobs()
    with pytest.raises(ConfigError, match="invalid expert name '../evil'"):
        HeadExpert("../evil").fit(X, y)


def test_top_k_known_answer():
    p = np.array([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3]])
    idx, w = top_k(p, 2)
    assert idx.tolist() == [[1, 2], [0, 2]]
    np.testing.assert_allclose(w, [[2 / 3, 1 / 3], [0.625, 0.375]])


@pytest.mark.parametrize("cls", [LinearRouter, CentroidRouter, KNNRouter])
def test_routers_route_blobs_to_their_expert(cls):
    X, y = blobs()
    l2e = {"l0": "A", "l1": "A", "l2": "B", "l3": "B"}
    r = cls().fit(X, y, l2e, X_val=X, y_val=y)
    assert r.experts_.tolist() == ["A", "B"]
    expected = np.array([l2e[v] for v in y])
    assert (r.predict(X) == expected).all()
    pr = r.predict_proba(X)
    np.testing.assert_allclose(pr.sum(1), 1, rtol=1e-5)
    r2 = cls.from_state(*r.to_state())
    np.testing.assert_allclose(r2.predict_proba(X), pr, rtol=1e-6)


def test_marginalisation_sums_label_probabilities_per_expert():
    X, y = blobs(centers=4)
    # labels interleaved across experts (l0, l2 -> B; l1, l3 -> A): columns must be regrouped, not just reshaped
    r = LinearRouter().fit(X, y, {"l0": "B", "l1": "A", "l2": "B", "l3": "A"})
    pl = r.label_proba(X)
    np.testing.assert_allclose(r.predict_proba(X), np.stack([pl[:, 1] + pl[:, 3], pl[:, 0] + pl[:, 2]], 1), rtol=1e-6)
    one = CentroidRouter().fit(X, y, {v: v for v in y})  # one label per expert: the label probabilities as they are
    np.testing.assert_array_equal(one.predict_proba(X), one.label_proba(X))


def test_centroid_router_refit_forgets_its_old_centroids():
    X, y = blobs(centers=4)
    r = CentroidRouter().fit(X[y != "l3"], y[y != "l3"], {"l0": "A", "l1": "A", "l2": "B"})
    assert r.predict_proba(X).shape == (len(X), 2)
    r.fit(X, y, {"l0": "A", "l1": "A", "l2": "B", "l3": "C"})
    assert r.predict(X[y == "l3"]).tolist() == ["C"] * 30


def test_linear_router_warm_start_keeps_known_weights_and_learns_the_new_label():
    X, y = blobs(centers=4)
    l2e = {"l0": "A", "l1": "A", "l2": "B"}
    three = y != "l3"
    warm = LinearRouter(warm_start=True, warm_max_iter=5).fit(X[three], y[three], l2e)
    w_before = warm.params_["W"].copy()
    warm.fit(X, y, {**l2e, "l3": "C"})
    cold = LinearRouter(max_iter=5).fit(X, y, {**l2e, "l3": "C"})
    assert (warm.predict(X) == np.array([{**l2e, "l3": "C"}[v] for v in y])).all()
    # the warm fit started from the old weights: after 5 steps the known labels are still close to them,
    # while a cold fit of 5 steps from zero is not
    assert np.abs(warm.params_["W"][:, :3] - w_before).max() < np.abs(cold.params_["W"][:, :3] - w_before).max()
    assert not hasattr(warm, "_previous")
    with pytest.raises(ConfigError, match="linear heads only"):
        train_head(X, np.zeros(len(X), int), 1, HeadSpec(kind="mlp"), init={"W": np.zeros((8, 1)), "b": np.zeros(1)})
    with pytest.raises(ConfigError, match=r"init must hold W \(8, 4\)"):
        train_head(X, np.zeros(len(X), int), 4, HeadSpec(), init={"W": np.zeros((8, 3)), "b": np.zeros(3)})


def test_router_needs_every_label_mapped():
    X, y = blobs()
    with pytest.raises(ConfigError, match="have no expert"):
        LinearRouter().fit(X, y, {"l0": "A"})


def test_auroc_known_answers():
    t = np.array([1, 1, 0, 0], bool)
    assert auroc([0.9, 0.8, 0.1, 0.2], t) == 1.0
    assert auroc([0.1, 0.2, 0.9, 0.8], t) == 0.0
    assert auroc([0.5, 0.5, 0.5, 0.5], t) == 0.5
    assert auroc([0.9, 0.1, 0.5, 0.05], t) == 0.75


def test_macro_f1_known_answer():
    # class a: tp=1 fp=1 fn=1 -> 0.5 ; class b: tp=1 fp=1 fn=1 -> 0.5
    assert macro_f1(["a", "a", "b", "b"], ["a", "b", "a", "b"]) == 0.5
    assert macro_f1(["a", "b"], ["a", "b"]) == 1.0


def test_oos_detector_separates_and_round_trips():
    rng = np.random.default_rng(0)
    F = np.concatenate([rng.normal(0, 1, (200, 3)), rng.normal(3, 1, (50, 3))]).astype(np.float32)
    t = np.r_[np.zeros(200, bool), np.ones(50, bool)]
    d = OOSDetector().fit(F, t)
    assert auroc(d.predict_proba(F), t) > 0.98
    d2 = OOSDetector.from_state(*d.to_state())
    np.testing.assert_allclose(d2.predict_proba(F), d.predict_proba(F))
    with pytest.raises(ConfigError, match="both"):
        OOSDetector().fit(F, np.zeros(len(F), bool))
