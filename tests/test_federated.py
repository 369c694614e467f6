"""Experts from anywhere: install a package into an assembly, and assemble from packages alone (federated).

Known answers on a toy text set whose labels have their own words (a hashing encoder separates them).
"""

from __future__ import annotations

import numpy as np
import pytest

import manyfold
from manyfold import ConfigError, HeadExpert
from manyfold.encoders import get_encoder
from manyfold.packages import pack_expert, read_package
from test_policy import ENC, toy_dataset


def _pack(ds, domain: str, path, enc=None):
    """The owner of ``domain``: trains its expert on its own share of train and packs it (no data leaves)."""
    enc = enc or get_encoder(ENC)
    tr, va = ds.split("train"), ds.split("val")
    labs = ds.labels_of(domain)
    m, mv = np.isin(tr.labels, labs), np.isin(va.labels, labs)
    X = enc.encode([tr.items[i] for i in np.nonzero(m)[0]])
    e = HeadExpert(domain, domain=domain).fit(X, tr.labels[m], X_val=enc.encode([va.items[i] for i in np.nonzero(mv)[0]]),
                                              y_val=va.labels[mv])
    return pack_expert(e, encoder_id=enc.id, encoder_spec=enc.spec, encoder_dim=enc.dim, modality="text", X=X,
                       y=tr.labels[m], out_path=path / f"{domain}.mfx")


def test_federated_assembly_matches_the_central_one(tmp_path):
    ds = toy_dataset(per=15)
    central = manyfold.assemble(ds, encoder=ENC, generalist=None, cache=False)
    pkgs = [read_package(_pack(ds, d, tmp_path)) for d in ds.domains]
    va, te = ds.split("val"), ds.split("test")
    fed = manyfold._build.assemble_from_packages(pkgs, list(va.items), va.labels, cache=False)
    assert fed.provenance_["grouping"]["method"] == "expert packages"
    a, b = central.evaluate(list(te.items), te.labels), fed.evaluate(list(te.items), te.labels)
    assert b["in_scope_accuracy_closed"] >= a["in_scope_accuracy_closed"] - 0.02
    assert b["oos_auroc"] >= a["oos_auroc"] - 0.02
    # the router learnt from at most 10 prototypes per label and nothing per item
    assert all(s.n_prototypes <= 10 * len(s.labels) for s in fed.summaries_.values())


def test_install_refits_only_the_router_and_is_saved(tmp_path):
    ds = toy_dataset(per=15)
    two = manyfold.assemble(ds, encoder=ENC, generalist=None, cache=False, domains=["alpha", "beta"])
    reg = manyfold.Registry(tmp_path / "reg")
    reg.save(two, "a")
    before = {e["name"]: e["ref"] for e in reg.manifest("a")["experts"]}
    files = {ref: (reg.root / "objects" / ref / "arrays.safetensors").read_bytes() for ref in before.values()}
    pkg = read_package(_pack(ds, "gamma", tmp_path))
    tr, va = ds.split("train"), ds.split("val")
    two.install(pkg, list(va.items), va.labels, train_items=list(tr.items), train_labels=tr.labels)
    assert sorted(two.expert_names) == ["alpha", "beta", "gamma"]
    assert set(two.summaries_) == {"alpha", "beta", "gamma"}
    reg.save(two, "a")
    after = {e["name"]: e["ref"] for e in reg.manifest("a")["experts"]}
    assert {k: after[k] for k in before} == before  # the other experts' objects are the very same files
    for ref, data in files.items():
        assert (reg.root / "objects" / ref / "arrays.safetensors").read_bytes() == data
    back = reg.load("a")
    te = ds.split("test")
    assert [p.label for p in back.predict(list(te.items))] == [p.label for p in two.predict(list(te.items))]
    assert back.evaluate(list(te.items), te.labels)["in_scope_accuracy_closed"] > 0.9
    # the same package twice: refused, assembly unchanged
    with pytest.raises(ConfigError, match="gamma"):
        two.install(pkg, list(va.items), va.labels)
    assert len(two.experts) == 3
    # every refit now works from summaries: removing an expert needs no training data
    two.remove_expert("alpha", [], np.zeros(0, str), list(va.items), va.labels)
    assert sorted(two.expert_names) == ["beta", "gamma"] and set(two.summaries_) == {"beta", "gamma"}


def test_a_package_for_another_encoder_is_refused(tmp_path):
    ds = toy_dataset()
    asm = manyfold.assemble(ds, encoder=ENC, generalist=None, cache=False, domains=["alpha", "beta"])
    pkg = read_package(_pack(ds, "gamma", tmp_path, enc=get_encoder("hashing:dim=128")))
    va = ds.split("val")
    before = dict(asm.summaries_)
    with pytest.raises(ConfigError, match="trained against encoder"):
        asm.install(pkg, list(va.items), va.labels)
    assert len(asm.experts) == 2 and asm.summaries_ == before
