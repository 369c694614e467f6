"""``manyfold.assemble`` on an image dataset built from arrays in memory, with the experts' own parameters.

Tiny synthetic 12x12 pictures with known answers: two sets of two labels (bars; squares), a fifth kind of
picture (a cross) kept out of training as the unknown. No generalist.
"""

from __future__ import annotations

import numpy as np
import pytest

import manyfold
from manyfold import ConfigError
from manyfold.data import OOS_LABEL, Dataset, Split

torch = pytest.importorskip("torch")

KNOWN = {"bars_h": "bars", "bars_v": "bars", "squares_big": "squares", "squares_small": "squares"}
CNN = {"channels": (4, 8), "hidden": 8, "epochs": 3, "batch_size": 32, "lr": 1e-2, "input_size": 12}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _pictures(labels: list[str], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 50, (len(labels), 12, 12)).astype(np.uint8)
    for i, lab in enumerate(labels):
        p = int(rng.integers(3, 9))
        if lab == "bars_h":
            x[i, p, :] = 255
        elif lab == "bars_v":
            x[i, :, p] = 255
        elif lab == "squares_big":
            x[i, 2:10, 2:10] = 255
        elif lab == "squares_small":
            x[i, 5:7, 5:7] = 255
        else:  # the unknown: a cross
            x[i, 6, 2:10] = x[i, 2:10, 6] = 255
    return x


def _dataset(per: int = 30) -> Dataset:
    splits = {}
    for s, (n, seed) in {"train": (per, 0), "val": (per // 2, 1), "test": (per // 2, 2)}.items():
        labels = [lab for lab in KNOWN for _ in range(n)] + (["cross"] * n if s == "test" else [])
        y = np.array([OOS_LABEL if lab == "cross" else lab for lab in labels])
        splits[s] = Split(_pictures(labels, seed), y)
    return Dataset("pictures", splits, KNOWN, OOS_LABEL, "image")


def test_expert_params_reach_every_cnn_expert_and_the_assembly_works():
    ds = _dataset()
    asm = manyfold.assemble(ds, encoder="pixels:size=12", generalist=None, cache=False,
                            expert_params={**CNN, "max_seconds": 30.0, "seed": 3})
    assert sorted(asm.expert_names) == ["bars", "squares"]
    for e in asm.experts:
        assert isinstance(e, manyfold.experts.CNNExpert)
        assert (e.epochs, e.max_seconds, e.seed, tuple(e.channels)) == (3, 30.0, 3, (4, 8))
        assert e.card_.lineage["epochs"] <= 3
    assert sorted(asm.expert("bars").labels_.tolist()) == ["bars_h", "bars_v"]  # trained on its own labels only
    te = ds.split("test")
    rep = manyfold.evaluate(asm, te.items, te.labels, escalate=False)
    assert rep["oos_method"] == "held_out_labels"  # the training data has no out-of-scope items
    assert rep["n_oos"] == 15 and rep["n_in_scope"] == 60
    assert rep["routing_accuracy"] >= 0.95
    assert rep["in_scope_accuracy_closed"] >= 0.9


def test_expert_params_for_heads():
    ds = _dataset(per=12)
    asm = manyfold.assemble(ds, encoder="pixels:size=12", generalist=None, cache=False, expert_kind="linear",
                            expert_params={"l2": 1e-3, "max_iter": 40})
    assert {(e.kind, e.l2, e.max_iter) for e in asm.experts} == {("linear", 1e-3, 40)}


class _Spy:
    """The pixel encoder, counting encode calls (the options must be refused before any)."""

    def __init__(self) -> None:
        self.inner = manyfold.get_encoder("pixels:size=12")
        self.calls = 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def encode(self, items, **kw):
        self.calls += 1
        return self.inner.encode(items, **kw)


@pytest.mark.parametrize("kind, params, match", [
    ("cnn", {"l2": 1e-3}, r"unknown expert_params \['l2'\] for cnn experts; valid choices: channels, hidden"),
    ("cnn", {"name": "x"}, r"unknown expert_params \['name'\]"),
    ("cnn", {"max_seconds": -1}, "max_seconds must be a finite number > 0"),
    ("cnn", {"augment": "rotate"}, "augment must be one of"),
    ("linear", {"max_seconds": 5}, r"unknown expert_params \['max_seconds'\] for linear experts; valid choices: l2"),
    ("linear", {"kind": "mlp"}, r"unknown expert_params \['kind'\]"),
    ("mlp", {"hidden": 0}, "hidden must be >= 1"),
    ("cnn", ["epochs", 2], "expert_params must be a dict"),
])
def test_bad_expert_params_are_refused_before_any_encoding(kind, params, match):
    spy = _Spy()
    with pytest.raises(ConfigError, match=match):
        manyfold.assemble(_dataset(per=4), encoder=spy, generalist=None, cache=False, expert_kind=kind,
                          expert_params=params)
    assert spy.calls == 0
