"""Tests of the automatic grouping of labels into experts (manyfold._grouping)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from manyfold._exceptions import ConfigError
from manyfold._grouping import LabelGrouping, _silhouette, group_labels

# three well separated topics; label names are interleaved so that group order follows the smallest label
TOPICS = {
    "fruit": ["apple", "kiwi", "pear", "plum"],
    "vehicle": ["bus", "car", "train", "tram"],
    "weather": ["fog", "rain", "snow", "wind"],
}


def topic_data(seed: int = 0, d: int = 16, per_label: int = 6, noise: float = 0.15):
    """Items of 12 labels: each label a jittered copy of its topic's axis; returns X, y."""
    rng = np.random.default_rng(seed)
    X, y = [], []
    for t, labels in enumerate(TOPICS.values()):
        axis = np.zeros(d)
        axis[t] = 1.0
        for lab in labels:
            centre = axis + noise * rng.normal(size=d)
            X.append(centre + noise * rng.normal(size=(per_label, d)))
            y += [lab] * per_label
    return np.concatenate(X).astype(np.float32), np.array(y)


EXPECTED = {"group-01": TOPICS["fruit"], "group-02": TOPICS["vehicle"], "group-03": TOPICS["weather"]}


def test_auto_picks_three_and_recovers_the_topics():
    X, y = topic_data()
    g = group_labels(X, y)
    assert (g.n_experts, g.chosen, g.method) == (3, "auto", "spherical-kmeans on label centroids")
    assert g.groups == EXPECTED  # apple < bus < fog: fruit is group-01, vehicle group-02, weather group-03
    assert sorted(g.scores) == [2, 3, 4, 5, 6]  # k = 2 .. 12 // 2
    assert max(g.scores, key=g.scores.get) == 3 and g.scores[3] > 0.6
    assert set(g.label_to_expert) == {lab for labs in TOPICS.values() for lab in labs}


def test_max_experts_bounds_the_ks_tried():
    X, y = topic_data()
    g = group_labels(X, y, max_experts=2)
    assert sorted(g.scores) == [2] and g.n_experts == 2
    g1 = group_labels(X, y, max_experts=1)
    assert g1.n_experts == 1 and g1.scores == {} and set(g1.label_to_expert.values()) == {"group-01"}


def test_given_number_of_experts():
    X, y = topic_data()
    g = group_labels(X, y, n_experts=3, name_prefix="topic")
    assert g.chosen == "given" and g.scores == {} and g.n_experts == 3
    assert g.groups == {k.replace("group", "topic"): v for k, v in EXPECTED.items()}
    one = group_labels(X, y, n_experts=1)
    assert one.groups == {"group-01": sorted(set(y.tolist()))}
    every = group_labels(X, y, n_experts=12)
    assert list(every.groups.values()) == [[lab] for lab in sorted(set(y.tolist()))]
    assert every.label_to_expert["apple"] == "group-01" and every.label_to_expert["wind"] == "group-12"


def test_deterministic_and_independent_of_row_order():
    X, y = topic_data()
    a = group_labels(X, y, n_experts=5, seed=3)
    b = group_labels(X, y, n_experts=5, seed=3)
    assert a == b
    perm = np.random.default_rng(1).permutation(len(y))
    assert group_labels(X[perm], y[perm]) == group_labels(X, y)
    assert a.n_experts == len(a.groups) == 5 and all(a.groups.values())


def test_two_or_three_labels_make_one_expert():
    X, y = topic_data()
    for labels in (["apple", "bus"], ["apple", "bus", "fog"]):
        keep = np.isin(y, labels)
        g = group_labels(X[keep], y[keep])
        assert g.n_experts == 1 and g.chosen == "auto" and g.scores == {}
        assert g.groups == {"group-01": sorted(labels)}
    keep = np.isin(y, ["apple"])
    assert group_labels(X[keep], y[keep]).groups == {"group-01": ["apple"]}


def test_four_labels_in_two_topics():
    X, y = topic_data()
    keep = np.isin(y, ["apple", "kiwi", "rain", "snow"])
    g = group_labels(X[keep], y[keep])
    assert g.n_experts == 2 and sorted(g.scores) == [2]
    assert g.groups == {"group-01": ["apple", "kiwi"], "group-02": ["rain", "snow"]}


def test_identical_labels_still_fill_every_group():
    rng = np.random.default_rng(0)
    X = np.tile(rng.normal(size=(1, 8)), (8, 1)).astype(np.float32)  # four labels, all on the same point
    y = np.repeat(["a", "b", "c", "d"], 2)
    g = group_labels(X, y, n_experts=3)
    assert g.n_experts == 3 and len(g.groups) == 3 and all(g.groups.values())
    z = group_labels(np.zeros((8, 4), np.float32), y)  # zero vectors: no direction at all, still a grouping
    assert sum(map(len, z.groups.values())) == 4


def test_silhouette_known_answers():
    C = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    assert _silhouette(C, np.array([0, 0, 1, 1])) == pytest.approx(1.0)
    # p0=(1,0), p1=(0,1) together, p2=(-1,0) alone: distances 1 - cos: d01=1, d02=2, d12=1
    # s0 = (2 - 1) / 2 = 0.5, s1 = (1 - 1) / 1 = 0, s2 = 0 (alone): mean 1/6
    C = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    assert _silhouette(C, np.array([0, 0, 1])) == pytest.approx(1 / 6)


def test_to_dict_is_json_and_round_trips():
    X, y = topic_data()
    g = group_labels(X, y)
    d = json.loads(json.dumps(g.to_dict()))
    assert d["n_experts"] == 3 and d["chosen"] == "auto" and set(d["scores"]) == {"2", "3", "4", "5", "6"}
    assert d["label_to_expert"]["kiwi"] == "group-01"
    assert LabelGrouping.from_dict(d) == g


@pytest.mark.parametrize("kwargs, message", [
    ({"n_experts": 0}, r"n_experts must be an integer from 1 to the number of labels \(12\), got 0"),
    ({"n_experts": 13}, r"\(12\), got 13"),
    ({"n_experts": 2.5}, "got 2.5"),
    ({"n_experts": True}, "got True"),
    ({"max_experts": 0}, "max_experts must be an integer >= 1, got 0"),
    ({"seed": -1}, "seed must be an integer >= 0, got -1"),
    ({"name_prefix": "bad/name"}, "invalid expert name 'bad/name-01'"),
    ({"name_prefix": 3}, "name_prefix must be a str"),
])
def test_bad_parameters_are_named(kwargs, message):
    X, y = topic_data()
    with pytest.raises(ConfigError, match=message):
        group_labels(X, y, **kwargs)


def test_bad_data_is_named():
    X, y = topic_data()
    with pytest.raises(ConfigError, match="X has 72 rows but y has shape"):
        group_labels(X, y[:-1])
    with pytest.raises(ConfigError, match="2-d array"):
        group_labels(X[0], y[:1])
    with pytest.raises(ConfigError, match="zero items"):
        group_labels(X[:0], y[:0])
    bad = X.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ConfigError, match="NaN"):
        group_labels(bad, y)
