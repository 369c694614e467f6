"""Expert packages (issue 12): pack -> read round trip, the routing summary, every refusal, signatures, CLI helpers."""

from __future__ import annotations

import base64
import io
import json
import os
import stat
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from manyfold import ArtifactError, ConfigError, DependencyError, HeadExpert
from manyfold.encoders import get_encoder
from manyfold.packages import (
    ExpertPackage,
    RoutingSummary,
    check_collisions,
    generate_keypair,
    inspect_main,
    keygen_main,
    pack_expert,
    pack_main,
    read_package,
    summarize,
    verify_main,
)
from manyfold.packages._format import MANIFEST, SIGNATURE, WEIGHTS
from manyfold.packages._sign import fingerprint

SUBJECTS = ["my account", "the savings", "our joint account", "my checking", "the business account"]
TEMPLATES = {
    "balance": ["what is the balance of {s} {i}", "how much money is in {s} number {i}"],
    "transfer": ["move {i} dollars to {s}", "send {i} euros from {s} to my brother"],
    "card_lost": ["i lost my card near shop {i}", "my card {i} was stolen at {s}"],
}


def _texts(label: str, n: int) -> list[str]:
    t = TEMPLATES[label]
    return [t[i % 2].format(s=SUBJECTS[i % len(SUBJECTS)], i=i) for i in range(n)]


@pytest.fixture(scope="module")
def enc():
    return get_encoder("hashing:dim=64")


@pytest.fixture(scope="module")
def data(enc):
    """40 'balance' items (more than per_label * 3, so the cap binds), 12 of each other label."""
    texts, y = [], []
    for lab, n in (("balance", 40), ("transfer", 12), ("card_lost", 12)):
        texts += _texts(lab, n)
        y += [lab] * n
    return texts, enc.encode(texts), np.array(y)


@pytest.fixture(scope="module")
def expert(data):
    _, X, y = data
    return HeadExpert("banking", max_iter=100, description="bank questions", domain="banking").fit(X, y)


@pytest.fixture(scope="module")
def keys():
    return generate_keypair(), generate_keypair()


def _pack(expert, enc, data, out, **kw):
    _, X, y = data
    args = dict(encoder_id=enc.id, encoder_spec=enc.spec, encoder_dim=enc.dim, modality="text", X=X, y=y,
                out_path=out, creator="bank team", licence="Apache-2.0")
    return pack_expert(expert, **{**args, **kw})


@pytest.fixture()
def pkg_path(expert, enc, data, tmp_path):
    return _pack(expert, enc, data, tmp_path / "banking.mfx")


def _members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {i.filename: zf.read(i) for i in zf.infolist()}


def _manifest(members: dict[str, bytes]) -> bytes:
    import hashlib

    return "".join(f"{hashlib.sha256(members[m]).hexdigest()}  {m}\n"
                   for m in sorted(members) if m not in (MANIFEST, SIGNATURE)).encode()


def _write(path: Path, members: dict[str, bytes], *, fix_manifest: bool = False, deflate: tuple[str, ...] = ()) -> Path:
    if fix_manifest:
        members = {**members, MANIFEST: _manifest(members)}
    with zipfile.ZipFile(path, "w") as zf:
        for name, blob in members.items():
            info = zipfile.ZipInfo(name)
            info.compress_type = zipfile.ZIP_DEFLATED if name in deflate else zipfile.ZIP_STORED
            zf.writestr(info, blob)
    return path


def _flip_last(blob: bytes) -> bytes:
    return blob[:-1] + bytes([blob[-1] ^ 0x01])


def _snapshot(*dirs: Path) -> set[tuple[str, int, int]]:
    out = set()
    for d in dirs:
        for root, _, files in os.walk(d):
            for f in files:
                st = os.stat(os.path.join(root, f))
                out.add((os.path.join(root, f), st.st_size, st.st_mtime_ns))
    return out


def _refused(path: Path, match: str, **kw) -> str:
    """``read_package`` refuses ``path`` with one ArtifactError line matching ``match``, and writes nothing."""
    home = Path(os.environ["MANYFOLD_HOME"])
    before = _snapshot(path.parent, home)
    with pytest.raises(ArtifactError, match=match) as info:
        read_package(path, **kw)
    assert _snapshot(path.parent, home) == before
    msg = str(info.value)
    assert "\n" not in msg and str(path) in msg
    return msg


# -- round trip and the routing summary ---------------------------------------------------------------


def test_round_trip_gives_identical_predictions(pkg_path, expert, data, enc):
    _, X, _ = data
    pkg = read_package(pkg_path, expected_encoder_id=enc.id, expected_modality="text")
    assert isinstance(pkg, ExpertPackage)
    assert type(pkg.expert) is HeadExpert and pkg.expert is not expert
    np.testing.assert_array_equal(pkg.expert.predict_proba(X), expert.predict_proba(X))
    assert pkg.card == expert.card_ and pkg.labels == ("balance", "card_lost", "transfer")
    assert pkg.encoder_id == enc.id and pkg.modality == "text" and pkg.meta["encoder"] == {
        "id": enc.id, "spec": "hashing:dim=64", "dim": 64}
    assert (pkg.meta["creator"], pkg.meta["licence"], pkg.meta["format"]) == ("bank team", "Apache-2.0", 1)
    assert sorted(pkg.checksums) == ["package.json", "summary.safetensors", "weights.safetensors"]
    assert (pkg.signature, pkg.signed_by, pkg.signer) == ("none", None, None)
    assert sorted(_members(pkg_path)) == ["MANIFEST.sha256", "package.json", "summary.safetensors", "weights.safetensors"]


def test_summary_caps_prototypes_and_holds_no_item(pkg_path, data):
    texts, X, y = data
    s = read_package(pkg_path).summary
    per = dict(zip(*np.unique(np.array(s.labels)[s.label_index], return_counts=True)))
    assert per["balance"] <= 10 and per["card_lost"] <= 4 and per["transfer"] <= 4  # min(10, n // 3)
    assert np.all(np.round(s.weights * s.counts[s.label_index]) >= 3)  # every prototype averages >= 3 items
    for i in range(len(s.labels)):
        assert abs(s.weights[s.label_index == i].sum() - 1) < 1e-5
    assert dict(zip(s.labels, s.counts.tolist())) == {"balance": 40, "card_lost": 12, "transfer": 12}
    U = X / np.linalg.norm(X, axis=1, keepdims=True)
    for row in s.prototypes:
        assert not any(np.array_equal(row, x) for x in X) and not any(np.array_equal(row, u) for u in U)
    assert (s.prototypes @ U.T).max() < 0.999  # each prototype averages >= 3 distinct items
    blob = pkg_path.read_bytes() + b"".join(_members(pkg_path).values())
    assert not any(t.encode() in blob for t in texts)


def test_summarize_known_answers():
    e = np.eye(4, dtype=np.float32)
    # label a: 3 items near e0 and 5 near e1: k = 8 // 3 = 2 clusters, the two groups
    a = np.concatenate([e[0] + 0.01 * e[2] * np.arange(1, 4)[:, None], e[1] + 0.01 * e[3] * np.arange(1, 6)[:, None]])
    b = np.stack([e[2] + 0.1 * e[0], e[2] + 0.1 * e[1], e[2] + 0.1 * e[3]])
    X = np.concatenate([a, 5 * b])  # scale does not matter: vectors are unit-normalised
    y = ["a"] * 8 + ["b"] * 3
    s = summarize(X, y)
    assert s.labels == ("a", "b") and s.counts.tolist() == [8, 3] and s.dim == 4
    ia = np.nonzero(s.label_index == 0)[0]
    assert len(ia) == 2
    by_axis = {int(np.abs(s.prototypes[i]).argmax()): float(s.weights[i]) for i in ia}
    assert by_axis == pytest.approx({0: 3 / 8, 1: 5 / 8})
    (ib,) = np.nonzero(s.label_index == 1)[0]
    ub = b / np.linalg.norm(b, axis=1, keepdims=True)
    centre = ub.mean(0) / np.linalg.norm(ub.mean(0))
    np.testing.assert_allclose(s.prototypes[ib], centre, atol=1e-6)
    np.testing.assert_allclose(s.spreads[ib], (ub @ centre).mean(), atol=1e-6)
    assert s.weights[ib] == 1.0
    X2, y2, w2 = s.as_training_set()
    assert X2.shape == (3, 4) and sorted(y2.tolist()) == ["a", "a", "b"]
    assert sorted(w2.tolist()) == pytest.approx([3.0, 3.0, 5.0])
    # 5 items near e0 and 1 outlier: k = 6 // 3 = 2 would give the outlier its own prototype, so k drops to 1
    c = np.concatenate([e[0] + 0.01 * e[2] * np.arange(1, 6)[:, None], e[1:2]])
    lone = summarize(c, ["c"] * 6)
    assert lone.n_prototypes == 1 and lone.weights.tolist() == [1.0]
    one = summarize(X, y, per_label=1)
    assert one.n_prototypes == 2 and one.per_label == 1
    # deterministic for a seed
    np.testing.assert_array_equal(summarize(X, y, seed=3).prototypes, summarize(X, y, seed=3).prototypes)


def test_summarize_refuses_labels_that_would_expose_an_item():
    X = np.eye(4, dtype=np.float32)
    with pytest.raises(ConfigError, match=r"label 'b' has 1 distinct item vector"):
        summarize(np.concatenate([X[:3], X[3:]]), ["a", "a", "a", "b"])
    # three copies of one sentence are one item, not three
    with pytest.raises(ConfigError, match=r"label 'a' has 1 distinct"):
        summarize(np.stack([X[0]] * 3), ["a"] * 3)
    with pytest.raises(ConfigError, match="per_label"):
        summarize(X[:3], ["a"] * 3, per_label=0)


def test_routing_summary_arrays_round_trip_and_validation(data):
    _, X, y = data
    s = summarize(X, y, per_label=4, seed=1)
    meta, arrays = s.to_arrays()
    json.dumps(meta)
    back = RoutingSummary.from_arrays(meta, arrays)
    for k in arrays:
        np.testing.assert_array_equal(getattr(back, k), getattr(s, k))
    assert back.labels == s.labels and back.per_label == 4 and back.seed == 1
    with pytest.raises(ValueError):
        s.prototypes[0, 0] = 1.0  # read-only
    with pytest.raises(ArtifactError, match="label_index has shape"):
        RoutingSummary.from_arrays(meta, {**arrays, "label_index": arrays["label_index"][:-1]})
    with pytest.raises(ArtifactError, match="unexpected"):
        RoutingSummary.from_arrays(meta, {**arrays, "texts": np.zeros(3)})


# -- refusals (each one ArtifactError line, nothing written) ----------------------------------------------


def test_flipped_byte_in_weights_or_summary_is_refused(pkg_path, tmp_path):
    m = _members(pkg_path)
    for member in ("weights.safetensors", "summary.safetensors", "package.json"):
        bad = _write(tmp_path / f"flip-{member}.mfx", {**m, member: _flip_last(m[member])})
        _refused(bad, f"checksum mismatch in member '{member}'")
    # a flipped byte in the file itself: the zip's own CRC catches it before the manifest
    raw = bytearray(pkg_path.read_bytes())
    at = bytes(raw).index(m[WEIGHTS]) + len(m[WEIGHTS]) - 1
    raw[at] ^= 0x01
    (tmp_path / "raw.mfx").write_bytes(bytes(raw))
    _refused(tmp_path / "raw.mfx", "member 'weights.safetensors' is corrupted")


@pytest.mark.parametrize("name, match", [
    ("../../x", "unsafe path"),
    ("/abs", "unsafe path"),
    ("/etc/passwd", "unsafe path"),
    ("sub\\..\\x", "unsafe path"),
    ("C:/x", "unsafe path"),
    ("evil.pkl", "unexpected member 'evil.pkl'"),
    ("extra.json", "unexpected member 'extra.json'"),
])
def test_an_added_member_is_refused(pkg_path, tmp_path, name, match):
    m = _members(pkg_path)
    for fix in (False, True):  # also when the attacker lists it in the manifest
        bad = _write(tmp_path / f"added-{fix}.mfx", {**m, name: b"\x80\x04K\x01."}, fix_manifest=fix)
        _refused(bad, match)


def test_missing_member_and_manifest_mismatches_are_refused(pkg_path, tmp_path):
    m = _members(pkg_path)
    _refused(_write(tmp_path / "a.mfx", {k: v for k, v in m.items() if k != "summary.safetensors"}),
             "missing member 'summary.safetensors'")
    _refused(_write(tmp_path / "b.mfx", {k: v for k, v in m.items() if k != MANIFEST}), "missing member 'MANIFEST.sha256'")
    lines = m[MANIFEST].decode().splitlines(keepends=True)
    _refused(_write(tmp_path / "c.mfx", {**m, MANIFEST: "".join(lines[1:]).encode()}), "is not listed in MANIFEST")
    extra = "0" * 64 + "  ghost.bin\n"
    _refused(_write(tmp_path / "d.mfx", {**m, MANIFEST: m[MANIFEST] + extra.encode()}), "lists 'ghost.bin'")
    _refused(_write(tmp_path / "e.mfx", {**m, MANIFEST: b"garbage\n"}), "malformed or repeated line")


@pytest.mark.parametrize("fmt, match", [(99, "package format 99; this manyfold reads format 1; upgrade"),
                                        (None, "package format None"), ("1", "package format '1'")])
def test_unknown_or_missing_format_is_refused(pkg_path, tmp_path, fmt, match):
    m = _members(pkg_path)
    doc = json.loads(m["package.json"])
    if fmt is None:
        del doc["format"]
    else:
        doc["format"] = fmt
    _refused(_write(tmp_path / "f.mfx", {**m, "package.json": json.dumps(doc).encode()}, fix_manifest=True), match)


def test_not_a_zip_truncated_and_missing_files_are_refused(pkg_path, tmp_path):
    raw = pkg_path.read_bytes()
    (tmp_path / "half.mfx").write_bytes(raw[: len(raw) // 2])
    _refused(tmp_path / "half.mfx", "not a zip archive, or is truncated")
    (tmp_path / "text.mfx").write_text("hello")
    _refused(tmp_path / "text.mfx", "not a zip archive")
    _refused(tmp_path / "absent.mfx", "no such file")
    (tmp_path / "folder.mfx").mkdir()
    _refused(tmp_path / "folder.mfx", "is not a file")


def test_zip_bomb_and_too_many_members_are_refused(pkg_path, tmp_path):
    m = _members(pkg_path)
    bomb = {**m, WEIGHTS: bytes(8 * 2**20)}
    _refused(_write(tmp_path / "bomb.mfx", bomb, fix_manifest=True, deflate=(WEIGHTS,)),
             "member 'weights.safetensors' expands .* times .*zip bomb")
    many = {**m, **{f"m{i}": b"" for i in range(13)}}
    _refused(_write(tmp_path / "many.mfx", many), "has 17 members, more than the 16 allowed")


def test_weights_that_do_not_match_the_config_are_refused(pkg_path, tmp_path):
    from safetensors.numpy import load, save

    m = _members(pkg_path)
    w = load(m[WEIGHTS])
    bad = save({"W": np.zeros((64, 2), np.float32), "b": w["b"]})
    _refused(_write(tmp_path / "shape.mfx", {**m, WEIGHTS: bad}, fix_manifest=True),
             r"'W' has shape \(64, 2\), expected \(64, 3\)")
    renamed = save({"W": w["W"], "bias": w["b"]})
    _refused(_write(tmp_path / "names.mfx", {**m, WEIGHTS: renamed}, fix_manifest=True), "holds arrays")
    _refused(_write(tmp_path / "junk.mfx", {**m, WEIGHTS: b"not safetensors"}, fix_manifest=True),
             "not a valid safetensors file")


def test_unregistered_component_type_is_refused(pkg_path, tmp_path):
    m = _members(pkg_path)
    doc = json.loads(m["package.json"])
    doc["expert"]["type"] = "os.system"
    msg = _refused(_write(tmp_path / "t.mfx", {**m, "package.json": json.dumps(doc).encode()}, fix_manifest=True),
                   "unknown component type 'os.system'")
    assert "HeadExpert" in msg  # lists the valid types
    doc["expert"]["type"] = "LinearRouter"  # registered, but not an expert
    _refused(_write(tmp_path / "r.mfx", {**m, "package.json": json.dumps(doc).encode()}, fix_manifest=True),
             "LinearRouter")
    doc = json.loads(m["package.json"])
    doc["encoder"]["dim"] = 10**12  # would size the probe input
    _refused(_write(tmp_path / "d.mfx", {**m, "package.json": json.dumps(doc).encode()}, fix_manifest=True),
             r"package.json is malformed: 'encoder' must hold .* dim in \[1, 16777216\]")


def test_unsafe_expert_name_and_card_mismatch_are_refused(pkg_path, tmp_path):
    m = _members(pkg_path)
    doc = json.loads(m["package.json"])
    doc["card"]["name"] = doc["expert"]["card"]["name"] = doc["name"] = "../evil"
    _refused(_write(tmp_path / "n.mfx", {**m, "package.json": json.dumps(doc).encode()}, fix_manifest=True),
             "invalid expert card")
    doc = json.loads(m["package.json"])
    doc["card"]["labels"] = ["x", "y", "z"]
    _refused(_write(tmp_path / "c.mfx", {**m, "package.json": json.dumps(doc).encode()}, fix_manifest=True),
             "card in package.json disagrees")
    doc = json.loads(m["package.json"])
    doc["card"]["labels"] = doc["expert"]["card"]["labels"] = "abc"
    _refused(_write(tmp_path / "l.mfx", {**m, "package.json": json.dumps(doc).encode()}, fix_manifest=True),
             "labels must be a non-empty list of distinct strings")


def test_other_encoder_or_modality_is_refused(pkg_path, enc):
    other = get_encoder("hashing:dim=64,seed=1")
    assert other.id != enc.id
    msg = _refused(pkg_path, "was trained against encoder", expected_encoder_id=other.id)
    assert msg == (f"expert package {str(pkg_path)!r} was trained against encoder {enc.id!r}; "
                   f"this assembly routes with {other.id!r}")
    _refused(pkg_path, "holds an expert for text items; this assembly takes image items", expected_modality="image")


# -- signatures ------------------------------------------------------------------------------------------


def test_signature_good_tampered_untrusted_and_required(expert, enc, data, tmp_path, keys):
    (priv, pub), (other_priv, other_pub) = keys
    path = _pack(expert, enc, data, tmp_path / "signed.mfx", signing_key=priv)
    assert SIGNATURE in _members(path)
    pkg = read_package(path, trusted_keys=[other_pub, pub], require_signature=True)
    assert pkg.signature == "verified" and pkg.signed_by is not None and pkg.signed_by.startswith("ed25519:")
    assert read_package(path).signature == "unchecked" and read_package(path).signed_by is None
    # re-packed by someone without the key: fresh checksums, old signature
    m = _members(path)
    tampered = _write(tmp_path / "tampered.mfx", {**m, WEIGHTS: _flip_last(m[WEIGHTS])}, fix_manifest=True)
    assert read_package(tampered).signature == "unchecked"  # checksums alone do not notice a re-pack
    _refused(tampered, "has a bad signature", trusted_keys=[pub])
    # re-signed with the attacker's own key
    resigned = _pack(expert, enc, data, tmp_path / "resigned.mfx", signing_key=other_priv)
    _refused(resigned, "is signed by key ed25519:[0-9a-f]{16}, which is not among the trusted keys", trusted_keys=[pub])
    unsigned = _pack(expert, enc, data, tmp_path / "unsigned.mfx")
    _refused(unsigned, "is not signed, and a signature by a trusted key is required", trusted_keys=[pub],
             require_signature=True)
    assert read_package(unsigned, trusted_keys=[pub]).signature == "none"  # keys given, signature not required
    _refused(_write(tmp_path / "junk-sig.mfx", {**m, SIGNATURE: b"{}"}), "malformed SIGNATURE")
    with pytest.raises(ConfigError, match="require_signature=True needs trusted_keys"):
        read_package(path, require_signature=True)
    with pytest.raises(ConfigError, match="trusted_keys is empty"):
        read_package(path, trusted_keys=[])


def test_keys_from_files_and_keygen(expert, enc, data, tmp_path):
    lines: list[str] = []
    key, pub = keygen_main(tmp_path / "keys", lines.append)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and b"PRIVATE KEY" in key.read_bytes()
    assert b"PUBLIC KEY" in pub.read_bytes() and "keep it secret" in lines[0]
    with pytest.raises(ConfigError, match="already exists"):
        keygen_main(tmp_path / "keys", lines.append)
    path = _pack(expert, enc, data, tmp_path / "p.mfx", signing_key=key)
    assert read_package(path, trusted_keys=[pub], require_signature=True).signature == "verified"
    assert read_package(path, trusted_keys=str(pub)).signature == "verified"
    with pytest.raises(ConfigError, match="is not an unencrypted PEM private key"):
        _pack(expert, enc, data, tmp_path / "q.mfx", signing_key=pub)
    with pytest.raises(ConfigError, match="is not a PEM public key"):
        read_package(path, trusted_keys=[key])


def test_missing_cryptography_gives_the_install_hint(pkg_path, monkeypatch, keys):
    monkeypatch.setitem(sys.modules, "cryptography.hazmat.primitives", None)
    with pytest.raises(DependencyError, match=r'pip install "manyfold\[sign\]"'):
        generate_keypair()
    with pytest.raises(DependencyError, match="cryptography"):
        read_package(pkg_path, trusted_keys=[keys[0][1]])
    assert read_package(pkg_path).signature == "none"  # unsigned packages need no cryptography


# -- packing ------------------------------------------------------------------------------------------------


def test_pack_refuses_bad_input_and_writes_nothing(expert, enc, data, tmp_path):
    _, X, y = data
    out = tmp_path / "out" / "x.mfx"
    before = _snapshot(tmp_path)
    with pytest.raises(ConfigError, match=r"labels expert 'banking' does not know: \['oos'\]"):
        _pack(expert, enc, data, out, X=np.concatenate([X, X[:1]]), y=np.append(y, "oos"))
    with pytest.raises(ConfigError, match=r"no items of expert 'banking'.s labels \['transfer'\]"):
        _pack(expert, enc, data, out, X=X[y != "transfer"], y=y[y != "transfer"])
    with pytest.raises(ConfigError, match="takes 64-d features, but encoder"):
        _pack(expert, enc, data, out, encoder_dim=32)
    with pytest.raises(ConfigError, match="signing key .* is not an unencrypted PEM"):
        _pack(expert, enc, data, out, signing_key=b"-----BEGIN nonsense")
    with pytest.raises(ConfigError, match="is a folder"):
        _pack(expert, enc, data, tmp_path)
    assert _snapshot(tmp_path) == before and not out.parent.exists()
    with pytest.raises(Exception, match="not fitted"):
        _pack(HeadExpert("x"), enc, data, out)


# -- CLI helpers and install checks ---------------------------------------------------------------------


def test_cli_helpers(expert, enc, data, tmp_path, keys):
    _, X, y = data
    (priv, pub), _ = keys
    lines: list[str] = []
    path = pack_main(expert, enc, X, y, tmp_path / "b.mfx", lines.append, signing_key=priv, licence="MIT")
    n = read_package(path).summary.n_prototypes
    assert lines[-1].startswith(f"packed expert 'banking' (3 labels, {n} routing prototypes)")
    lines.clear()
    inspect_main(path, lines.append, trusted_keys=[pub])
    text = "\n".join(lines)
    for part in ("banking (HeadExpert", "3: balance, card_lost, transfer", enc.id, f"{n} prototypes for 3 labels",
                 "3 members verified (sha256)", "verified: signed by trusted key ed25519:", "MIT"):
        assert part in text, part
    lines.clear()
    inspect_main(path, lines.append, json_out=True)
    doc = json.loads(lines[0])
    assert doc["signature"] == "unchecked" and doc["summary"]["counts"] == {"balance": 40, "card_lost": 12, "transfer": 12}
    lines.clear()
    pkg = verify_main(path, lines.append, expected_encoder_id=enc.id, expected_modality="text")
    claimed = base64.b64decode(json.loads(_members(path)[SIGNATURE])["public_key"])
    assert lines[0].startswith(f"ok: {str(path)!r} holds expert 'banking'") and pkg.signer == fingerprint(claimed)


def test_check_collisions(pkg_path):
    pkg = read_package(pkg_path)
    check_collisions(pkg, labels=["greeting"], expert_names=["smalltalk"])
    with pytest.raises(ArtifactError, match=r"1 of its labels already belong to this assembly \('balance'\)"):
        check_collisions(pkg, labels=["balance", "greeting"])
    with pytest.raises(ArtifactError, match="already has an expert named 'banking'"):
        check_collisions(pkg, expert_names=["banking"])


def test_packages_are_stable_zip_files(pkg_path):
    with zipfile.ZipFile(pkg_path) as zf:
        assert zf.testzip() is None
        infos = {i.filename: i for i in zf.infolist()}
    assert infos["package.json"].compress_type == zipfile.ZIP_DEFLATED
    assert infos[WEIGHTS].compress_type == zipfile.ZIP_STORED
    assert not any(n.endswith(".tmp") for n in os.listdir(pkg_path.parent))
    assert io.BytesIO(pkg_path.read_bytes()).read(4) == b"PK\x03\x04"
