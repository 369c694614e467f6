"""Tests of the flywheel: pool reading, big -> small distillation, growth, folding, the CLI entry point.

Tiny data (CLINC150 ``subset(5)`` from ``$MANYFOLD_TEST_DATA``, default
``<repo parent>/shared/data``) and the hashing encoders, so they run in seconds.

Sizes: 1024-d hashing vectors for the encoder and the generalist (they were 2048 and 4096). The assertions
are about the flywheel's bookkeeping, not the vectors' size, and every one holds with a margin at least as
large (measured: fold agreement 0.76 and 0.96 against the bounds 0.6 and 0.8, was 0.71 and 0.93; the
teacher-only expert and its routing 1.0 against 0.9, as before), in ~60% of the time.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import numpy as np
import pytest
from _data import missing

import manyfold
from manyfold._exceptions import ConfigError, DataError
from manyfold.flywheel import (
    Flywheel,
    add_expert_from_teacher,
    add_from_teacher_main,
    distill,
    distill_main,
    expert_from_teacher,
    fold,
    fold_main,
    pseudo_label,
    read_pool,
)

SHARED = Path(os.environ.get("MANYFOLD_TEST_DATA") or Path(__file__).parents[1].parent / "shared" / "data")
ENC, GEN = "hashing:dim=1024", "hashing:dim=1024"  # see "Sizes" above


@pytest.fixture(scope="module", autouse=True)
def _home(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MANYFOLD_HOME", str(tmp_path_factory.mktemp("home")))
        yield


@pytest.fixture(scope="module")
def ds():
    if not (SHARED / "clinc150").is_dir():
        missing(f"no CLINC150 copy under {SHARED}")
    return manyfold.load_dataset("clinc150", SHARED).subset(5, seed=0)


@pytest.fixture(scope="module")
def domains(ds):
    return ds.domains[:3]


def _restrict(split, labels):
    return split.take(np.flatnonzero(np.isin(split.labels, labels)))


@pytest.fixture(scope="module")
def _fitted(ds, domains):
    return manyfold.assemble(ds, encoder=ENC, generalist=GEN, domains=domains, cache=False)


@pytest.fixture()
def asm(_fitted):
    """A fresh copy of one fitted assembly (fitting once keeps the tests fast)."""
    return copy.deepcopy(_fitted)


def _data(ds, domains):
    labels = [lab for d in domains for lab in ds.labels_of(d)] + [manyfold.OOS_LABEL]
    return _restrict(ds.split("train"), labels), _restrict(ds.split("val"), labels), labels


class _Oracle:
    """A teacher that knows the answers: probability ``conf`` on the true label (items -> label map)."""

    def __init__(self, answers: dict[str, str], labels: list[str], conf: float = 0.95) -> None:
        self.answers, self.labels_, self.conf = answers, np.array(sorted(labels)), conf

    def predict_proba(self, items):
        index = {lab: i for i, lab in enumerate(self.labels_.tolist())}
        P = np.full((len(items), len(self.labels_)), (1 - self.conf) / (len(self.labels_) - 1))
        for r, it in enumerate(items):
            P[r, index[self.answers[it]]] = self.conf
        return P


# -- read_pool -----------------------------------------------------------------------------------------------------
def test_read_pool_formats(tmp_path):
    (tmp_path / "a.txt").write_text("what is my balance\n\n  transfer money \n")
    assert read_pool(tmp_path / "a.txt") == ["what is my balance", "  transfer money "]
    (tmp_path / "b.jsonl").write_text('{"text": "hi"}\n\n{"item": "yo", "x": 1}\n{"items": ["a", "b"]}\n{"text": "hi"}\n')
    assert read_pool(tmp_path / "b.jsonl") == ["hi", "yo", "a", "b", "hi"]
    assert read_pool(tmp_path / "b.jsonl", unique=True) == ["hi", "yo", "a", "b"]
    (tmp_path / "log").write_text('{"text": "sniffed as jsonl"}\n')
    assert read_pool(tmp_path / "log") == ["sniffed as jsonl"]


@pytest.mark.parametrize("body, line, msg", [
    ('{"text": "ok"}\n{"text": \n', 2, "not valid JSON"),
    ('{"text": "ok"}\n\n{"label": "x"}\n', 3, "no 'text'"),
    ('{"text": 3}\n', 1, "must hold strings"),
    ('{"text": "  "}\n', 1, "empty string"),
    ('["text"]\n', 1, "expected a JSON object"),
    ('{"items": "a"}\n', 1, "must be a list"),
])
def test_read_pool_bad_lines_name_the_line(tmp_path, body, line, msg):
    p = tmp_path / "pool.jsonl"
    p.write_text(body)
    with pytest.raises(DataError, match=rf"pool.jsonl:{line}: .*{msg}"):
        read_pool(p)


def test_read_pool_missing_and_empty(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_pool(tmp_path / "nope.txt")
    (tmp_path / "e.txt").write_text("\n\n")
    with pytest.raises(DataError, match="no items"):
        read_pool(tmp_path / "e.txt")


# -- pseudo-labels ---------------------------------------------------------------------------------------------------
def test_pseudo_label_keeps_confident_in_scope_answers():
    t = _Oracle({"a": "x", "b": "out_of_scope", "c": "y"}, ["x", "y", "out_of_scope"], conf=0.95)
    idx, lab, conf = pseudo_label(t, ["a", "b", "c"], min_confidence=0.9)
    assert idx.tolist() == [0, 2] and lab.tolist() == ["x", "y"] and np.allclose(conf, 0.95)
    assert pseudo_label(t, ["a", "c"], min_confidence=0.96)[0].tolist() == []
    assert pseudo_label(t, ["a", "c"], allowed=["y"])[1].tolist() == ["y"]
    with pytest.raises(ConfigError):
        pseudo_label(t, ["a"], min_confidence=1.5)


# -- big -> small ----------------------------------------------------------------------------------------------------
def test_distill_adds_pseudo_labelled_data_and_lineage(ds, domains, asm):
    train, val, labels = _data(ds, domains)
    test = _restrict(ds.split("test"), labels)
    answers = dict(zip(test.items, test.labels.tolist()))
    teacher = _Oracle(answers, sorted(set(labels)))
    before = {e.name: e.card_.lineage["n_train"] for e in asm.experts}
    rep = distill(asm, test.items, train_items=train.items, train_labels=train.labels, val_items=val.items,
                  val_labels=val.labels, teacher=teacher, min_confidence=0.9, rounds=2)
    assert [r.round for r in rep.rounds] == [1, 2]
    n_in = int((test.labels != manyfold.OOS_LABEL).sum())
    assert sum(r.n_confident for r in rep.rounds) == n_in
    assert len(rep.pseudo_items) == sum(r.n_new for r in rep.rounds) > 0
    assert np.array_equal(rep.pseudo_labels, np.array([answers[i] for i in rep.pseudo_items]))
    for e in asm.experts:
        n_mine = int(np.isin(rep.pseudo_labels, e.labels_).sum())
        lin = e.card_.lineage
        assert n_mine > 0
        assert lin["n_train"] == before[e.name] + n_mine
        assert lin["n_pseudo"] == n_mine and lin["distill_round"] == 2 and lin["teacher"] == "_Oracle"
    assert manyfold.evaluate(asm, test.items, test.labels)["in_scope_accuracy"] > 0


def test_flywheel_with_generalist_teacher_and_budget(ds, domains, asm):
    train, val, labels = _data(ds, domains)
    test = _restrict(ds.split("test"), labels)
    fw = Flywheel(asm, train.items, train.labels, val.items, val.labels, min_confidence=0.0, tune_budget=True)
    rep = fw.step(test.items + train.items[:3])  # items already in the labelled data are not added again
    assert rep.n_new == len(fw.pseudo_items) <= rep.n_confident
    assert not set(fw.pseudo_items) & set(train.items)
    assert "HeadGeneralist(hashing" in rep.teacher
    assert 0.0 <= rep.escalation_budget <= manyfold.AssemblyConfig().max_escalation_rate
    assert asm.config.max_escalation_rate == rep.escalation_budget


def test_expert_from_teacher(ds, domains, asm):
    train, _, _ = _data(ds, domains)
    labels = ds.labels_of(domains[0])
    answers = dict(zip(train.items, train.labels.tolist()))
    expert, info = expert_from_teacher("fresh", asm.encoder, _Oracle(answers, sorted(set(answers.values()))),
                                       train.items, labels)
    mine = np.isin(train.labels, labels)
    assert info["n_pseudo"] == int(mine.sum()) and expert.labels_.tolist() == sorted(labels)
    assert expert.card_.lineage["source"] == "teacher_only"
    X = asm.encoder.encode([train.items[i] for i in np.flatnonzero(mine)])
    assert (expert.predict(X) == train.labels[mine]).mean() > 0.9  # it fits what it was taught


# -- growth ----------------------------------------------------------------------------------------------------------
def test_add_expert_leaves_other_experts_bit_identical(ds, domains, asm):
    new = ds.domains[3]
    train, val, _ = _data(ds, [*domains, new])
    weights = {e.name: {k: v.copy() for k, v in e.params_.items()} for e in asm.experts}
    asm.add_expert(manyfold.HeadExpert(new), train.items, train.labels, val.items, val.labels, labels=ds.labels_of(new))
    assert new in asm.expert_names
    for name, w in weights.items():
        for k, v in w.items():
            assert np.array_equal(v, asm.expert(name).params_[k])


def test_add_expert_from_teacher_learns_the_new_domain_without_its_labels(ds, domains, asm):
    new = ds.domains[3]
    labels = ds.labels_of(new)
    train, val, _ = _data(ds, [*domains, new])
    answers = dict(zip(train.items, train.labels.tolist()))
    oracle = _Oracle(answers, sorted(set(answers.values())))
    mine = np.isin(train.labels, labels)
    # the labelled items of the new domain carry a wrong label: if they were used, the expert would learn it
    poisoned = np.where(mine, labels[0], train.labels)
    weights = {e.name: {k: v.copy() for k, v in e.params_.items()} for e in asm.experts}
    gen_asm = copy.deepcopy(asm)
    gen_asm.generalist = None
    with pytest.raises(ConfigError, match="no generalist"):
        add_expert_from_teacher(gen_asm, "fresh", labels, train.items, train.items, poisoned, val.items, val.labels)
    info = add_expert_from_teacher(asm, "fresh", labels, train.items, train.items, poisoned, val.items, val.labels,
                                   teacher=oracle, domain=new)
    assert info["n_pseudo"] == int(mine.sum()) and set(info["per_label"]) == set(labels)
    assert "pseudo_items" not in info
    e = asm.expert("fresh")
    assert e.card_.lineage["source"] == "teacher_only" and e.card_.domain == new
    X = asm.encoder.encode([train.items[i] for i in np.flatnonzero(mine)])
    assert (e.predict(X) == train.labels[mine]).mean() > 0.9  # the true labels, not the poisoned one
    assert (asm.router.predict(X) == "fresh").mean() > 0.9
    for name, w in weights.items():
        for k, v in w.items():
            assert np.array_equal(v, asm.expert(name).params_[k])


def test_fold_main_and_add_from_teacher_main_save_versions(ds, domains, _fitted, tmp_path):
    new = ds.domains[3]
    train = ds.split("train")
    narrow = copy.deepcopy(_fitted)  # = assemble(ds, encoder=ENC, generalist=GEN, domains=domains, cache=False)
    asm = manyfold.assemble(ds, encoder=ENC, generalist=GEN, domains=domains, generalist_domains="all", cache=False)
    assert set(ds.labels_of(new)) <= set(asm.generalist.labels_.tolist())  # the big model knows the 4th domain
    assert not set(ds.labels_of(new)) & set(narrow.generalist.labels_.tolist())
    reg = manyfold.Registry(tmp_path / "reg")
    reg.save(asm, "demo")
    reg.save(narrow, "narrow")
    # no stand-in dataset: the commands rebuild the CLINC150 subset from the manifest's dataset reference
    pool = tmp_path / "pool.txt"
    pool.write_text("\n".join(train.items) + "\n")
    lines: list[str] = []
    with pytest.raises(ConfigError, match="does not know any of the labels.*--generalist-domains all"):
        add_from_teacher_main("narrow", "fresh", new, pool, 0.0, reg, echo=lines.append)
    lines.clear()
    with pytest.raises(ConfigError, match="unknown generalist_domains 'some'; valid choices: experts, all"):
        manyfold.assemble(ds, encoder=ENC, generalist=GEN, domains=domains, generalist_domains="some", cache=False)
    with pytest.raises(ConfigError, match="unknown domain 'nope'; valid choices: "):
        add_from_teacher_main("demo", "fresh", "nope", pool, 0.0, reg, echo=lines.append)
    assert add_from_teacher_main("demo", "fresh", new, pool, 0.0, reg, echo=lines.append) == 2
    assert "added expert 'fresh'" in lines[1] and "version 2" in lines[1]
    grown = reg.load("demo")
    assert "fresh" in grown.expert_names and grown.expert("fresh").card_.lineage["source"] == "teacher_only"
    assert reg.manifest("demo")["extra"]["domains"] == [new]
    assert fold_main("demo", None, reg, echo=lines.append) == 1
    folded = reg.load("demo-folded")
    assert folded.expert_names == ["folded"] and folded.generalist is None
    assert folded.labels_.tolist() == grown.labels_.tolist()
    assert reg.manifest("demo-folded")["extra"]["folded_from"] == {"name": "demo", "version": 2}
    assert reg.manifest("demo-folded")["dataset"] == reg.manifest("demo")["dataset"] == manyfold.data.dataset_ref(ds)
    te = ds.split("test")
    X = grown.encoder.encode(te.items)
    agree = (folded.predict_labels(X, te.items) == grown.predict_labels(X, te.items)).mean()
    assert agree > 0.6  # one head imitating the assembly, out-of-scope calls included


# -- small -> big ----------------------------------------------------------------------------------------------------
def test_fold_agrees_with_assembly(ds, domains, asm):
    train, val, labels = _data(ds, domains)
    head = fold(asm, train.items, val_items=val.items, val_labels=val.labels)
    assert head.labels_.tolist() == asm.labels_.tolist()
    assert head.card_.lineage["source"] == "distilled" and head.card_.lineage["teacher"] == "assembly"
    items = ds.split("test").items[:200] + train.items
    X = asm.encoder.encode(items)
    agree = (head.predict(X) == asm.labels_[asm.forward(X, items).final.argmax(1)]).mean()
    assert agree > 0.8


# -- CLI entry point -------------------------------------------------------------------------------------------------
def test_distill_main_saves_a_new_version(ds, domains, asm, tmp_path):
    import manyfold.flywheel._cli as cli

    reg = manyfold.Registry(tmp_path / "reg")
    assert reg.save(asm, "demo") == 1
    test = ds.split("test")
    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps({"text": t}) + "\n" for t in test.items))
    lines: list[str] = []
    assert distill_main("demo", pool, 0.0, reg, echo=lines.append) == 2
    assert distill_main("demo", pool, 0.0, str(reg.root), echo=lines.append) == 3
    assert "round 1" in lines[1] and any("round 2" in ln for ln in lines)
    m = reg.manifest("demo")
    fly = m["extra"]["flywheel"]
    assert fly["round"] == 2 and fly["from_version"] == 2
    items, labels = cli.load_pseudo(reg.root, fly)
    assert len(items) == len(labels) == fly["n_pseudo"] > 0
    loaded = reg.load("demo")
    assert all(e.card_.lineage["distill_round"] == 2 for e in loaded.experts)
