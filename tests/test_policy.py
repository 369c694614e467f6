"""The escalation policy object, its objectives, out-of-scope calibration without out-of-scope data,
the registry's component types and manifest formats, and assemble()'s contracts on users' data.

Known answers on synthetic data: a toy text set whose labels have their own words (a hashing
encoder separates them), and hand-built signal arrays for the policy.
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

import manyfold
from manyfold import AssemblyConfig, ConfigError, Dataset, Split
from manyfold._components import component_class
from manyfold._exceptions import ArtifactError
from manyfold._policy import BUDGET_GRID, EscalationPolicy, PoolSignals

ENC = "hashing:dim=256"
GEN = "hashing:dim=512"


def _texts(rng: np.random.Generator, label: int, n: int, vocab: int = 6) -> list[str]:
    words = [f"w{label}x{j}" for j in range(vocab)] + ["please", "now", "the", "my"]
    return [" ".join(rng.choice(words, size=5)) for _ in range(n)]


def toy_dataset(n_labels: int = 9, *, per: int = 12, oos: str | None = "out_of_scope", domains: bool = True,
                names: tuple[str, ...] = ("alpha", "beta", "gamma"), int_labels: bool = False) -> Dataset:
    rng = np.random.default_rng(0)
    splits = {}
    for s, n in (("train", per), ("val", per // 2), ("test", per // 2)):
        items, labels = [], []
        for k in range(n_labels):
            items += _texts(rng, k, n)
            labels += [k if int_labels else f"intent{k}"] * n
        if oos is not None:
            items += [" ".join(rng.choice([f"z{j}" for j in range(40)], size=5)) for _ in range(n)]
            labels += [oos] * n
        splits[s] = Split(items, np.array([str(v) for v in labels]))
    l2d = {(str(k) if int_labels else f"intent{k}"): names[k % len(names)] for k in range(n_labels)} if domains else {}
    return Dataset("toy", splits, l2d, oos)


# the experts-only toy assemblies several tests read (fitted once a module, a fresh copy per test)
@pytest.fixture(scope="module")
def _no_oos_fitted():
    return manyfold.assemble(toy_dataset(oos=None), encoder=ENC, generalist=None, cache=False)


@pytest.fixture(scope="module")
def _with_examples_fitted():
    return manyfold.assemble(toy_dataset(), encoder=ENC, generalist=None, cache=False)


@pytest.fixture()
def asm_no_oos(_no_oos_fitted):
    """assemble(toy_dataset(oos=None), encoder=ENC, generalist=None): no out-of-scope examples."""
    return copy.deepcopy(_no_oos_fitted)


@pytest.fixture()
def asm_with_examples(_with_examples_fitted):
    """assemble(toy_dataset(), encoder=ENC, generalist=None): out-of-scope examples in every split."""
    return copy.deepcopy(_with_examples_fitted)


# -- the policy on hand-built signals ---------------------------------------------------------------

def _pool(n: int = 400, wrong_share: float = 0.3, seed: int = 0) -> PoolSignals:
    """In-scope items only; the experts are wrong (and unsure) on ``wrong_share`` of them, the generalist always right."""
    rng = np.random.default_rng(seed)
    L = 4
    y = rng.integers(0, L, n)
    wrong = rng.random(n) < wrong_share
    proba = np.full((n, L), 0.02, np.float32)
    proba[np.arange(n), y] = 0.94
    other = (y + 1) % L
    proba[wrong] = 0.2
    proba[wrong, other[wrong]] = 0.4  # wrong and unsure
    proba /= proba.sum(1, keepdims=True)
    pg = np.full((n, L), 0.01, np.float32)
    pg[np.arange(n), y] = 0.97
    X = rng.normal(size=(n, 8)).astype(np.float32)
    fg = rng.normal(size=(n, 5)).astype(np.float32)
    is_oos = np.zeros(n, bool)
    is_oos[:40] = True  # a few out-of-scope items (label index -1)
    y = np.where(is_oos, -1, y)
    return PoolSignals(proba=proba, X=X, router_proba=proba[:, :2] / proba[:, :2].sum(1, keepdims=True), y_index=y,
                       is_oos=is_oos, pg_in=pg, fg=fg)


def _centroids() -> np.ndarray:
    c = np.random.default_rng(1).normal(size=(4, 8)).astype(np.float32)
    return c / np.linalg.norm(c, axis=1, keepdims=True)


def test_budget_objective_spends_exactly_its_budget():
    pol = EscalationPolicy(objective="budget", max_escalation_rate=0.13).fit(_centroids(), _pool())
    assert pol.report_["escalation_budget"] == pytest.approx(0.13)
    assert pol.report_["val_escalation_rate"] <= 0.13 + 0.01  # ties at the threshold may add a few items
    # the experts are wrong on ~30%: more budget would help, so the cap binds
    assert pol.report_["budget_binds"] is True


def test_knee_escalates_as_much_as_the_weak_experts_need():
    pol = EscalationPolicy().fit(_centroids(), _pool(wrong_share=0.3))
    rep = pol.report_
    assert rep["objective"] == "knee"
    # all the wrong items are unsure: the knee sends (nearly) all of them, far beyond the old fixed 13%
    assert rep["val_escalation_rate"] > 0.25
    best = max(rep["curve"]["accuracy"])
    assert rep["val_in_scope_accuracy"] >= best - 0.005 - 1e-9
    assert rep["budget_binds"] is False
    # strong experts: the knee escalates little
    few = EscalationPolicy().fit(_centroids(), _pool(wrong_share=0.02)).report_
    assert few["val_escalation_rate"] < 0.1


def test_accuracy_objective_reaches_the_target_at_least_cost():
    pool = _pool()
    knee = EscalationPolicy().fit(_centroids(), pool).report_
    target = knee["curve"]["accuracy"][BUDGET_GRID.index(0.1)]
    rep = EscalationPolicy(objective="accuracy", target_accuracy=target).fit(_centroids(), pool).report_
    assert rep["target_accuracy_reached"] is True
    assert rep["val_in_scope_accuracy"] >= target - 1e-12
    assert rep["escalation_budget"] <= 0.1 + 1e-9
    unreachable = EscalationPolicy(objective="accuracy", target_accuracy=1.0).fit(_centroids(), pool).report_
    assert unreachable["target_accuracy_reached"] is False


def test_a_cap_below_the_knee_binds_and_says_so():
    rep = EscalationPolicy(max_escalation_rate=0.1).fit(_centroids(), _pool()).report_
    assert rep["escalation_budget"] <= 0.1 + 1e-9
    assert rep["budget_binds"] is True
    assert rep["escalation_budget_unbounded"] > 0.1


@pytest.mark.parametrize("kw, match", [
    ({"objective": "cheap"}, "valid choices: knee, accuracy, budget"),
    ({"objective": "accuracy"}, "needs target_accuracy"),
    ({"oos_calibration": "magic"}, "valid choices: auto, examples, held_out_labels"),
    ({"signal_scaling": "zscore"}, "unknown signal_scaling 'zscore'; valid choices: auto, none, known_rank"),
])
def test_bad_policy_parameters_are_named(kw, match):
    with pytest.raises(ConfigError, match=match):
        EscalationPolicy(**kw).fit(_centroids(), _pool())


def test_examples_calibration_needs_examples():
    pool = _pool()
    no_oos = PoolSignals(**{**pool.__dict__, "is_oos": np.zeros(len(pool.is_oos), bool),
                            "y_index": np.where(pool.y_index < 0, 0, pool.y_index)})
    with pytest.raises(ConfigError, match="needs out-of-scope items"):
        EscalationPolicy(oos_calibration="examples").fit(_centroids(), no_oos)
    with pytest.raises(ConfigError, match="simulated unknowns"):
        EscalationPolicy().fit(_centroids(), no_oos)


def test_config_errors_name_the_value():
    with pytest.raises(ConfigError, match="escalation_objective 'soon'"):
        AssemblyConfig(escalation_objective="soon")
    with pytest.raises(ConfigError, match="needs target_accuracy"):
        AssemblyConfig(escalation_objective="accuracy")


def test_policy_state_round_trip_and_with_thresholds():
    pol = EscalationPolicy().fit(_centroids(), _pool())
    cfg, arrays = pol.to_state()
    json.dumps(cfg)  # JSON-able
    back = component_class(cfg["type"]).from_state(cfg, arrays)
    pool = _pool(seed=3)
    a = pol.decide(pool.proba, pool.X, pool.router_proba, escalate=True)
    b = back.decide(pool.proba, pool.X, pool.router_proba, escalate=True)
    assert np.array_equal(a["escalated"], b["escalated"]) and np.allclose(a["oos_score"], b["oos_score"])
    every = pol.with_thresholds(confidence_threshold=2.0)
    assert every.decide(pool.proba, pool.X, pool.router_proba, escalate=True)["escalated"].all()
    assert not np.array_equal(pol.thresholds_["confidence_threshold"], 2.0)  # the original is untouched
    with pytest.raises(ConfigError, match="unknown thresholds"):
        pol.with_thresholds(speed=1.0)


def test_unknown_component_type_is_named():
    with pytest.raises(ArtifactError, match="unknown component type 'Pickled'.*known types: .*EscalationPolicy"):
        component_class("Pickled")


# -- assemble() on users' data -----------------------------------------------------------------------

def test_no_out_of_scope_items_still_calibrates_and_abstains():
    ds = toy_dataset(oos=None)
    asm = manyfold.assemble(ds, encoder=ENC, generalist=GEN, cache=False)
    cal = asm.calibration_
    assert cal["oos_method"] == "held_out_labels" and cal["held_out_folds"] == 5
    assert cal["val_oos_recall"] is None and 0.0 <= cal["val_unknown_recall_simulated"] <= 1.0
    assert asm.policy_.detector2_ is not None  # the generalist was simulated too
    protos = asm.policy_.prototypes_  # the nearest-prototype signal: unit rows, at least one per label
    assert protos is not None and protos.shape[1] == 256 and len(protos) >= len(asm.labels_)
    np.testing.assert_allclose(np.linalg.norm(protos, axis=1), 1.0, atol=1e-5)
    assert asm.policy_.detector1_.n_features_in_ == 6
    rng = np.random.default_rng(5)
    unknown = [" ".join(rng.choice([f"q{j}" for j in range(30)], size=5)) for _ in range(40)]
    te = ds.split("test")
    known = asm.predict(list(te.items))
    strange = asm.predict(unknown)
    auroc = manyfold._metrics.auroc([p.oos_score for p in known + strange], [False] * len(known) + [True] * len(strange))
    assert auroc > 0.9
    assert np.mean([p.label == "out_of_scope" for p in strange]) > 0.5
    rep = asm.evaluate(list(te.items), te.labels)
    assert rep["oos_auroc"] is None and "no out-of-scope items" in rep["not_measured"]["oos_auroc"]
    assert rep["in_scope_accuracy_closed"] > 0.9


def test_nearest_prototype_cosine_known_answer():
    from manyfold._heldout import label_prototypes
    from manyfold._policy import nearest_prototype_cosine

    P = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    X = np.array([[2.0, 0.0], [1.0, 1.0], [-1.0, 0.0]], np.float32)
    np.testing.assert_allclose(nearest_prototype_cosine(X, P), [1.0, np.sqrt(0.5), 0.0], atol=1e-6)
    # two tight clusters for label a, one for b; a label with 2 items gets one prototype, its mean's direction
    X = np.array([[1, 0, 0], [1, .01, 0], [1, 0, .01], [0, 1, 0], [.01, 1, 0], [0, 1, .01],
                  [0, 0, 1], [.01, 0, 1], [0, .01, 1], [1, 1, 1], [1, 1, 0.9]], np.float32)
    y = np.array(["a"] * 6 + ["b"] * 3 + ["c"] * 2)
    protos, idx = label_prototypes(X, y, ["a", "b", "c"], per_label=10)
    assert idx.tolist() == [0, 0, 1, 2]
    assert sorted(np.round(protos[:2].argmax(1)).tolist()) == [0, 1]
    np.testing.assert_allclose(np.linalg.norm(protos, axis=1), 1.0, atol=1e-6)


def test_rank_signals_known_answers():
    from manyfold._policy import known_quantiles, rank_signals

    # known items 0, 1, ..., 100 in column 0; a constant in column 1 (every known item ties)
    known = np.stack([np.arange(101.0), np.full(101, 3.0)], 1)
    q = known_quantiles(known, levels=101)
    np.testing.assert_allclose(q[:, 0], np.arange(101.0))
    z = rank_signals(np.array([[50.0, 3.0], [-7.0, 2.0], [1e6, 4.0], [50.5, 3.0]]), q)
    u = 1 / (1 + np.exp(-z.astype(np.float64)))
    np.testing.assert_allclose(u[0], [0.5, 0.5], atol=1e-6)  # the median; a value every known item shares: mid-rank
    np.testing.assert_allclose(u[1], [0.5 / 101, 0.5 / 101], atol=1e-6)  # below every known item: the grid's end
    np.testing.assert_allclose(u[2], [100.5 / 101, 100.5 / 101], atol=1e-6)
    assert u[3, 0] == pytest.approx(51.0 / 101, abs=1e-6)  # between two grid points: linear
    # the same grid drawn from 11 known items: tails no longer than 11 items support (the k-th of 11: (k + 0.5) / 11)
    z = rank_signals(np.array([[-7.0, 3.0], [50.0, 2.0]]), q, n_known=11)
    u = 1 / (1 + np.exp(-z.astype(np.float64)))
    np.testing.assert_allclose(u[:, 0], [0.5 / 11, 0.5], atol=1e-6)
    np.testing.assert_allclose(u[:, 1], [0.5, 0.5 / 11], atol=1e-6)
    with pytest.raises(ConfigError, match=r"signals of shape \(1, 3\) do not match rank quantiles of shape \(101, 2\)"):
        rank_signals(np.zeros((1, 3)), q)
    with pytest.raises(ConfigError, match="valid choices: auto, none, known_rank"):
        AssemblyConfig(oos_signal_scaling="percentile")


def _unlike_proxies(n: int = 600, seed: int = 0) -> tuple[PoolSignals, "SimulatedUnknowns", np.ndarray]:
    """Held-out-label proxies far less sure of themselves than the real experts (a linear head on pixels
    against a CNN). The proxies' known items have a max-probability of 0.4-0.7 and their unknowns 0.25-0.5,
    and to them the centroid cosine says something too (known 0.6, unknown 0.35). The real experts' known
    items are 0.99-1.0 sure and a real unknown 0.975-0.985: lower than any known item of theirs, yet far above
    anything the proxies ever showed; their centroid cosines (random vectors) say nothing. Returns the pool,
    the simulated unknowns and the real unknowns' probabilities."""
    from manyfold._policy import SimulatedUnknowns, stage1_features

    rng = np.random.default_rng(seed)
    L = 4
    cents = _centroids()

    def rows(top: np.ndarray) -> np.ndarray:
        p = np.empty((len(top), L), np.float32)
        p[:] = ((1 - top) / (L - 1))[:, None]
        p[np.arange(len(top)), rng.integers(0, L, len(top))] = top
        return p

    def f1(p: np.ndarray, cos: np.ndarray) -> np.ndarray:
        F = stage1_features(p, rng.normal(size=(len(p), 8)).astype(np.float32), cents, np.full((len(p), 2), 0.5, np.float32))
        F[:, 2], F[:, 3] = cos, cos - 0.1
        return F

    F, U, fold = [], [], []
    for f in range(3):
        F += [f1(rows(rng.uniform(0.25, 0.5, n // 2)), rng.normal(0.35, 0.15, n // 2)),
              f1(rows(rng.uniform(0.4, 0.7, n)), rng.normal(0.6, 0.15, n))]
        U += [np.ones(n // 2, bool), np.zeros(n, bool)]
        fold += [np.full(n // 2 + n, f)]
    sim = SimulatedUnknowns(F1=np.concatenate(F), is_unknown=np.concatenate(U), n_folds=3, fold=np.concatenate(fold))
    proba = rows(rng.uniform(0.99, 1.0, n))
    pool = PoolSignals(proba=proba, X=rng.normal(size=(n, 8)).astype(np.float32),
                       router_proba=np.full((n, 2), 0.5, np.float32), y_index=proba.argmax(1), is_oos=np.zeros(n, bool))
    return pool, sim, rows(rng.uniform(0.975, 0.985, 200))


def test_ranked_signals_carry_over_from_unlike_proxies_raw_ones_do_not():
    pool, sim, unknown = _unlike_proxies()
    X = np.random.default_rng(9).normal(size=(len(unknown), 8)).astype(np.float32)
    router = np.full((len(unknown), 2), 0.5, np.float32)
    ranked = EscalationPolicy().fit(_centroids(), pool, sim)  # auto: ranks with held-out labels
    assert ranked.signal_scaling_ == "known_rank" and ranked.signal_quantiles_.shape == (1001, 5)
    raw = EscalationPolicy(signal_scaling="none").fit(_centroids(), pool, sim)
    assert raw.signal_scaling_ == "none" and raw.signal_quantiles_ is None
    # raw: 0.98 against 0.995 is a sliver on the proxies' scale, lost in the noise of the other signals
    assert raw.decide(unknown, X, router, escalate=False)["is_oos"].mean() < 0.3
    # ranked: 0.98 is below every known item of the real experts, as the proxies' unknowns were below theirs
    assert ranked.decide(unknown, X, router, escalate=False)["is_oos"].mean() > 0.9
    # and the known items keep the false out-of-scope rate the thresholds were set for
    known = ranked.decide(pool.proba, pool.X, pool.router_proba, escalate=False)["is_oos"].mean()
    assert known <= ranked.target_false_oos_rate + 0.01
    # simulated unknowns without their folds cannot be ranked: said when asked for, raw signals under "auto"
    from manyfold._policy import SimulatedUnknowns

    no_folds = SimulatedUnknowns(F1=sim.F1, is_unknown=sim.is_unknown, n_folds=3)
    with pytest.raises(ConfigError, match="no fold of each row"):
        EscalationPolicy(signal_scaling="known_rank").fit(_centroids(), pool, no_folds)
    assert EscalationPolicy().fit(_centroids(), pool, no_folds).signal_scaling_ == "none"


def test_signal_quantiles_survive_the_state_and_old_states_read_raw_signals():
    pool, sim, unknown = _unlike_proxies()
    pol = EscalationPolicy().fit(_centroids(), pool, sim)
    cfg, arrays = pol.to_state()
    back = EscalationPolicy.from_state(json.loads(json.dumps(cfg)), arrays)
    np.testing.assert_array_equal(back.signal_quantiles_, pol.signal_quantiles_)
    assert back.signal_known_items_ == pol.signal_known_items_ == 600
    X = np.zeros((len(unknown), 8), np.float32)
    router = np.full((len(unknown), 2), 0.5, np.float32)
    np.testing.assert_allclose(back.decide(unknown, X, router, escalate=False)["oos_score"],
                               pol.decide(unknown, X, router, escalate=False)["oos_score"])
    # a policy saved before signal scaling existed: no quantiles, so it reads raw signals, as it was fitted
    old = EscalationPolicy(signal_scaling="none").fit(_centroids(), pool, sim)
    cfg, arrays = old.to_state()
    cfg["params"].pop("signal_scaling")
    back = EscalationPolicy.from_state(cfg, arrays)
    assert back.signal_quantiles_ is None and back.signal_scaling_ == "none"
    np.testing.assert_allclose(back.decide(unknown, X, router, escalate=False)["oos_score"],
                               old.decide(unknown, X, router, escalate=False)["oos_score"])


def test_auto_ranks_only_among_enough_known_items(asm_no_oos):
    from manyfold._policy import MIN_RANK_ITEMS

    pool, sim, _ = _unlike_proxies(n=MIN_RANK_ITEMS - 1)  # each fold's and the pool's known items: one too few
    pol = EscalationPolicy().fit(_centroids(), pool, sim)
    assert pol.signal_scaling_ == "none" and pol.signal_quantiles_ is None
    assert EscalationPolicy(signal_scaling="known_rank").fit(_centroids(), pool, sim).signal_known_items_ == MIN_RANK_ITEMS - 1
    pool, sim, _ = _unlike_proxies(n=MIN_RANK_ITEMS)
    pol = EscalationPolicy().fit(_centroids(), pool, sim)
    assert pol.signal_scaling_ == "known_rank" and pol.signal_known_items_ == MIN_RANK_ITEMS
    # a toy assembly (54 validation items): raw signals, as before ranks existed
    asm = asm_no_oos
    assert asm.policy_.oos_method_ == "held_out_labels" and asm.policy_.signal_scaling_ == "none"


def test_with_examples_the_signals_stay_raw_by_default():
    pol = EscalationPolicy().fit(_centroids(), _pool())
    assert pol.signal_scaling_ == "none" and pol.signal_quantiles_ is None
    ranked = EscalationPolicy(signal_scaling="known_rank").fit(_centroids(), _pool())
    assert ranked.signal_quantiles_ is not None and ranked.detector1_.n_features_in_ == 5


def test_prototypes_survive_the_registry_and_are_absent_with_examples(asm_no_oos, asm_with_examples, tmp_path):
    ds = toy_dataset(oos=None)
    asm = asm_no_oos  # assemble(ds, encoder=ENC, generalist=None)
    reg = manyfold.Registry(tmp_path / "reg")
    reg.save(asm, "toy")
    back = reg.load("toy")
    np.testing.assert_array_equal(back.policy_.prototypes_, asm.policy_.prototypes_)
    te = ds.split("test")
    assert [p.oos_score for p in back.predict(list(te.items))] == pytest.approx(
        [p.oos_score for p in asm.predict(list(te.items))], abs=1e-6)
    with_examples = asm_with_examples  # assemble(toy_dataset(), encoder=ENC, generalist=None)
    assert with_examples.policy_.prototypes_ is None and with_examples.policy_.detector1_.n_features_in_ == 5


def test_the_datasets_out_of_scope_label_is_honoured():
    ds = toy_dataset(oos="oos")
    asm = manyfold.assemble(ds, encoder=ENC, generalist=None, cache=False)
    assert asm.calibration_["oos_method"] == "examples"  # the "oos" rows were used, not lost
    assert "oos" not in asm.labels_.tolist()
    te = ds.split("test")
    rep = manyfold.evaluate(asm, list(te.items), te.labels, oos_label="oos")
    assert rep["n_oos"] == 6 and rep["n_unknown_as_oos"] == 0


def test_no_domains_groups_labels_and_integer_labels_work():
    ds = toy_dataset(domains=False, int_labels=True)
    assert not ds.has_domains
    asm = manyfold.assemble(ds, encoder=ENC, generalist=None, cache=False)
    grouping = asm.provenance_["grouping"]
    assert grouping["chosen"] == "auto" and grouping["n_experts"] == len(asm.experts) >= 2
    assert sorted(asm.labels_.tolist()) == sorted(str(k) for k in range(9))
    assert asm.predict([ds.split("test").items[0]])[0].label == "0"
    asm3 = manyfold.assemble(ds, encoder=ENC, generalist=None, cache=False, n_experts=3)
    assert len(asm3.experts) == 3 and asm3.provenance_["grouping"]["chosen"] == "given"


def test_unicode_and_spaced_domain_names_become_experts(tmp_path):
    ds = toy_dataset(names=("体育", "small talk", "billing"))
    asm = manyfold.assemble(ds, encoder=ENC, generalist=None, cache=False)
    assert sorted(asm.expert_names) == sorted(["体育", "small talk", "billing"])
    reg = manyfold.Registry(tmp_path)
    reg.save(asm, "uni")
    back = reg.load("uni")
    items = list(ds.split("test").items)
    assert [p.label for p in back.predict(items)] == [p.label for p in asm.predict(items)]


def test_an_expert_map_overrides_the_domains():
    ds = toy_dataset()
    m = {f"intent{k}": ("low" if k < 5 else "high") for k in range(9)}
    asm = manyfold.assemble(ds, encoder=ENC, generalist=None, cache=False, expert_map=m)
    assert sorted(asm.expert_names) == ["high", "low"]
    with pytest.raises(ConfigError, match="no expert for 1 labels: intent8"):
        manyfold.assemble(ds, encoder=ENC, generalist=None, cache=False, expert_map={k: v for k, v in m.items() if k != "intent8"})


class _Spy:
    """A hashing encoder that counts encode calls (validation must come first)."""

    def __init__(self) -> None:
        from manyfold.encoders import get_encoder

        self.inner = get_encoder(ENC)
        self.calls = 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def encode(self, items, **kw):
        self.calls += 1
        return self.inner.encode(items, **kw)


@pytest.mark.parametrize("kw, match", [
    ({"router": "magic"}, "valid choices: linear, centroid, knn"),
    ({"domains": ["nope"]}, "unknown domains"),
    ({"n_experts": 0}, "positive integer"),
    ({"n_experts": 99}, "more than the 9 labels"),
    ({"expert_kind": "huge"}, "valid choices"),
    ({"expert_map": {f"intent{k}": "a/b" for k in range(9)}}, "invalid expert name"),
])
def test_options_are_checked_before_any_encoding(kw, match):
    spy = _Spy()
    with pytest.raises(ConfigError, match=match):
        manyfold.assemble(toy_dataset(), encoder=spy, generalist=None, cache=False, **kw)
    assert spy.calls == 0


def test_bad_items_are_found_before_any_encoding():
    ds = toy_dataset()
    tr = ds.split("train")
    items = list(tr.items)
    items[3] = "   "
    bad = Dataset("toy", {**ds.splits, "train": Split(items, tr.labels)}, ds.label_to_domain, ds.oos_label)
    spy = _Spy()
    with pytest.raises(manyfold.InputError, match="the train split of 'toy': .*item 3"):
        manyfold.assemble(bad, encoder=spy, generalist=None, cache=False)
    assert spy.calls == 0


def test_evaluate_counts_unknown_labels_as_out_of_scope(asm_with_examples):
    ds = toy_dataset()
    asm = asm_with_examples  # assemble(ds, encoder=ENC, generalist=None)
    te = ds.split("test")
    y = te.labels.copy()
    y[:6] = "never_seen"
    rep = asm.evaluate(list(te.items), y)
    assert rep["n_unknown_as_oos"] == 6 and rep["unknown_labels"] == ["never_seen"]
    assert all(v is None or not (isinstance(v, float) and np.isnan(v)) for v in rep.values())
    with pytest.raises(ConfigError, match="labels the assembly does not know: never_seen"):
        asm.evaluate(list(te.items), y, unknown="error")


# -- manifests --------------------------------------------------------------------------------------

def _legacy_manifest(reg, name: str, asm) -> None:
    """Rewrite the latest manifest of ``name`` as manyfold 0.1 wrote it (format 1, policy as one dict)."""
    path = reg.root / "assemblies" / name / "v0001.json"
    m = json.loads(path.read_text())
    pol = asm.policy_
    dets = {"detector1": pol.detector1_, **({"detector2": pol.detector2_} if pol.detector2_ is not None else {})}
    legacy = ({"type": "Policy", "detectors": {k: v.to_state()[0] for k, v in dets.items()},
               "policy": {**pol.thresholds_, "fusion_weight": pol.fusion_weight_}},
              {"centroids": pol.centroids_, **{f"{k}.{a}": arr for k, v in dets.items() for a, arr in v.to_state()[1].items()}})
    m["policy"] = reg._put("policy", legacy)
    m["format"] = 1
    for k in ("dataset", "grouping", "manyfold"):
        m.pop(k)
    m["extra"] = {"dataset": "clinc150", "data_dir": "/somewhere"}
    path.write_text(json.dumps(m))


def test_format_1_assemblies_still_load(tmp_path):
    ds = toy_dataset()
    asm = manyfold.assemble(ds, encoder=ENC, generalist=GEN, cache=False)
    reg = manyfold.Registry(tmp_path)
    reg.save(asm, "old")
    _legacy_manifest(reg, "old", asm)
    back = reg.load("old")
    items = list(ds.split("test").items)
    a, b = asm.predict(items), back.predict(items)
    assert [p.label for p in a] == [p.label for p in b]
    assert np.allclose([p.oos_score for p in a], [p.oos_score for p in b])
    assert back.provenance_["dataset"] == {"kind": "builtin", "name": "clinc150", "data_dir": "/somewhere"}
    assert back.manifest_["migrated_from_format"] == 1


@pytest.mark.parametrize("fmt, match", [(99, "upgrade manyfold"), (None, "rebuild it with `manyfold assemble`")])
def test_unknown_manifest_formats_say_what_to_do(asm_with_examples, tmp_path, fmt, match):
    asm = asm_with_examples  # assemble(toy_dataset(), encoder=ENC, generalist=None)
    reg = manyfold.Registry(tmp_path)
    reg.save(asm, "x")
    path = reg.root / "assemblies" / "x" / "v0001.json"
    m = json.loads(path.read_text())
    m["format"] = fmt
    path.write_text(json.dumps(m))
    with pytest.raises(ArtifactError, match=match):
        reg.load("x")


def test_the_manifest_knows_its_data(tmp_path):
    csv = tmp_path / "mine.csv"
    ds0 = toy_dataset(oos=None)
    rows = ["text,label,domain"] + [f"{t},{lab},{ds0.label_to_domain[lab]}"
                                    for s in ("train", "val", "test") for t, lab in zip(ds0.split(s).items, ds0.split(s).labels)]
    csv.write_text("\n".join(rows) + "\n", encoding="utf-8")
    ds = manyfold.load_dataset(str(csv))
    asm = manyfold.assemble(ds, encoder=ENC, generalist=None, cache=False)
    reg = manyfold.Registry(tmp_path / "reg")
    reg.save(asm, "mine")
    m = reg.manifest("mine")
    assert m["format"] == 2 and m["dataset"]["kind"] == "files" and m["dataset"]["path"] == str(csv)
    assert m["grouping"]["method"] == "dataset domains"
    again = manyfold.data.load_dataset_ref(m["dataset"])
    assert again.split("test").labels.tolist() == ds.split("test").labels.tolist()
