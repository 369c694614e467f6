"""Tests of image data: :func:`read_image` (formats, modes, every refusal) and image folders as datasets.

Every image is a tiny file written here with Pillow, with known pixel values; the
decompression bombs are real PNG files (1-bit, all zero: small on disk). MNIST
comes from the shared data folder (the ``data_dir`` fixture).
"""

from __future__ import annotations

import io
import json
import shutil
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from manyfold._exceptions import ConfigError, DataError, DependencyError, InputError, ManyfoldError
from manyfold.data import (
    DATASETS,
    IMAGE_DATASETS,
    IMAGE_EXTENSIONS,
    TEXT_DATASETS,
    dataset_ref,
    load_dataset,
    load_dataset_ref,
    read_image,
)
from manyfold.data._images import is_image_folder

Image = pytest.importorskip("PIL.Image", reason="Pillow not installed: pip install 'manyfold[images]'")

GRAY = np.arange(144, dtype=np.uint8).reshape(12, 12)
RGB = np.stack([GRAY, 255 - GRAY, np.full((12, 12), 7, np.uint8)], axis=2)


# --- helpers ---------------------------------------------------------------------------------------


def save(path: Path, arr: np.ndarray, fmt: str | None = None, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, fmt, **kw)
    return path


def encoded(arr: np.ndarray, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, fmt, **kw)
    return buf.getvalue()


def bomb_png(path: Path, width: int, height: int) -> Path:
    """A real, valid 1-bit grayscale PNG of ``width`` x ``height`` black pixels, written without allocating it."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    row = b"\0" * (1 + (width + 7) // 8)  # filter byte + packed bits
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(row * 500) for _ in range(height // 500)) + comp.compress(row * (height % 500))
    idat += comp.flush()
    with open(path, "wb") as fh:
        fh.write(b"\x89PNG\r\n\x1a\n")
        fh.write(chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)))
        fh.write(chunk(b"IDAT", idat))
        fh.write(chunk(b"IEND", b""))
    return path


def pattern(value: int, shape: tuple[int, ...] = (8, 8)) -> np.ndarray:
    """An image whose every pixel is ``value``: it names the file it came from."""
    return np.full(shape, value, dtype=np.uint8)


def make_folder(root: Path, counts: dict[str, int], *, start: int = 0, shape=(8, 8), ext: str = ".png") -> dict[int, str]:
    """``root/<label path>/<i>.png`` with a distinct constant value per image; returns value -> label."""
    truth: dict[int, str] = {}
    value = start
    for label_path, n in counts.items():
        for i in range(n):
            save(root / label_path / f"{i:02d}{ext}", pattern(value, shape))
            truth[value] = label_path.split("/")[-1]
            value += 1
    return truth


def values_and_labels(split) -> list[tuple[int, str]]:
    return [(int(np.asarray(item).flat[0]), lab) for item, lab in zip(split.items, split.labels.tolist())]


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


# --- read_image: sources, formats, modes -----------------------------------------------------------


def test_read_png_from_path_bytes_and_file_object(tmp_path):
    p = save(tmp_path / "g.png", GRAY)
    for source in (p, str(p), p.read_bytes(), bytearray(p.read_bytes()), open(p, "rb"), io.BytesIO(p.read_bytes())):
        out = read_image(source)
        assert out.dtype == np.uint8 and out.shape == (12, 12) and np.array_equal(out, GRAY)
        if hasattr(source, "close"):
            source.close()
    rgb = read_image(save(tmp_path / "c.png", RGB))
    assert rgb.shape == (12, 12, 3) and np.array_equal(rgb, RGB) and rgb.flags.writeable


@pytest.mark.parametrize("fmt,kw", [("BMP", {}), ("GIF", {}), ("WEBP", {"lossless": True}), ("PNG", {})])
def test_lossless_formats_known_pixels(fmt, kw):
    if fmt != "GIF":  # GIF holds at most 256 colours
        assert np.array_equal(read_image(encoded(RGB, fmt, **kw), mode="RGB"), RGB)
    gray = read_image(encoded(GRAY, fmt, **kw), mode="L")
    assert gray.shape == (12, 12) and np.array_equal(gray, GRAY)


def test_gif_gray_palette_stays_gray_and_webp_is_rgb():
    assert read_image(encoded(GRAY, "GIF")).shape == (12, 12)  # gray palette: grayscale in "auto"
    out = read_image(encoded(GRAY, "WEBP", lossless=True))  # WebP has no grayscale: RGB with equal channels
    assert out.shape == (12, 12, 3) and all(np.array_equal(out[..., c], GRAY) for c in range(3))


def test_jpeg_near_known_value():
    out = read_image(encoded(pattern(128, (16, 16)), "JPEG", quality=95))
    assert out.shape == (16, 16) and np.abs(out.astype(int) - 128).max() <= 2
    red = read_image(encoded(np.tile(np.array([255, 0, 0], np.uint8), (16, 16, 1)), "JPEG", quality=95))
    assert red.shape == (16, 16, 3) and red[..., 0].min() >= 250 and red[..., 1:].max() <= 5


def test_modes_convert_as_documented():
    red = np.zeros((4, 4, 3), np.uint8)
    red[..., 0] = 255
    assert np.all(read_image(encoded(red, "PNG"), mode="L") == 76)  # ITU-R 601 luma of pure red
    as_rgb = read_image(encoded(GRAY, "PNG"), mode="RGB")
    assert as_rgb.shape == (12, 12, 3) and all(np.array_equal(as_rgb[..., c], GRAY) for c in range(3))
    with pytest.raises(ConfigError, match=r"unknown image mode 'gray'; valid modes: 'auto', 'L', 'RGB'"):
        read_image(encoded(GRAY, "PNG"), mode="gray")


def test_sixteen_bit_one_bit_and_palette():
    sixteen = (GRAY.astype(np.uint16) * 257)
    out = read_image(encoded(sixteen, "PNG"))
    assert out.dtype == np.uint8 and np.array_equal(out, GRAY)  # scaled, not clipped
    bits = Image.fromarray(GRAY >= 72)  # mode "1"
    buf = io.BytesIO()
    bits.save(buf, "PNG")
    assert set(np.unique(read_image(buf.getvalue())).tolist()) == {0, 255}
    pal = Image.fromarray(RGB).convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    buf = io.BytesIO()
    pal.save(buf, "PNG")
    assert read_image(buf.getvalue()).shape == (12, 12, 3)


def test_transparency_is_drawn_on_white():
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = (10, 20, 30, 255)  # opaque: kept
    rgba[0, 1] = (10, 20, 30, 0)  # transparent: white
    out = read_image(encoded(rgba, "PNG"))
    assert out.shape == (2, 2, 3) and out[0, 0].tolist() == [10, 20, 30] and out[0, 1].tolist() == [255, 255, 255]
    la = np.zeros((2, 2, 2), np.uint8)
    la[..., 0], la[0, 0, 1] = 40, 255
    out = read_image(encoded(la, "PNG"))  # gray + alpha: still grayscale
    assert out.shape == (2, 2) and out[0, 0] == 40 and out[1, 1] == 255


def test_animated_gif_gives_first_frame():
    frames = [Image.fromarray(pattern(v, (6, 6))) for v in (30, 200)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=50)
    assert Image.open(io.BytesIO(buf.getvalue())).n_frames == 2
    out = read_image(buf.getvalue())
    assert np.all(out == 30)


def test_exif_orientation_is_applied():
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    wide = pattern(100, (6, 12))
    out = read_image(encoded(wide, "JPEG", exif=exif.tobytes()))
    assert out.shape == (12, 6)


# --- read_image: refusals ---------------------------------------------------------------------------


def test_empty_too_big_and_not_an_image(tmp_path):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match=r"empty\.png': empty file \(0 bytes\)"):
        read_image(empty)
    with pytest.raises(InputError, match=r"the image bytes: empty file"):
        read_image(b"")
    big = save(tmp_path / "big.png", np.random.default_rng(0).integers(0, 255, (12, 12, 3), dtype=np.uint8))
    n = big.stat().st_size
    with pytest.raises(InputError, match=rf"big\.png': {n:,} bytes is more than max_bytes=100$"):
        read_image(big, max_bytes=100)
    with pytest.raises(InputError, match=r"the image file object: the data is more than max_bytes=100"):
        read_image(io.BytesIO(big.read_bytes()), max_bytes=100)
    text = tmp_path / "notes.png"
    text.write_text("this is text, not a picture\n" * 3)
    with pytest.raises(InputError, match=r"notes\.png' is not an image \(or not one of PNG, JPEG, BMP, GIF, WebP\)"):
        read_image(text)
    tiff = io.BytesIO()
    Image.fromarray(GRAY).save(tiff, "TIFF")  # a real image, but not an accepted format
    with pytest.raises(InputError, match="is not an image"):
        read_image(tiff.getvalue())


def test_corrupt_and_truncated(tmp_path):
    data = encoded(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8), "PNG")
    for bad in (data[: len(data) // 2], data[:60] + b"\0" * 200, data[:8] + b"garbage" * 20):
        with pytest.raises(InputError, match=r"^the image bytes (is a corrupt or truncated image|is not an image)"):
            read_image(bad)
    p = tmp_path / "cut.jpg"
    p.write_bytes(encoded(RGB, "JPEG")[:-200])
    with pytest.raises(InputError, match=r"cut\.jpg' is a corrupt or truncated image: "):
        read_image(p)


def test_bad_sources_and_limits(tmp_path):
    with pytest.raises(InputError, match=r"no such image file '.*nope\.png'"):
        read_image(tmp_path / "nope.png")
    with pytest.raises(InputError, match="is a folder, not an image file"):
        read_image(tmp_path)
    with pytest.raises(InputError, match="needs a path, bytes or a binary file object, not int"):
        read_image(3)
    p = save(tmp_path / "g.png", GRAY)
    with open(p, encoding="latin-1") as fh, pytest.raises(InputError, match=r"open in text mode"):
        read_image(fh)
    with pytest.raises(InputError, match=r"12x12 = 144 pixels is more than max_pixels=100$"):
        read_image(p, max_pixels=100)
    for option in ("max_bytes", "max_pixels"):
        for bad in (0, -1, 1.5, True, None):
            with pytest.raises(ConfigError, match=f"{option} must be a positive int"):
                read_image(p, **{option: bad})


@pytest.fixture(scope="module")
def bombs(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("bombs")
    return {
        "20000": bomb_png(d / "bomb20000.png", 20000, 20000),
        "10000": bomb_png(d / "bomb10000.png", 10000, 10000),
        "7000": bomb_png(d / "bomb7000.png", 7000, 7000),
    }


@pytest.fixture
def no_decoding(monkeypatch):
    """Any attempt to decode pixel data fails the test (BaseException: not mapped by read_image)."""
    from PIL import ImageFile

    def boom(self, *a, **k):
        pytest.fail("pixel data was decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", boom)
    monkeypatch.setattr(Image.Image, "load", boom)


def test_decompression_bomb_refused_without_decoding(bombs, no_decoding):
    p = bombs["20000"]
    assert p.stat().st_size < 200_000  # small on disk
    with pytest.raises(InputError, match=r"bomb20000\.png': 400,000,000 pixels is more than max_pixels=40,000,000 "
                                         r"or Pillow's decompression-bomb limit .*refused without decoding"):
        read_image(p)
    with pytest.raises(InputError, match="refused without decoding"):  # Pillow's own guard, even past max_pixels
        read_image(p.read_bytes(), max_pixels=10**12)
    # between max_pixels and Pillow's limits: the header check
    with pytest.raises(InputError, match=r"7000x7000 = 49,000,000 pixels is more than max_pixels=40,000,000$"):
        read_image(bombs["7000"])
    # past Pillow's warning limit (MAX_IMAGE_PIXELS) but under its error limit: the warning is made an error
    assert Image.MAX_IMAGE_PIXELS < 100_000_000 < 2 * Image.MAX_IMAGE_PIXELS
    with pytest.raises(InputError, match=r"100,000,000 pixels .*refused without decoding"):
        read_image(bombs["10000"], max_pixels=200_000_000)


def test_errors_are_one_line_and_manyfold_errors(tmp_path):
    for bad in (b"", b"\x89PNG\r\n\x1a\n" + b"\0" * 40, b"GIF89a" + b"\xff" * 30, encoded(RGB, "JPEG")[:100]):
        with pytest.raises(ManyfoldError) as info:
            read_image(bad)
        assert isinstance(info.value, InputError) and "\n" not in str(info.value)


# --- image folders ---------------------------------------------------------------------------------


def test_one_level_folder_splits_like_text_files(tmp_path):
    truth = make_folder(tmp_path / "shapes", {"circle": 10, "square": 10, "star": 10})
    (tmp_path / "shapes" / ".DS_Store").write_bytes(b"junk")
    (tmp_path / "shapes" / "circle" / "README.txt").write_text("ignored")
    ds = load_dataset(tmp_path / "shapes")
    assert ds.modality == "image" and ds.name == "shapes" and ds.oos_label is None and not ds.has_domains
    assert ds.labels == ["circle", "square", "star"] and ds.split_names == ["train", "val", "test"]
    assert {k: len(v) for k, v in ds.splits.items()} == {"train": 21, "val": 3, "test": 6}  # per label 7 / 1 / 2
    seen = []
    for sp in ds.splits.values():
        assert isinstance(sp.items, np.ndarray) and sp.items.dtype == np.uint8 and sp.items.shape[1:] == (8, 8)
        assert all(truth[v] == lab for v, lab in values_and_labels(sp))  # every image kept its label
        assert set(sp.label_counts().values()) == {len(sp) // 3}
        seen += [v for v, _ in values_and_labels(sp)]
    assert sorted(seen) == sorted(truth)  # each image in exactly one split
    assert ds.info["shape"] == [8, 8]
    again = load_dataset(tmp_path / "shapes")
    other = load_dataset(tmp_path / "shapes", seed=1, val_share=0.2, test_share=0.3)
    assert values_and_labels(again.split("val")) == values_and_labels(ds.split("val"))
    assert {k: len(v) for k, v in other.splits.items()} == {"train": 15, "val": 6, "test": 9}
    assert values_and_labels(other.split("test")) != values_and_labels(ds.split("test"))


def test_two_level_folder_has_domains_and_oos(tmp_path):
    root = tmp_path / "zoo"
    truth = make_folder(root, {"pets/cat": 5, "pets/dog": 5, "farm/cow": 5, "out_of_scope": 4})
    ds = load_dataset(root, test_share=0.0)
    assert ds.label_to_domain == {"cat": "pets", "dog": "pets", "cow": "farm"} and ds.domains == ["farm", "pets"]
    assert ds.oos_label == "out_of_scope" and ds.labels == ["cat", "cow", "dog"]
    assert ds.split_names == ["train", "val"]
    assert all(truth[v] == lab for sp in ds.splits.values() for v, lab in values_and_labels(sp))
    assert dataset_ref(ds)["oos_label"] == "out_of_scope"
    with pytest.raises(DataError, match=r"mixes layouts: 'out_of_scope' holds images \(a label\) but 'farm'"):
        load_dataset(root, oos_label=None)


def test_explicit_split_folders(tmp_path):
    root = tmp_path / "digits"
    train = make_folder(root / "train", {"a": 4, "b": 4}, start=0)
    val = make_folder(root / "val", {"a": 2, "b": 1}, start=100)
    test = make_folder(root / "TEST", {"a": 1, "b": 3}, start=200)
    ds = load_dataset(root)
    assert ds.split_names == ["train", "val", "test"]
    for sp, truth in ((ds.split("train"), train), (ds.split("val"), val), (ds.split("test"), test)):
        assert sorted(values_and_labels(sp)) == sorted(truth.items())
    with pytest.raises(ConfigError, match=r"val_share=0\.2 was given but '.*val' already holds the val split"):
        load_dataset(root, val_share=0.2)
    # train/ alone: val is split off train, no test unless asked
    only = tmp_path / "only"
    make_folder(only / "train" / "x", {"p": 10, "q": 10})
    ds = load_dataset(only)
    assert ds.split_names == ["train", "val"] and ds.has_domains and ds.domains == ["x"]
    assert {k: len(v) for k, v in ds.splits.items()} == {"train": 18, "val": 2}
    assert load_dataset(only, test_share=0.2).split_names == ["train", "val", "test"]


def test_sizes_and_modes(tmp_path):
    root = tmp_path / "mixed"
    save(root / "a" / "0.png", pattern(10, (8, 8)))
    save(root / "a" / "1.png", pattern(20, (8, 8)))
    save(root / "b" / "0.png", pattern(30, (12, 6)))
    save(root / "b" / "1.jpg", pattern(40, (8, 8)))
    save(root / "b" / "2.bmp", np.tile(np.array([50, 60, 70], np.uint8), (8, 8, 1)))
    ds = load_dataset(root, val_share=0.3, test_share=0.0)
    items = [*ds.split("train").items, *ds.split("val").items]
    assert all(isinstance(sp.items, list) for sp in ds.splits.values()) and ds.info["shape"] is None
    assert all(a.dtype == np.uint8 and a.ndim == 3 for a in items)  # one colour image: all RGB in "auto"
    assert sorted(a.shape for a in items) == [(8, 8, 3)] * 4 + [(12, 6, 3)]
    gray = load_dataset(root, mode="L", size=8, val_share=0.3, test_share=0.0)
    tr = gray.split("train")
    assert isinstance(tr.items, np.ndarray) and tr.items.shape[1:] == (8, 8) and gray.info["shape"] == [8, 8]
    rect = load_dataset(root, mode="RGB", size=(6, 10), val_share=0.3, test_share=0.0)
    assert rect.split("val").items.shape[1:] == (6, 10, 3)
    flat = np.unique(np.concatenate([a.ravel() for a in [*rect.split("train").items, *rect.split("val").items]]))
    assert {10, 20, 30, 50, 60, 70} <= set(flat.tolist())  # constant images stay constant under bilinear resizing
    for bad in (0, (8,), (8, 0), "8", 2.5, True):
        with pytest.raises(ConfigError, match="size must be None, a positive int or"):
            load_dataset(root, size=bad)
    with pytest.raises(ConfigError, match="unknown image mode 'rgb'"):
        load_dataset(root, mode="rgb")


def test_folder_errors(tmp_path):
    one = tmp_path / "one"
    make_folder(one, {"only": 5})
    with pytest.raises(DataError, match=r"'.*one' needs at least 2 labels \(label subfolders of images\), found 1: 'only'"):
        load_dataset(one)
    hollow = tmp_path / "hollow"
    make_folder(hollow, {"a": 3, "b": 3})
    (hollow / "c").mkdir()
    (hollow / "c" / "notes.txt").write_text("x")
    with pytest.raises(DataError, match=r"label folder '.*hollow/c' has no images \(\.png, .*it holds: notes\.txt"):
        load_dataset(hollow)
    corrupt = tmp_path / "corrupt"
    make_folder(corrupt, {"a": 3, "b": 3})
    (corrupt / "b" / "01.png").write_text("not really a png")
    with pytest.raises(DataError, match=r"image folder '.*corrupt': '.*corrupt/b/01\.png' is not an image"):
        load_dataset(corrupt)
    (corrupt / "b" / "01.png").write_bytes(b"")
    with pytest.raises(DataError, match=r"b/01\.png': empty file"):
        load_dataset(corrupt)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / ".hidden").write_text("x")
    with pytest.raises(DataError, match=r"folder '.*empty' is empty"):
        load_dataset(empty)
    single = tmp_path / "single"
    make_folder(single, {"a": 1, "b": 3})
    with pytest.raises(DataError, match=r"label 'a' has 1 image in .*needs at least 2 images"):
        load_dataset(single)


def test_folder_layout_errors(tmp_path):
    mixed = tmp_path / "mixed"
    make_folder(mixed, {"animals/cat": 3, "animals/dog": 3, "car": 3})
    with pytest.raises(DataError, match=r"mixes layouts: 'car' holds images \(a label\) but 'animals'"):
        load_dataset(mixed)
    both = tmp_path / "both"
    make_folder(both, {"a": 3, "a/inner": 3, "b": 3})
    with pytest.raises(DataError, match=r"'.*both/a' holds both images and subfolders of images \(inner/\)"):
        load_dataset(both)
    twice = tmp_path / "twice"
    make_folder(twice, {"x/cat": 3, "y/cat": 3, "y/dog": 3})
    with pytest.raises(DataError, match=r"label 'cat' under .* is in two domains: 'x' and 'y'"):
        load_dataset(twice)
    loose = tmp_path / "loose"
    make_folder(loose, {"a": 3, "b": 3})
    save(loose / "stray.png", GRAY)
    with pytest.raises(DataError, match=r"holds image files directly \(stray\.png\); put each image in a subfolder"):
        load_dataset(loose)
    no_train = tmp_path / "no_train"
    make_folder(no_train, {"val/a": 2, "test/a": 2})
    with pytest.raises(DataError, match=r"has split folder\(s\) test, val but no train folder"):
        load_dataset(no_train)
    extra = tmp_path / "extra"
    make_folder(extra, {"train/a": 3, "train/b": 3, "cat": 2})
    with pytest.raises(DataError, match=r"mixes split folders \(train\) with cat/"):
        load_dataset(extra)
    unseen = tmp_path / "unseen"
    make_folder(unseen, {"train/a": 3, "train/b": 3, "val/c": 2})
    with pytest.raises(DataError, match=r"label 'c' of '.*unseen/val' has no images in the training folder"):
        load_dataset(unseen)
    layouts = tmp_path / "layouts"
    make_folder(layouts, {"train/a": 3, "train/b": 3, "val/d/a": 2})
    with pytest.raises(DataError, match=r"'.*layouts/val' is laid out as domain/label/image but .* as label/image"):
        load_dataset(layouts)


def test_options_that_do_not_apply(tmp_path):
    root = tmp_path / "imgs"
    make_folder(root, {"a": 3, "b": 3})
    with pytest.raises(ConfigError, match=r"option\(s\) text_col, domain_col apply to data files, not to the image folder"):
        load_dataset(root, text_col="text", domain_col="")
    (tmp_path / "t.csv").write_text("text,label\nx,a\ny,a\nz,b\nw,b\n")
    with pytest.raises(ConfigError, match=r"option\(s\) mode, size apply to image folders, not to the data file"):
        load_dataset(tmp_path / "t.csv", mode="L", size=8)
    with pytest.raises(ConfigError, match=r"option\(s\) size apply to data files, not to the built-in dataset 'mnist'"):
        load_dataset("mnist", size=32)
    with pytest.raises(ConfigError, match=r"oos_label 'junk' is not a label folder"):
        load_dataset(root, oos_label="junk")
    make_folder(root, {"c": 3})
    named = load_dataset(root, oos_label="b")
    assert named.oos_label == "b" and named.labels == ["a", "c"]
    assert dataset_ref(named)["oos_label"] == "b"


def test_is_image_folder(tmp_path):
    make_folder(tmp_path / "deep", {"train/dom/lab": 1})
    assert is_image_folder(tmp_path / "deep") and is_image_folder(tmp_path / "deep" / "train")
    text = tmp_path / "text"
    make_folder(text, {"a": 2})
    (text / "train.csv").write_text("text,label\nx,a\n")
    assert not is_image_folder(text) and not is_image_folder(tmp_path / "nope")
    flat = tmp_path / "flat"
    save(flat / "x.png", GRAY)
    assert not is_image_folder(flat)  # images belong in label folders
    assert set(IMAGE_EXTENSIONS) == {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}


# --- references -------------------------------------------------------------------------------------


def test_reference_round_trip_and_subsets(tmp_path):
    root = tmp_path / "ref"
    make_folder(root, {"d1/a": 6, "d1/b": 6, "d2/c": 6}, shape=(5, 7))
    ds = load_dataset(root, mode="RGB", size=(4, 6), seed=3, name="mine")
    ref = dataset_ref(ds)
    assert ref["kind"] == "images" and ref["path"] == str(root) and ref["mode"] == "RGB" and ref["size"] == [4, 6]
    assert ref["listing"]["files"] == 18 and len(ref["listing"]["sha256"]) == 64 and ref["name"] == "mine"
    back = load_dataset_ref(json.loads(json.dumps(ref)))
    assert back.name == "mine" and back.label_to_domain == ds.label_to_domain and back.modality == "image"
    for k, sp in ds.splits.items():
        assert np.array_equal(back.split(k).items, sp.items) and back.split(k).labels.tolist() == sp.labels.tolist()
    sub = ds.subset(2, seed=1)
    again = load_dataset_ref(dataset_ref(sub))
    assert values_and_labels(again.split("train")) == values_and_labels(sub.split("train"))


def test_reference_detects_changes(tmp_path):
    root = tmp_path / "watch"
    make_folder(root, {"a": 4, "b": 4})
    ref = dataset_ref(load_dataset(root))
    f = root / "a" / "01.png"
    original = f.read_bytes()
    save(f, pattern(250))  # same name and shape, other pixels
    with pytest.raises(DataError, match=r"image folder '.*watch' has changed since the assembly was built "
                                        r"\(listing sha256 differs; 8 images now, 8 recorded\)"):
        load_dataset_ref(ref)
    f.write_bytes(original)
    assert len(load_dataset_ref(ref).split("train")) == len(load_dataset(root).split("train"))
    save(root / "b" / "new.png", pattern(9))
    with pytest.raises(DataError, match=r"9 images now, 8 recorded"):
        load_dataset_ref(ref)
    (root / "b" / "new.png").unlink()
    (root / "a" / "00.png").write_text("broken")  # a changed file that no longer decodes: still "changed"
    with pytest.raises(DataError, match=r"has changed since the assembly was built"):
        load_dataset_ref(ref)
    (root / "a" / "00.png").unlink()
    (root / "a" / "01.png").unlink()
    (root / "a" / "02.png").unlink()
    (root / "a" / "03.png").unlink()
    with pytest.raises(DataError, match=r"has changed since .*label folder '.*watch/a' has no images"):
        load_dataset_ref(ref)
    shutil.rmtree(root)
    with pytest.raises(DataError, match=r"the image folder '.*watch' this assembly was built from is missing"):
        load_dataset_ref(ref)
    with pytest.raises(ConfigError, match="malformed image folder dataset reference"):
        load_dataset_ref({"kind": "images", "path": str(root)})
    with pytest.raises(ConfigError, match="valid kinds: 'builtin', 'files', 'images'"):
        load_dataset_ref({"kind": "pictures"})


# --- built-in image datasets ------------------------------------------------------------------------


def test_image_datasets_constants():
    assert IMAGE_DATASETS == ("mnist", "fashion-mnist") and TEXT_DATASETS == ("clinc150",)
    assert set(IMAGE_DATASETS) | set(TEXT_DATASETS) == set(DATASETS)


def test_mnist_has_train_val_test_and_domains(data_dir):
    mnist_dir = data_dir / "mnist"
    assert (mnist_dir / "train-images-idx3-ubyte.gz").is_file(), f"MNIST missing under {mnist_dir}"
    ds = load_dataset("mnist", data_dir, download=False, progress=False)
    assert ds.modality == "image" and ds.split_names == ["train", "val", "test"]
    for sp in ds.splits.values():
        assert isinstance(sp.items, np.ndarray) and sp.items.dtype == np.uint8 and sp.items.shape[1:] == (28, 28)
    assert len(ds.split("train")) + len(ds.split("val")) == 60000 and len(ds.split("test")) == 10000
    assert set(ds.split("val").labels.tolist()) == set(ds.labels)  # every digit is validated
    assert ds.domains == ["high", "low"] and ds.domain_of("7") == "high"
    ref = dataset_ref(ds)
    assert ref["kind"] == "builtin" and ref["name"] == "mnist"
    back = load_dataset_ref(ref)
    assert np.array_equal(back.split("val").items, ds.split("val").items)


def test_missing_pillow_gives_install_hint(monkeypatch):
    png = encoded(GRAY, "PNG")
    monkeypatch.setitem(sys.modules, "PIL", None)  # "from PIL import Image" now fails
    with pytest.raises(DependencyError, match=r"reading images needs the optional package 'pillow'.*manyfold\[images\]"):
        read_image(png)
