"""Tests of the fair flat baseline (manyfold._baselines) on tiny data with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from manyfold._baselines import FlatClassifier, flat_report, oos_threshold, split_oos
from manyfold._exceptions import ConfigError, NotFittedError

OOS = "out_of_scope"
LABELS = ["alpha", "beta", "gamma"]


def clusters(seed: int, per_label: int = 20, with_oos: bool = True, d: int = 8):
    """Three in-scope clusters on axes 0-2 and an out-of-scope cluster on axis 3, far apart."""
    rng = np.random.default_rng(seed)
    X, y = [], []
    for i, lab in enumerate(LABELS + ([OOS] if with_oos else [])):
        centre = np.zeros(d)
        centre[i] = 3.0
        X.append(centre + 0.3 * rng.normal(size=(per_label, d)))
        y += [lab] * per_label
    return np.concatenate(X).astype(np.float32), np.array(y)


@pytest.fixture(scope="module")
def fitted():
    X, y = clusters(0)
    Xv, yv = clusters(1)
    return FlatClassifier().fit(X, y, X_val=Xv, y_val=yv)


def test_trained_oos_class_separable_data_has_perfect_figures(fitted):
    assert fitted.classes_.tolist() == sorted(LABELS + [OOS]) and fitted.labels_.tolist() == LABELS
    Xt, yt = clusters(2)
    rep = fitted.report(Xt, yt)
    assert set(rep) == {"in_scope_accuracy_closed", "in_scope_accuracy", "oos_recall", "oos_auroc", "escalation_rate"}
    assert rep["in_scope_accuracy_closed"] == 1.0 and rep["oos_auroc"] == 1.0 and rep["oos_recall"] == 1.0
    assert rep["escalation_rate"] == 0.0
    assert rep["in_scope_accuracy"] >= 0.9  # only the ~2% of in-scope items above the threshold are lost
    # the score is p(out_of_scope) of the calibrated head
    full = fitted.predict_proba_all(Xt)
    np.testing.assert_allclose(fitted.oos_score(Xt), full[:, fitted.classes_.tolist().index(OOS)], rtol=1e-6)
    p_in = fitted.predict_proba_in(Xt)
    assert p_in.shape == (len(yt), 3)
    np.testing.assert_allclose(p_in.sum(1), 1.0, rtol=1e-6)
    pred = fitted.predict(Xt)
    assert (pred[yt == OOS] == OOS).all() and set(pred.tolist()) <= set(LABELS + [OOS])


def test_threshold_is_the_quantile_of_in_scope_validation_scores(fitted):
    Xv, yv = clusters(1)
    ins = yv != OOS
    s = fitted.oos_score(Xv[ins])
    assert fitted.threshold_ == pytest.approx(float(np.quantile(s, 0.98)))
    # 60 in-scope items, the 0.98 quantile lies between the 59th and 60th smallest: exactly 2 reach it
    rep = fitted.report(Xv[ins], yv[ins])
    assert rep["in_scope_accuracy"] == pytest.approx(58 / 60) and rep["in_scope_accuracy_closed"] == 1.0
    assert rep["oos_recall"] is None and rep["oos_auroc"] is None
    strict = FlatClassifier(target_false_oos_rate=0.0).fit(*clusters(0), X_val=Xv, y_val=yv)
    assert strict.threshold_ == pytest.approx(float(strict.oos_score(Xv[ins]).max()))
    assert strict.report(Xv[ins], yv[ins])["in_scope_accuracy"] == 1.0  # strictly above the highest: none


def test_without_oos_training_items_the_score_is_max_softmax():
    X, y = clusters(0, with_oos=False)
    Xv, yv = clusters(1)  # validation may hold out-of-scope items: they only serve nothing here
    flat = FlatClassifier().fit(X, y, X_val=Xv, y_val=yv)
    assert flat.classes_.tolist() == flat.labels_.tolist() == LABELS
    Xt, yt = clusters(2)
    np.testing.assert_allclose(flat.oos_score(Xt), 1.0 - flat.predict_proba_in(Xt).max(1), rtol=1e-6)
    in_only = flat.report(Xt[yt != OOS], yt[yt != OOS])
    assert in_only["oos_recall"] is None and in_only["oos_auroc"] is None
    assert in_only["in_scope_accuracy_closed"] == 1.0
    rep = flat.report(Xt, yt)
    assert rep["oos_auroc"] is not None and 0.0 <= rep["oos_auroc"] <= 1.0 and 0.0 <= rep["oos_recall"] <= 1.0


def test_report_is_nan_free_for_one_sided_data(fitted):
    Xt, yt = clusters(2)
    only_oos = fitted.report(Xt[yt == OOS], yt[yt == OOS])
    assert only_oos["in_scope_accuracy"] is None and only_oos["in_scope_accuracy_closed"] is None
    assert only_oos["oos_recall"] == 1.0 and only_oos["oos_auroc"] is None


def test_shared_rules_known_answers():
    labels, p_in, score = split_oos(np.array([[0.6, 0.3, 0.1], [0.1, 0.1, 0.8]]), ["a", OOS, "b"], OOS)
    assert labels.tolist() == ["a", "b"]
    np.testing.assert_allclose(p_in, [[6 / 7, 1 / 7], [1 / 9, 8 / 9]])
    np.testing.assert_allclose(score, [0.3, 0.1])
    labels, p_in, score = split_oos(np.array([[0.75, 0.25]]), ["a", "b"], OOS)
    np.testing.assert_allclose(score, [0.25])
    _, p_in, score = split_oos(np.array([[0.0, 0.0, 1.0]]), ["a", "b", OOS], OOS)  # in-scope part underflowed
    np.testing.assert_allclose(p_in, [[0.5, 0.5]])
    np.testing.assert_allclose(score, [1.0])
    with pytest.raises(ConfigError, match=r"proba must be \(n, 2\)"):
        split_oos(np.ones((2, 3)), ["a", "b"], OOS)
    assert oos_threshold([0.0, 1.0, 2.0, 3.0, 4.0], 0.25) == pytest.approx(3.0)
    rep = flat_report(["a", "b"], [[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.5, 0.5]], [0.1, 0.5, 0.7, 0.2],
                      ["a", "b", OOS, OOS], threshold=0.5, oos_label=OOS)
    tighter = flat_report(["a", "b"], [[0.9, 0.1], [0.2, 0.8]], [0.1, 0.5], ["a", "b"], threshold=0.4, oos_label=OOS)
    assert tighter["in_scope_accuracy"] == 0.5 and tighter["oos_recall"] is None and tighter["oos_auroc"] is None
    # item 1 sits exactly on the threshold: not called (strictly above only); item 3 (oos) scores below item 1
    assert rep == {"in_scope_accuracy_closed": 1.0, "in_scope_accuracy": 1.0, "oos_recall": 0.5,
                   "oos_auroc": 0.75, "escalation_rate": 0.0}


def test_errors_are_named():
    X, y = clusters(0)
    Xv, yv = clusters(1)
    with pytest.raises(TypeError):
        FlatClassifier().fit(X, y)  # validation data is required: it sets the threshold
    with pytest.raises(ConfigError, match="no in-scope label"):
        FlatClassifier().fit(X[y == OOS], y[y == OOS], X_val=Xv, y_val=yv)
    with pytest.raises(ConfigError, match="X has 80 rows but y has 79 labels"):
        FlatClassifier().fit(X, y[:-1], X_val=Xv, y_val=yv)
    with pytest.raises(ConfigError, match="needs in-scope validation items"):
        FlatClassifier().fit(X, y, X_val=Xv[yv == OOS], y_val=yv[yv == OOS])
    with pytest.raises(ConfigError, match="X_val has 4 features"):
        FlatClassifier().fit(X, y, X_val=Xv[:, :4], y_val=yv)
    with pytest.raises(ConfigError, match="target_false_oos_rate must be in"):
        FlatClassifier(target_false_oos_rate=1.5).fit(X, y, X_val=Xv, y_val=yv)
    with pytest.raises(ConfigError, match="unknown head kind 'tree'"):
        FlatClassifier(kind="tree").fit(X, y, X_val=Xv, y_val=yv)
    with pytest.raises(NotFittedError):
        FlatClassifier().report(X, y)
    assert FlatClassifier(l2=0.1).get_params() == {"kind": "linear", "l2": 0.1, "max_iter": 300, "seed": 0,
                                                   "oos_label": OOS, "target_false_oos_rate": 0.02}


def test_demo_flat_rows_use_the_fair_baseline(data_dir, tmp_path, monkeypatch):
    """The demo's wiring on a CLINC150 subset with model-free encoders (the full demo encodes 23k texts)."""
    import manyfold
    from manyfold import _demo

    tiny = manyfold.load_dataset("clinc150", data_dir).subset(5, seed=0)
    monkeypatch.setattr(_demo, "load_dataset", lambda name, d: tiny)
    lines = []
    res = _demo.run_demo(data_dir=str(data_dir), encoder="hashing:dim=512", generalist="hashing:dim=1024",
                         registry=manyfold.Registry(tmp_path / "reg"), log=lines.append, compare_big=True)
    # with the big generalist's row every model pass of the job ran first, under one line (train, val and test;
    # both encoders; tests/test_demo.py: without it the big model encodes the escalated test items only)
    n = len({t for s in ("train", "val", "test") for t in tiny.split(s).items})
    assert lines[-1] == f"encoding {2 * n:,} items with 2 models (hashing:dim=512: {n:,}, hashing:dim=1024: {n:,}); " \
                        "the vectors are cached for later runs"
    rows = {r["system"]: r for r in res["rows"]}
    assert list(rows) == ["flat small (MiniLM, one head)", "big generalist alone (hashing:dim=1024)",
                          "assembly (experts only)", "assembly + escalation"]
    keys = ("in_scope_accuracy_closed", "in_scope_accuracy", "oos_recall", "oos_auroc", "escalation_rate",
            "ms_per_item_after_encoding")
    for name in list(rows)[:2]:
        assert set(rows[name]) == {"system", *keys}
        assert all(isinstance(rows[name][k], float) and 0.0 <= rows[name][k] for k in keys)
    # the flat small row is exactly a FlatClassifier trained on the train split, OOS items as a class
    enc = manyfold.get_encoder("hashing:dim=512")
    tr, va, te = tiny.split("train"), tiny.split("val"), tiny.split("test")
    flat = FlatClassifier().fit(enc.encode(list(tr.items)), tr.labels, X_val=enc.encode(list(va.items)), y_val=va.labels)
    assert OOS in flat.classes_
    expected = flat.report(enc.encode(list(te.items)), te.labels)
    assert {k: rows["flat small (MiniLM, one head)"][k] for k in expected} == pytest.approx(expected)
    # the generalist alone: its own out-of-scope class, thresholded on the validation split at the same rate
    g = manyfold.Registry(tmp_path / "reg").load(res["name"]).generalist
    assert OOS in g.labels_.tolist()
    labels, p_in, score = split_oos(g.predict_proba(list(te.items)), g.labels_, OOS)
    _, _, sv = split_oos(g.predict_proba(list(va.items)), g.labels_, OOS)
    thr = oos_threshold(sv[va.labels != OOS], 0.02)
    expected = flat_report(labels, p_in, score, te.labels, thr, OOS)
    assert {k: rows["big generalist alone (hashing:dim=1024)"][k] for k in expected} == pytest.approx(expected)
