"""Images through HTTP (base64 JSON and multipart uploads) and ``manyfold predict`` on image files.

The assembly is tiny and real: a test-local encoder (8x8 grayscale pixels, numpy
only), two linear head experts and a linear router, fitted on synthetic 8x8
images whose label is where the bright half is (top / bottom / left / right).
Every image sent is a file written here with Pillow; the decompression bomb is
a real 20000x20000 1-bit PNG made with zlib (about 50 kB on disk).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("prometheus_client")
Image = pytest.importorskip("PIL.Image", reason="Pillow not installed: pip install 'manyfold[images]'")

import manyfold  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from manyfold import InputError  # noqa: E402
from manyfold.data import read_image  # noqa: E402
from manyfold.serve import ServeConfig, create_app  # noqa: E402

LABELS = {"top": "rows", "bottom": "rows", "left": "cols", "right": "cols"}
TAKES_IMAGES = "this assembly takes images: send 'images' (base64) or upload files"


class TinyPixels:
    """The test's image encoder: any uint8 image -> grayscale, sampled on an 8x8 grid, scaled to [0, 1]."""

    modality = "image"
    id = "test-pixels-8x8-v1"
    spec = "testpix"
    dim = 64

    def validate(self, items, *, max_chars=None, max_pixels=None):
        items = list(items)
        for i, it in enumerate(items):
            if not isinstance(it, np.ndarray) or it.dtype != np.uint8 or it.ndim not in (2, 3) or it.size == 0:
                raise InputError(f"item {i} is not a non-empty uint8 image array")
            if max_pixels is not None and it.shape[0] * it.shape[1] > max_pixels:
                raise InputError(f"item {i} has more than {max_pixels} pixels")
        return items

    def encode(self, items, *, batch_size=64, show_progress=False):
        out = np.empty((len(items), self.dim), np.float32)
        for i, a in enumerate(items):
            g = a.mean(2) if a.ndim == 3 else a.astype(np.float32)
            rows = np.linspace(0, g.shape[0] - 1, 8).round().astype(int)
            cols = np.linspace(0, g.shape[1] - 1, 8).round().astype(int)
            out[i] = g[np.ix_(rows, cols)].ravel() / 255.0
        return out


def pattern(label: str, rng: np.random.Generator, size: int = 8) -> np.ndarray:
    img = rng.integers(0, 40, (size, size))
    h = size // 2
    region = {"top": (slice(0, h), slice(None)), "bottom": (slice(h, None), slice(None)),
              "left": (slice(None), slice(0, h)), "right": (slice(None), slice(h, None))}[label]
    img[region] += 180
    return img.astype(np.uint8)


def data(n: int, seed: int) -> tuple[list[np.ndarray], list[str]]:
    rng = np.random.default_rng(seed)
    labels = [lab for lab in LABELS for _ in range(n)]
    return [pattern(lab, rng) for lab in labels], labels


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def asm():
    tr, ytr = data(10, 0)
    va, yva = data(4, 1)
    experts = [manyfold.HeadExpert("rows"), manyfold.HeadExpert("cols")]
    return manyfold.Assembly(TinyPixels(), manyfold.LinearRouter(), experts).fit(tr, ytr, va, yva, label_to_expert=LABELS)


@pytest.fixture(scope="module")
def text_asm():
    """A tiny text assembly (hashing encoder, no model) to send images to."""
    rng = np.random.default_rng(0)
    words = {"pay": ["bill", "pay", "money"], "card": ["card", "pin", "lost"], "song": ["play", "song", "album"],
             "tune": ["volume", "radio", "tune"]}

    def mk(n):
        xs = [(" ".join(rng.choice(ws, 3)), lab) for lab, ws in words.items() for _ in range(n)]
        return [x for x, _ in xs], [y for _, y in xs]

    experts = [manyfold.HeadExpert("bank"), manyfold.HeadExpert("media")]
    a = manyfold.Assembly(manyfold.get_encoder("hashing:dim=128"), manyfold.LinearRouter(), experts)
    return a.fit(*mk(6), *mk(3), label_to_expert={"pay": "bank", "card": "bank", "song": "media", "tune": "media"})


def png(arr: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, fmt)
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def bomb_png(width: int, height: int) -> bytes:
    """A valid 1-bit PNG of width x height black pixels, built without ever holding its pixels."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    comp = zlib.compressobj(9)
    row = b"\0" * (1 + (width + 7) // 8)
    idat = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def files() -> dict[str, bytes]:
    """Image files with known labels: gray PNGs (8x8, 16x16), a gray BMP and an RGB PNG (12x12)."""
    rng = np.random.default_rng(7)
    rgb = np.repeat(pattern("right", rng, 12)[:, :, None], 3, axis=2)
    return {"top": png(pattern("top", rng)), "bottom": png(pattern("bottom", rng, 16)),
            "left": png(pattern("left", rng), "BMP"), "right": png(rgb)}


def client(asm, **kw) -> TestClient:
    return TestClient(create_app(ServeConfig(assembly=asm, **kw)))


def expected(asm, blobs: list[bytes]) -> list[str]:
    return [p.label for p in asm.predict([read_image(b) for b in blobs])]


def labels_of(r) -> list[str]:
    assert r.status_code == 200, r.text
    return [p["label"] for p in r.json()["predictions"]]


def refused(r, status: int, field: str, *words: str) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error", "message", "field"} and body["field"] == field, body
    assert all(w in body["message"] for w in words), body
    return body


# -- answers -----------------------------------------------------------------------------------
def test_base64_single_and_list(asm, files):
    blobs = list(files.values())
    want = expected(asm, blobs)
    assert want == list(files)  # the assembly gets these easy patterns right
    with client(asm) as c:
        assert labels_of(c.post("/v1/predict", json={"image": b64(blobs[0])})) == want[:1]
        sent = [b64(blobs[0]), "data:image/png;base64," + b64(blobs[1]), b64(blobs[2]), b64(blobs[3])]
        r = c.post("/v1/predict", json={"images": sent, "escalate": False})
        assert labels_of(r) == want
        p = r.json()["predictions"][0]
        assert set(p["timings_ms"]) >= {"encode", "route", "experts", "total", "queue"} and not p["escalated"]
        wrapped = "\n".join(b64(blobs[1])[i:i + 76] for i in range(0, len(b64(blobs[1])), 76))  # `base64` CLI output
        assert labels_of(c.post("/v1/predict", json={"image": wrapped})) == want[1:2]
        r = c.post("/v1/route", json={"images": [b64(b) for b in blobs], "k": 1})
        assert r.status_code == 200, r.text
        assert [x["experts"][0]["name"] for x in r.json()["routes"]] == ["rows", "rows", "cols", "cols"]


def test_multipart_one_and_several_files(asm, files):
    blobs = list(files.values())
    want = expected(asm, blobs)
    with client(asm) as c:
        r = c.post("/v1/predict", files={"file": ("top.png", blobs[0], "image/png")})
        assert labels_of(r) == want[:1]
        several = [("files", (f"{name}.img", b, "image/png")) for name, b in files.items()]
        several[2] = ("files", ("left.bmp", blobs[2], "application/octet-stream"))
        r = c.post("/v1/predict", files=several, data={"escalate": "false"})
        assert labels_of(r) == want
        r = c.post("/v1/route", files=several, data={"k": "2"})
        assert r.status_code == 200, r.text
        assert [len(x["experts"]) for x in r.json()["routes"]] == [2] * 4
        m = c.get("/metrics").text
        assert 'manyfold_http_requests_total{endpoint="/v1/predict",method="POST",status="200"} 2.0' in m


def test_openapi_describes_what_the_assembly_takes(asm, text_asm):
    """Image assembly: the image JSON body and the upload; text assembly: the text bodies alone; none yet: both."""
    def bodies(app) -> dict[str, dict]:
        spec = TestClient(app).get("/openapi.json").json()
        return {p: spec["paths"][p]["post"]["requestBody"]["content"] for p in ("/v1/predict", "/v1/route")}, \
            set(spec["components"]["schemas"])

    for a, json_model, media in ((asm, "Image{}Request", {"application/json", "multipart/form-data"}),
                                 (text_asm, "{}Request", {"application/json"})):
        content, models = bodies(create_app(ServeConfig(assembly=a)))
        for path, op in (("/v1/predict", "Predict"), ("/v1/route", "Route")):
            assert set(content[path]) == media
            assert content[path]["application/json"]["schema"] == {
                "$ref": f"#/components/schemas/{json_model.format(op)}"}
        assert ("ImagePredictRequest" in models) == (a is asm) and ("PredictRequest" in models) == (a is text_asm)
    app = create_app(ServeConfig(assembly="not-loaded-yet"))  # no lifespan ran: nothing serves yet
    content, models = bodies(app)
    refs = json.dumps(content["/v1/predict"]["application/json"]["schema"])
    assert "ImagePredictRequest" in refs and "#/components/schemas/PredictRequest" in refs
    assert content["/v1/predict"]["multipart/form-data"]["schema"]["properties"]["files"]["items"]["format"] == "binary"
    c = TestClient(app)
    assert c.post("/v1/predict", json={"image": "aGk="}).status_code == 503
    assert c.post("/v1/predict", json={"item": "hi"}).status_code == 503


# -- refusals: 413 over a limit, 415 not an image type, 422 not an image / wrong kind -------------------------
def test_not_images_are_422_naming_the_item(asm, files):
    corrupt = files["top"][: len(files["top"]) // 2]
    with client(asm) as c:
        refused(c.post("/v1/predict", json={"images": [b64(files["top"]), b64(corrupt)]}), 422, "images.1",
                "corrupt or truncated")
        refused(c.post("/v1/predict", json={"images": [b64(files["top"]), ""]}), 422, "images.1", "0 bytes")
        refused(c.post("/v1/predict", json={"image": b64(b"just some text, not a picture")}), 422, "image",
                "is not an image")
        refused(c.post("/v1/predict", json={"image": "not base64 at all!"}), 422, "image", "base64")
        refused(c.post("/v1/predict", json={"images": []}), 422, "images")
        refused(c.post("/v1/predict", json={"images": [b64(files["top"])], "image": b64(files["top"])}), 422, "body",
                "exactly one")
        up = [("files", ("a.png", files["top"], "image/png")), ("files", ("b.png", corrupt, "image/png"))]
        refused(c.post("/v1/predict", files=up), 422, "files.1", "'b.png'", "corrupt")
        refused(c.post("/v1/predict", files={"file": ("empty.png", b"", "image/png")}), 422, "file.0", "0 bytes")
        refused(c.post("/v1/predict", files={"file": ("a.png", files["top"], "image/png")}, data={"escalate": "maybe"}),
                422, "escalate", "boolean")
        refused(c.post("/v1/predict", files={"picture": ("a.png", files["top"], "image/png")}), 422, "picture",
                "unknown form field")
        refused(c.post("/v1/predict", data={"escalate": "true"}, files={"other": ("x", b"", "text/plain")}), 422,
                "other")
        refused(c.post("/v1/predict", content=b"--x\r\nnonsense", headers={"content-type": "multipart/form-data"}),
                422, "body", "multipart")


def test_over_a_limit_is_413_before_decoding(asm, files, monkeypatch):
    import manyfold.data

    def never(*a, **kw):
        raise AssertionError("an image over a limit was decoded")

    bomb = bomb_png(20000, 20000)
    assert len(bomb) < 200_000  # small on disk, 400 million pixels
    top = b64(files["top"])
    with client(asm) as c:
        monkeypatch.setattr(manyfold.data, "read_image", never)  # every refusal below comes before any decoding
        refused(c.post("/v1/predict", json={"images": [top, b64(bomb)]}), 413, "images.1",
                "400,000,000 pixels", "max_image_pixels=16,000,000", "without decoding")
        refused(c.post("/v1/predict", files={"file": ("bomb.png", bomb, "image/png")}), 413, "file.0", "'bomb.png'",
                "400,000,000 pixels")
    with client(asm, max_image_bytes=300, max_images_per_request=3, max_request_pixels=150) as c:
        big = png(np.random.default_rng(0).integers(0, 255, (40, 40), dtype=np.uint8))
        assert len(big) > 300
        refused(c.post("/v1/predict", json={"image": b64(big)}), 413, "image", "bytes", "max_image_bytes=300")
        refused(c.post("/v1/predict", files={"file": ("big.png", big, "image/png")}), 413, "file.0", "'big.png'",
                "max_image_bytes=300")
        refused(c.post("/v1/predict", json={"images": [top] * 4}), 413, "images", "4 images", "max_images_per_request")
        refused(c.post("/v1/predict", files=[("files", (f"{i}.png", files["top"], "image/png")) for i in range(4)]),
                413, "files", "max_images_per_request")
        refused(c.post("/v1/predict", json={"images": [top] * 3}), 413, "images.2", "192 pixels in all",
                "max_request_pixels=150")  # 3 images of 8x8: the third goes over
        monkeypatch.undo()
        assert labels_of(c.post("/v1/predict", json={"images": [top] * 2})) == ["top"] * 2  # within every limit
    with client(asm, max_image_pixels=100) as c:
        refused(c.post("/v1/predict", json={"images": [top, b64(files["bottom"])]}), 413, "images.1",
                "256 pixels", "max_image_pixels=100")
    with client(asm, max_image_body_bytes=2000) as c:
        refused(c.post("/v1/predict", json={"images": [top] * 30}), 413, "body", "max_image_body_bytes")


def test_non_image_content_types_are_415(asm, files, monkeypatch):
    with client(asm) as c:
        up = [("files", ("a.png", files["top"], "image/png")), ("files", ("notes.txt", b"hello", "text/plain"))]
        refused(c.post("/v1/predict", files=up), 415, "files.1", "'notes.txt'", "text/plain")
        refused(c.post("/v1/predict", content=files["top"], headers={"content-type": "image/png"}), 415, "body",
                "multipart")
        refused(c.post("/v1/predict", data={"image": b64(files["top"])}), 415, "body",  # curl -d without a JSON header
                "application/x-www-form-urlencoded")
        from starlette import formparsers

        monkeypatch.setattr(formparsers, "multipart", None)  # a server without python-multipart
        refused(c.post("/v1/predict", files={"file": ("a.png", files["top"], "image/png")}), 415, "body",
                "python-multipart", "send JSON")


def test_a_server_without_pillow_says_so(asm, files, monkeypatch):
    from manyfold._exceptions import missing_dependency
    from manyfold.data import _images

    def no_pillow():
        raise missing_dependency("pillow", "images", "reading images")

    monkeypatch.setattr(_images, "_pil", no_pillow)
    with client(asm) as c:
        r = c.post("/v1/predict", json={"image": b64(files["top"])})
        assert r.status_code == 501 and "manyfold[images]" in r.json()["message"], r.text


def test_the_wrong_kind_of_item_says_what_the_assembly_takes(asm, text_asm, files):
    with client(asm) as c:
        refused(c.post("/v1/predict", json={"items": ["a photo of a cat"]}), 422, "items", TAKES_IMAGES)
        refused(c.post("/v1/predict", json={"item": "a photo of a cat"}), 422, "item", TAKES_IMAGES)
        refused(c.post("/v1/route", json={"item": "a photo of a cat"}), 422, "item", TAKES_IMAGES)
    with client(text_asm) as c:
        assert labels_of(c.post("/v1/predict", json={"item": "pay my bill"}))  # it serves texts
        for body, field in (({"images": [b64(files["top"])]}, "images"), ({"image": b64(files["top"])}, "image")):
            refused(c.post("/v1/predict", json=body), 422, field, "this assembly takes texts")
            refused(c.post("/v1/route", json=body), 422, field, "this assembly takes texts")
        refused(c.post("/v1/predict", files={"file": ("a.png", files["top"], "image/png")}), 422, "files",
                "this assembly takes texts")


def test_request_log_keeps_no_image_bytes(asm, files, tmp_path):
    path = tmp_path / "requests.jsonl"
    blobs = [files["top"], files["right"]]
    with client(asm, request_log=str(path)) as c:
        assert c.post("/v1/predict", json={"images": [b64(b) for b in blobs]}).status_code == 200
        assert c.post("/v1/predict", files={"file": ("left.bmp", files["left"], "image/bmp")}).status_code == 200
        assert c.post("/v1/predict", json={"image": "bad"}).status_code == 422  # refused: not logged
    text = path.read_text()
    rows = [json.loads(x) for x in text.splitlines()]
    assert len(rows) == 2 and all("items" not in r for r in rows)
    assert rows[0]["images"] == [
        {"sha256": hashlib.sha256(blobs[0]).hexdigest(), "width": 8, "height": 8, "mode": "L", "format": "PNG",
         "bytes": len(blobs[0])},
        {"sha256": hashlib.sha256(blobs[1]).hexdigest(), "width": 12, "height": 12, "mode": "RGB", "format": "PNG",
         "bytes": len(blobs[1])}]
    assert rows[0]["labels"] == ["top", "right"] and rows[1]["labels"] == ["left"]
    assert rows[1]["images"][0]["format"] == "BMP"
    for b in (*blobs, files["left"]):
        assert b64(b)[:40] not in text and b64(b)[-40:-4] not in text


def test_request_log_describes_pixels_it_is_given(tmp_path):
    from manyfold.serve._reqlog import RequestLog

    log = RequestLog(tmp_path / "r.jsonl")
    img = np.full((3, 5, 3), 200, np.uint8)
    log.write([img], [{"label": "x", "escalated": False}], 1)
    log.close()
    row = json.loads((tmp_path / "r.jsonl").read_text())
    assert row["images"] == [{"sha256": row["images"][0]["sha256"], "width": 5, "height": 3, "mode": "RGB"}]
    assert len(row["images"][0]["sha256"]) == 64 and "items" not in row


# -- the CLI ------------------------------------------------------------------------------------------------
@pytest.fixture
def saved(asm, monkeypatch):
    """``asm`` saved in the (test-isolated) registry as "pix"; its encoder spec rebuilds TinyPixels."""
    from manyfold.encoders import _registry

    monkeypatch.setitem(_registry._BUILDERS, "testpix", lambda opts, spec: TinyPixels())
    manyfold.Registry().save(asm, "pix")
    return "pix"


def cli(capsys, *args: str) -> tuple[int, str, str]:
    from manyfold._cli import main

    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_predict_image_files(saved, files, tmp_path, capsys):
    paths = []
    for name, b in files.items():
        p = tmp_path / "in" / f"{name}.{'bmp' if name == 'left' else 'png'}"
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(b)
        paths.append(str(p))
    code, out, err = cli(capsys, "predict", saved, *paths, "--json")
    assert code == 0, err
    assert [d["label"] for d in json.loads(out)] == list(files)
    code, out, _ = cli(capsys, "predict", saved, paths[0])
    assert code == 0 and out.startswith("top  (confidence") and out.rstrip().endswith(f"{paths[0]!r}")

    dest = tmp_path / "out" / "preds.jsonl"
    (tmp_path / "in" / "README.txt").write_text("not an image: skipped")
    code, out, err = cli(capsys, "predict", saved, "--input", str(tmp_path / "in"), "--output", str(dest),
                         "--batch-size", "3")
    assert code == 0, err
    rows = [json.loads(x) for x in dest.read_text().splitlines()]
    assert [r["file"] for r in rows] == ["bottom.png", "left.bmp", "right.png", "top.png"]  # sorted
    assert [r["label"] for r in rows] == ["bottom", "left", "right", "top"]
    assert {"confidence", "escalated", "experts", "oos_score"} <= set(rows[0])


def test_cli_predict_image_refusals(saved, files, tmp_path, capsys):
    bad = tmp_path / "bad.png"
    bad.write_bytes(files["top"][: len(files["top"]) // 2])
    for args, words in (
        ([str(tmp_path / "missing.png")], ["no such image file", "missing.png"]),
        ([str(bad)], ["bad.png", "corrupt or truncated"]),
        (["a photo of a cat"], ["takes images", "'a photo of a cat'"]),
        (["--input", str(tmp_path / "nowhere"), "--output", str(tmp_path / "o.jsonl")], ["no such folder"]),
        (["--input", str(bad), "--output", str(tmp_path / "o.jsonl")], ["takes a folder of images"]),
    ):
        code, out, err = cli(capsys, "predict", saved, *args)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("error:"), (args, err)
        assert all(w in lines[0] for w in words), (args, lines[0])
    folder = tmp_path / "imgs"
    folder.mkdir()
    (folder / "a.png").write_bytes(files["top"])
    (folder / "b.png").write_bytes(b"")  # 0 bytes: the whole run fails, no partial output
    dest = tmp_path / "o.jsonl"
    code, _, err = cli(capsys, "predict", saved, "--input", str(folder), "--output", str(dest))
    assert code == 2 and "0 bytes" in err and "b.png" in err and not dest.exists()


def test_fuzz_image_app_no_server_error(asm):
    """schemathesis: valid and invalid JSON and multipart bodies for the inference paths of an image assembly."""
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, given, settings

    from schemathesis.checks import not_a_server_error

    app = create_app(ServeConfig(assembly=asm, max_images_per_request=4, max_image_body_bytes=20_000))
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    seen: dict[str, set[int]] = {}
    for result in schema.get_all_operations():
        op = result.ok()
        if op.path not in ("/v1/predict", "/v1/route"):
            continue
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):

            @given(case=op.as_strategy(generation_mode=mode))
            @settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck), database=None)
            def check(case) -> None:
                r = case.call_and_validate(checks=[not_a_server_error])
                seen.setdefault(f"{op.label} {case.media_type}", set()).add(r.status_code)

            check()
    assert any("multipart/form-data" in k for k in seen) and any("application/json" in k for k in seen), seen
    assert all(code < 500 for codes in seen.values() for code in codes), seen
