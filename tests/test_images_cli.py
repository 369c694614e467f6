"""Image assemblies from the command line: a folder of pictures in, CNN experts trained from scratch, pictures out.

Tiny synthetic pictures with known answers (a horizontal bar, a vertical bar, a dot); no generalist.
"""

from __future__ import annotations

import zlib
import struct

import numpy as np
import pytest

from manyfold._cli import main

Image = pytest.importorskip("PIL.Image", reason="Pillow not installed: pip install 'manyfold[images]'")


def _folder(root, n=14, labels=("hbar", "vbar", "dot")):
    rng = np.random.default_rng(0)
    for lab in labels:
        (root / lab).mkdir(parents=True)
        for i in range(n):
            a = (rng.random((12, 12)) * 60).astype(np.uint8)
            if lab == "hbar":
                a[5:7, :] = 255
            elif lab == "vbar":
                a[:, 5:7] = 255
            else:
                a[4:8, 4:8] = 255
            Image.fromarray(a).save(root / lab / f"{i}.png")
    return root


def run(capsys, *args):
    code = 0
    try:
        main([str(a) for a in args])
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


def _bomb_png(path, side=20000):
    """A real 1-bit PNG of side x side pixels: tiny on disk, 50 MB once decoded."""
    raw = zlib.compress(b"".join(b"\x00" + b"\x00" * ((side + 7) // 8) for _ in range(side)), 9)

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0))
                     + chunk(b"IDAT", raw) + chunk(b"IEND", b""))
    return path


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return _folder(tmp_path_factory.mktemp("pics") / "shapes")


def test_a_folder_of_pictures_becomes_an_assembly(shapes, tmp_path, capsys):
    code, out, err = run(capsys, "assemble", shapes, "--name", "shapes", "--generalist", "none")
    assert code == 0, err
    assert "3 labels" in out and "saved assembly 'shapes'" in out
    code, out, err = run(capsys, "predict", "shapes", shapes / "dot" / "0.png", shapes / "hbar" / "1.png")
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[0].startswith("dot") and lines[1].startswith("hbar")
    code, out, err = run(capsys, "evaluate", "shapes")
    assert code == 0, err
    acc = [ln for ln in out.splitlines() if ln.startswith("in_scope_accuracy_closed")][0]
    assert float(acc.split()[-1]) >= 0.9

    # bad pictures and the wrong kind of item: one line each, exit 2
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    _bomb_png(tmp_path / "huge.png")
    for bad, words in ((tmp_path / "empty.png", "empty"), (tmp_path / "corrupt.png", "corrupt.png"),
                       (tmp_path / "huge.png", "pixels"), ("what is this", "takes images")):
        code, out, err = run(capsys, "predict", "shapes", bad)
        assert code == 2 and err.startswith("error:") and len(err.strip().splitlines()) == 1, (bad, err)
        assert words in err, (bad, err)


def test_a_picture_sent_to_a_text_assembly_is_refused(shapes, capsys):
    code, _, err = run(capsys, "assemble", "examples/support.csv", "--name", "txt", "--encoder", "hashing:dim=128",
                       "--generalist", "none")
    assert code == 0, err
    code, out, err = run(capsys, "predict", "txt", "--input", shapes / "dot")
    assert code == 2 and err.startswith("error:") and len(err.strip().splitlines()) == 1


def test_a_folder_with_one_class_is_refused(tmp_path, capsys):
    one = _folder(tmp_path / "one", labels=("dot",))
    code, _, err = run(capsys, "assemble", one, "--generalist", "none")
    assert code == 2 and "at least 2 labels" in err and len(err.strip().splitlines()) == 1
