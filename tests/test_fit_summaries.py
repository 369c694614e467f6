"""Routing summaries kept at fit time: a local assembly installs a package without any training data.

Known answers on the toy text set of test_policy (labels with their own words, a hashing encoder).
"""

from __future__ import annotations

import numpy as np
import pytest

import manyfold
from manyfold import ConfigError, HeadExpert
from manyfold._fit import keep_summaries
from manyfold._heads import fit_temperature
from manyfold.encoders import get_encoder
from manyfold.packages import read_package, summarize
from manyfold.routers import LinearRouter
from test_federated import _pack
from test_policy import ENC, toy_dataset


def _same(a, b) -> bool:
    return a.labels == b.labels and all(np.array_equal(getattr(a, k), getattr(b, k))
                                        for k in ("prototypes", "label_index", "weights", "spreads", "counts"))


def test_assemble_keeps_a_summary_per_expert_and_the_router_still_learns_from_the_items():
    ds = toy_dataset(per=15)
    asm = manyfold.assemble(ds, encoder=ENC, generalist=None, cache=False)
    assert set(asm.summaries_) == {"alpha", "beta", "gamma"}
    enc = get_encoder(ENC)
    tr, va = ds.split("train"), ds.split("val")
    ins, ins_va = tr.labels != "out_of_scope", va.labels != "out_of_scope"
    for e in asm.experts:
        mine = np.isin(tr.labels, e.labels_)
        assert _same(asm.summaries_[e.name], summarize(enc.encode([tr.items[i] for i in np.nonzero(mine)[0]]), tr.labels[mine]))
    # the router is the one the items teach (as before summaries existed), not one learnt from prototypes
    ref = LinearRouter(warm_start=True).fit(
        enc.encode([tr.items[i] for i in np.nonzero(ins)[0]]), tr.labels[ins], asm.label_to_expert_,
        X_val=enc.encode([va.items[i] for i in np.nonzero(ins_va)[0]]), y_val=va.labels[ins_va])
    np.testing.assert_array_equal(asm.router.params_["W"], ref.params_["W"])
    assert asm.router.temperature_ == ref.temperature_
    assert set(asm.fit_times_) >= {"encode", "train", "summaries", "router", "calibrate", "total"}


def test_summaries_survive_save_and_load_and_install_needs_no_training_data(tmp_path):
    ds = toy_dataset(per=15)
    two = manyfold.assemble(ds, encoder=ENC, generalist=None, cache=False, domains=["alpha", "beta"])
    reg = manyfold.Registry(tmp_path / "reg")
    reg.save(two, "a")
    assert set(reg.manifest("a")["summaries"]) == {"alpha", "beta"}
    back = reg.load("a")
    assert set(back.summaries_) == {"alpha", "beta"}
    assert all(_same(back.summaries_[k], two.summaries_[k]) for k in two.summaries_)
    files = {p: p.read_bytes() for p in (reg.root / "objects").rglob("*") if p.is_file()}
    pkg = read_package(_pack(ds, "gamma", tmp_path))
    va, te = ds.split("val"), ds.split("test")
    back.install(pkg, list(va.items), va.labels)  # no train_items
    assert sorted(back.expert_names) == ["alpha", "beta", "gamma"]
    assert back.summaries_["gamma"] is pkg.summary
    assert back.summaries_["alpha"] is not None and _same(back.summaries_["alpha"], two.summaries_["alpha"])
    assert back.fit_times_["summaries"] < 0.5 and back.fit_times_["encode"] >= 0
    assert back.evaluate(list(te.items), te.labels)["in_scope_accuracy_closed"] > 0.9
    reg.save(back, "a")
    for p, data in files.items():  # every file of version 1 (the other experts', their summaries) is untouched
        assert p.read_bytes() == data
    m1, m2 = reg.manifest("a", 1), reg.manifest("a", 2)
    assert all(e in m2["experts"] for e in m1["experts"]) and set(m2["summaries"]) == {"alpha", "beta", "gamma"}
    # the same package twice: refused, said clearly, nothing changed
    W, policy = back.router.params_["W"].copy(), back.policy_
    with pytest.raises(ConfigError, match="this package is installed already"):
        back.install(read_package(_pack(ds, "gamma", tmp_path)), list(va.items), va.labels)
    assert len(back.experts) == 3 and back.policy_ is policy and np.array_equal(back.router.params_["W"], W)


def test_install_reads_training_items_only_for_an_expert_without_a_summary(tmp_path):
    ds = toy_dataset(per=15)
    two = manyfold.assemble(ds, encoder=ENC, generalist=None, cache=False, domains=["alpha", "beta"])
    beta = two.summaries_["beta"]
    two.summaries_ = {"beta": beta}  # as if alpha had been saved by a manyfold that kept no summaries
    pkg = read_package(_pack(ds, "gamma", tmp_path))
    tr, va = ds.split("train"), ds.split("val")
    with pytest.raises(ConfigError, match="'alpha' has no routing summary and no training items"):
        two.install(pkg, list(va.items), va.labels)
    assert two.expert_names == ["alpha", "beta"] and set(two.summaries_) == {"beta"}  # unchanged
    # only alpha's rows (and the out-of-scope ones, for calibration) are read, not beta's or gamma's own
    class Spy(list):
        read: set[int] = set()

        def __getitem__(self, i):
            Spy.read.add(i)
            return list.__getitem__(self, i)

    two.install(pkg, list(va.items), va.labels, train_items=Spy(tr.items), train_labels=tr.labels)
    assert set(two.summaries_) == {"alpha", "beta", "gamma"} and two.summaries_["beta"] is beta
    wanted = np.isin(tr.labels, list(two.expert("alpha").labels_) + ["out_of_scope"])
    assert Spy.read == set(np.nonzero(wanted)[0].tolist())


def test_replace_and_add_make_new_summaries_and_keep_the_others():
    ds = toy_dataset(per=15)
    tr, va = ds.split("train"), ds.split("val")
    two = manyfold.assemble(ds, encoder=ENC, generalist=None, cache=False, domains=["alpha", "beta"])
    alpha, beta = two.summaries_["alpha"], two.summaries_["beta"]
    labs = two.expert("alpha").labels_.tolist()
    # replaced by an expert trained on fewer items: its summary is made anew, beta's is kept as it was
    keep = np.array([lab not in labs or i % 3 for i, lab in enumerate(tr.labels.tolist())], bool)
    items = [tr.items[i] for i in np.nonzero(keep)[0]]
    two.replace_expert("alpha", HeadExpert("alpha"), items, tr.labels[keep], list(va.items), va.labels)
    assert two.summaries_["beta"] is beta and two.summaries_["alpha"] is not alpha
    assert two.summaries_["alpha"].counts.sum() == np.isin(tr.labels[keep], labs).sum()
    two.add_expert(HeadExpert("gamma"), list(tr.items), tr.labels, list(va.items), va.labels,
                   labels=ds.labels_of("gamma"))
    assert two.summaries_["beta"] is beta and set(two.summaries_["gamma"].labels) == set(ds.labels_of("gamma"))
    # removing with no training data routes from the summaries that remain
    two.remove_expert("alpha", [], np.zeros(0, str), list(va.items), va.labels)
    assert set(two.summaries_) == {"beta", "gamma"}


def test_keep_summaries_skips_an_expert_with_a_label_of_too_few_distinct_items():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(14, 8)).astype(np.float32)
    y = np.array(["a"] * 6 + ["b"] * 6 + ["c"] * 2)
    one = HeadExpert("one").fit(X[:6], y[:6])
    two = HeadExpert("two").fit(X[6:], y[6:])

    class Asm:
        experts = [one, two]

    asm = Asm()
    assert set(keep_summaries(asm, X, y)) == {"one"}
    kept = asm.summaries_["one"]
    assert keep_summaries(asm, X, y)["one"] is kept  # kept, not made again
    assert keep_summaries(asm, X, y, refitted=["one"])["one"] is not kept  # trained anew: summarised anew


def test_summarize_max_items_samples_large_labels_and_keeps_the_counts():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(300, 6))
    y = np.array(["a"] * 250 + ["b"] * 50)
    s = summarize(X, y, max_items=40)
    assert s.counts.tolist() == [250, 50]
    np.testing.assert_array_equal(s.prototypes, summarize(X, y, max_items=40).prototypes)
    assert _same(summarize(X[250:], y[250:], max_items=50), summarize(X[250:], y[250:]))  # nothing to sample
    for bad in (0, 2, 2.5, True):
        with pytest.raises(ConfigError, match="max_items"):
            summarize(X, y, max_items=bad)


def test_fit_temperature_is_the_best_point_of_the_grid():
    grid = np.exp(np.linspace(np.log(0.05), np.log(20.0), 121))

    def exhaustive(L, y):
        def nll(t):
            z = L / t
            z = z - z.max(1, keepdims=True)
            return float((np.log(np.exp(z).sum(1)) - z[np.arange(len(y)), y]).mean())
        return float(min(grid, key=nll))

    rng = np.random.default_rng(0)
    for trial in range(60):
        n, c = int(rng.integers(1, 40)), int(rng.integers(2, 12))
        L = rng.normal(size=(n, c)) * float(np.exp(rng.uniform(-5, 5)))
        y = rng.integers(0, c, n)
        if trial % 2:
            L[np.arange(n), y] += 3.0
        assert fit_temperature(L, y) == exhaustive(L, y)
    assert fit_temperature(np.ones((5, 3)), np.zeros(5, int)) == grid[0]  # flat: the first of equals, as min() picks
