"""The assembly on a real CLINC150 subset with no-model encoders: predictions, escalation, failures, input."""

from __future__ import annotations

import numpy as np
import pytest

import manyfold
from manyfold import GeneralistError, InputError, NotFittedError, OOS_LABEL


def test_predict_answers_every_field(tiny_asm, tiny_ds):
    te = tiny_ds.split("test")
    preds = tiny_asm.predict(te.items[:20])
    assert len(preds) == 20
    p = preds[0]
    assert p.label in set(tiny_asm.labels_) | {OOS_LABEL}
    assert 0 <= p.confidence <= 1 and 0 <= p.oos_score <= 1
    assert len(p.experts) == tiny_asm.config.top_k and set(p.experts) <= set(tiny_asm.expert_names)
    assert abs(sum(p.expert_weights) - 1) < 1e-4
    assert set(p.timings_ms) == {"encode", "route", "experts", "generalist", "total"}
    assert set(p.router_scores) == set(p.experts)
    assert p.to_dict()["experts"] == list(p.experts)


def test_quality_on_tiny_data_beats_chance_by_far(tiny_asm, tiny_ds):
    te = tiny_ds.split("test")
    rep = manyfold.evaluate(tiny_asm, te.items, te.labels)
    assert rep["n_in_scope"] == 150 * 5
    assert rep["in_scope_accuracy_closed"] > 0.5  # chance is 1/150
    assert rep["routing_accuracy"] > 0.7  # chance is 1/10
    assert 0.0 <= rep["escalation_rate"] <= 0.35


def test_escalation_budget_holds_on_validation(tiny_asm, tiny_ds):
    cal = tiny_asm.calibration_
    assert cal["val_escalation_rate"] <= tiny_asm.config.max_escalation_rate + 1e-9


def test_no_generalist_means_no_escalation(tiny_ds):
    asm = manyfold.assemble(tiny_ds, encoder="hashing:dim=512", generalist=None, cache=False)
    te = tiny_ds.split("test")
    assert not any(p.escalated for p in asm.predict(te.items[:30]))


def test_small_pass_then_resolve_is_forward(tiny_asm, tiny_ds):
    """The two-stage path a server uses gives exactly what forward gives, in any order of the escalated rows."""
    items = list(tiny_ds.split("test").items)
    X = tiny_asm.encoder.encode(items)
    ref = tiny_asm.forward(X, items)
    out = tiny_asm.small_pass(X)
    rows = np.nonzero(out.escalated)[0]
    assert len(rows) > 1 and np.array_equal(out.escalated, ref.escalated)
    assert np.array_equal(out.final[rows], out.proba[rows])  # not resolved yet: the experts' answer
    half = rows[::2], rows[1::2]
    for part in half[::-1]:  # resolved in two calls, the later rows first
        pg, fg = tiny_asm.generalist.signals([items[i] for i in part])
        tiny_asm.resolve_escalated(out, part, pg, fg)
    for k in ("final", "oos_score"):  # the generalist saw other batches: equal up to float rounding
        np.testing.assert_allclose(getattr(out, k), getattr(ref, k), rtol=1e-4, atol=1e-6, err_msg=k)
    for k in ("is_oos", "reason", "degraded"):
        assert np.array_equal(getattr(out, k), getattr(ref, k)), k
    sub = out.take(rows[:3])
    assert sub.final.shape == (3, ref.final.shape[1]) and sub.times is out.times


def test_failing_generalist_is_an_explicit_counted_fallback(tiny_asm, tiny_ds, monkeypatch):
    def boom(items):
        raise GeneralistError("endpoint down")

    monkeypatch.setattr(tiny_asm.generalist, "signals", boom)
    before = tiny_asm.counters["generalist_failures"]
    te = tiny_ds.split("test")
    preds = tiny_asm.predict(te.items)
    esc = [p for p in preds if p.escalated]
    assert esc, "some items must escalate on this data"
    assert all(p.degraded and p.reason.startswith("generalist_failed") for p in esc)
    assert not any(p.degraded for p in preds if not p.escalated)
    assert tiny_asm.counters["generalist_failures"] == before + 1


@pytest.mark.parametrize(
    "items, message",
    [
        ([], "empty"),
        (["ok", ""], "item 1 is empty"),
        (["ok", "   "], "item 1 is empty"),
        (["ok", 3], "item 1 is a int, not a str"),
        (["x" * 100_000], "100000 characters; the limit is 2000"),
        ("just a string", "not a single string"),
    ],
)
def test_bad_input_gets_a_clear_error(tiny_asm, items, message):
    with pytest.raises(InputError, match=message):
        tiny_asm.predict(items)


def test_unfitted_assembly_refuses_to_predict():
    asm = manyfold.Assembly(manyfold.get_encoder("hashing:dim=64"), manyfold.LinearRouter(), [])
    with pytest.raises(NotFittedError):
        asm.predict(["hello"])


def test_unknown_domain_and_router_are_named(tiny_ds):
    with pytest.raises(manyfold.ConfigError, match="unknown domains \\['nope'\\]; valid choices: auto_and_commute"):
        manyfold.assemble(tiny_ds, encoder="hashing:dim=64", generalist=None, domains=["nope"], cache=False)
    with pytest.raises(manyfold.ConfigError, match="unknown router 'magic'; valid choices: linear, centroid, knn"):
        manyfold.assemble(tiny_ds, encoder="hashing:dim=64", router="magic", cache=False)


def test_add_and_remove_expert_leave_the_others_untouched(tiny_ds, tiny_asm_nine):
    doms = tiny_ds.domains
    asm = tiny_asm_nine  # conftest: hashing:dim=256, generalist hashing:dim=512, domains doms[:9]; a fresh copy
    tr, va, te = tiny_ds.split("train"), tiny_ds.split("val"), tiny_ds.split("test")
    X = asm.encoder.encode(te.items)
    before = {e.name: e.predict_proba(X) for e in asm.experts}
    asm.add_expert(manyfold.LinearExpert(doms[9]), tr.items, tr.labels, va.items, va.labels, labels=tiny_ds.labels_of(doms[9]))
    assert doms[9] in asm.expert_names and len(asm.labels_) == 150
    for e in asm.experts:
        if e.name in before:
            np.testing.assert_array_equal(e.predict_proba(X), before[e.name])
    with pytest.raises(manyfold.ConfigError, match="already in the assembly"):
        asm.add_expert(manyfold.LinearExpert(doms[9]), tr.items, tr.labels, va.items, va.labels, labels=["x"])
    asm.remove_expert(doms[0], tr.items, tr.labels, va.items, va.labels)
    assert doms[0] not in asm.expert_names and len(asm.labels_) == 135
    with pytest.raises(manyfold.ExpertNotFoundError, match="unknown expert 'ghost'; valid choices:"):
        asm.remove_expert("ghost", tr.items, tr.labels, va.items, va.labels)
