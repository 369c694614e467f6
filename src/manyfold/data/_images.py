"""Images: :func:`read_image` decodes one image safely; a folder of labelled images loads as a :class:`Dataset`.

:func:`read_image` is the one place where untrusted image bytes (a user's file, an
HTTP upload) are decoded. It refuses, with one :class:`InputError` line naming the
source, anything empty, too large, not an image, corrupt or truncated, and any
image whose header declares more pixels than allowed -- before a single pixel is
decoded, so a small "decompression bomb" file cannot allocate gigabytes.

:func:`load_image_folder` reads ``root/label/*.png`` (or ``root/domain/label/*.png``,
optionally inside ``train/``, ``val/``, ``test/`` folders) into an image dataset,
split exactly like users' text files, with a reference that detects any change to
the folder (:func:`load_image_folder_ref`).
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import stat
import warnings
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._exceptions import ConfigError, DataError, InputError, ManyfoldError, missing_dependency
from ._dataset import Dataset, Split
from ._files import (AUTO_OOS, FORMATS, ROLES, _check_options, check_label_counts, not_found, resolve_shares,
                     split_indices)

__all__ = [
    "IMAGE_EXTENSIONS",
    "IMAGE_MODES",
    "read_image",
    "is_image_folder",
    "load_image_folder",
    "load_image_folder_ref",
]

#: The file extensions an image folder's images may have (any case).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
#: The values of the ``mode`` option: keep grayscale as it is (``"auto"``), force grayscale, force RGB.
IMAGE_MODES = ("auto", "L", "RGB")
_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "WEBP")  # what Pillow may identify the bytes as; nothing else is tried
_FORMAT_NAMES = "PNG, JPEG, BMP, GIF, WebP"
_GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "F", "I;16", "I;16L", "I;16B", "I;16N"})
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
MAX_BYTES, MAX_PIXELS = 20_000_000, 40_000_000  # read_image's defaults, also used for every image of a folder
_SPLIT_FOLDERS = {stem: role for role, stems in ROLES.items() for stem in stems}
_BOMB_PIXELS = re.compile(r"\((\d+) pixels\)")


def _pil() -> Any:
    """The ``PIL.Image`` module, or a :class:`DependencyError` with the install hint."""
    try:
        from PIL import Image
    except ImportError:
        raise missing_dependency("pillow", "images", "reading images") from None
    return Image


def _check_limit(value: Any, option: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ConfigError(f"{option} must be a positive int, got {value!r}")
    return int(value)


def _check_mode(mode: Any) -> str:
    if mode not in IMAGE_MODES:
        raise ConfigError(f"unknown image mode {mode!r}; valid modes: {', '.join(map(repr, IMAGE_MODES))}")
    return mode


def _check_size(size: Any) -> tuple[int, int] | None:
    """``size`` as ``(height, width)``: ``None``, a positive int (a square) or two positive ints."""
    def ok(v: Any) -> bool:
        return not isinstance(v, bool) and isinstance(v, (int, np.integer)) and v >= 1

    if size is None:
        return None
    if ok(size):
        return int(size), int(size)
    if isinstance(size, (tuple, list)) and len(size) == 2 and all(ok(v) for v in size):
        return int(size[0]), int(size[1])
    raise ConfigError(f"size must be None, a positive int or (height, width) of positive ints, got {size!r}")


# --- one image ---------------------------------------------------------------------------------------


def _source_bytes(source: Any, max_bytes: int) -> tuple[bytes, str]:
    """The bytes of ``source`` (at most ``max_bytes``) and how messages name it."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(os.fspath(source)).expanduser()
        name = repr(os.fspath(source))
        try:
            st = path.stat()
            if stat.S_ISDIR(st.st_mode):
                raise InputError(f"{name} is a folder, not an image file")
            if stat.S_ISREG(st.st_mode) and st.st_size > max_bytes:
                raise InputError(f"{name}: {st.st_size:,} bytes is more than max_bytes={max_bytes:,}")
            with open(path, "rb") as fh:
                data = fh.read(max_bytes + 1)
        except FileNotFoundError:
            raise InputError(f"no such image file {name}") from None
        except OSError as exc:
            raise InputError(f"cannot read image file {name}: {exc.strerror or exc}") from None
    elif isinstance(source, (bytes, bytearray, memoryview)):
        data, name = bytes(source), "the image bytes"
    elif callable(getattr(source, "read", None)):
        label = getattr(source, "name", None)
        name = repr(os.fspath(label)) if isinstance(label, (str, os.PathLike)) else "the image file object"
        try:
            data = source.read(max_bytes + 1)
        except OSError as exc:
            raise InputError(f"cannot read image {name}: {exc.strerror or exc}") from None
        if isinstance(data, str):
            raise InputError(f"image {name} is open in text mode; open it in binary mode ('rb')")
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise InputError(f"reading image {name} gave {type(data).__name__}, not bytes")
        data = bytes(data)
    else:
        raise InputError(f"read_image needs a path, bytes or a binary file object, not {type(source).__name__}")
    if not data:
        raise InputError(f"{name}: empty file (0 bytes)")
    if len(data) > max_bytes:
        shown = f"{len(data):,} bytes" if isinstance(source, (bytes, bytearray, memoryview)) else "the data"
        raise InputError(f"{name}: {shown} is more than max_bytes={max_bytes:,}")
    return data, name


def _gray_palette(im: Any) -> bool:
    pal = im.getpalette() or []
    return all(pal[i] == pal[i + 1] == pal[i + 2] for i in range(0, len(pal) - 2, 3))


def _convert(im: Any, mode: str) -> Any:
    """``im`` as a Pillow ``"L"`` or ``"RGB"`` image, following ``mode`` (see :func:`read_image`)."""
    Image = _pil()
    gray = im.mode in _GRAY_MODES or (im.mode == "P" and _gray_palette(im))
    if im.mode.startswith("I") or im.mode == "F":  # 16-bit (or 32-bit) grayscale: scale into 0-255
        arr = np.asarray(im).astype(np.float64)
        if im.mode != "F":
            arr = arr / 257.0
        im = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8))
    if im.mode in _ALPHA_MODES or "transparency" in im.info:  # transparent parts show on white, as viewers draw them
        white = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(white, im.convert("RGBA")).convert("RGB")
    target = "L" if mode == "L" or (mode == "auto" and gray) else "RGB"
    return im if im.mode == target else im.convert(target)


def _decode(data: bytes, name: str, *, max_pixels: int, mode: str, size: tuple[int, int] | None = None) -> np.ndarray:
    """Decode ``data`` into a uint8 ``(H, W)`` or ``(H, W, 3)`` array; every failure is an :class:`InputError`."""
    Image = _pil()
    from PIL import ImageOps, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            # Pillow warns past MAX_IMAGE_PIXELS and raises past twice that: make both refusals.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=_FORMATS) as im:
                w, h = im.size  # from the header: nothing is decoded yet
                if w * h > max_pixels:
                    raise InputError(f"{name}: {w}x{h} = {w * h:,} pixels is more than max_pixels={max_pixels:,}")
                if w * h == 0:
                    raise InputError(f"{name}: the image has zero size ({w}x{h})")
                im.load()  # the first frame of an animation
                out = _convert(ImageOps.exif_transpose(im), mode)
                if size is not None and out.size != (size[1], size[0]):
                    out = out.resize((size[1], size[0]), Image.Resampling.BILINEAR)
                return np.array(out, dtype=np.uint8)
    except ManyfoldError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        found = _BOMB_PIXELS.search(str(exc))
        pixels = f"{int(found.group(1)):,} pixels" if found else "its size"
        limit = Image.MAX_IMAGE_PIXELS
        raise InputError(
            f"{name}: {pixels} is more than max_pixels={max_pixels:,} or Pillow's decompression-bomb limit "
            f"(PIL.Image.MAX_IMAGE_PIXELS={limit if limit is None else format(limit, ',')}); refused without decoding"
        ) from None
    except UnidentifiedImageError:
        raise InputError(f"{name} is not an image (or not one of {_FORMAT_NAMES})") from None
    except MemoryError:
        raise
    except Exception as exc:  # Pillow's decoders raise OSError, SyntaxError, ValueError, EOFError, struct.error, ...
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"{name} is a corrupt or truncated image: {detail}") from exc


def read_image(
    source: str | os.PathLike[str] | bytes | Any,
    *,
    max_bytes: int = 20_000_000,
    max_pixels: int = 40_000_000,
    mode: str = "auto",
) -> np.ndarray:
    """Decode one PNG, JPEG, BMP, GIF or WebP image into a ``uint8`` numpy array.

    ``source`` is a path, the file's bytes, or a binary file object. ``mode``:
    ``"auto"`` keeps a grayscale image as ``(H, W)`` (also 1-bit, 16-bit -- scaled
    to 0-255 -- and gray-palette images) and makes everything else RGB ``(H, W, 3)``;
    ``"L"`` forces grayscale, ``"RGB"`` forces RGB. Animated images give their
    first frame; transparent pixels are drawn on white; a JPEG's EXIF orientation
    is applied.

    Refused with one :class:`InputError` line naming the source: an empty file,
    more than ``max_bytes`` bytes, bytes that are not an image of those formats,
    a corrupt or truncated image, and more than ``max_pixels`` pixels -- read from
    the header before anything is decoded (Pillow's own decompression-bomb guard
    is made to raise too, and is mapped the same way).
    """
    max_bytes = _check_limit(max_bytes, "max_bytes")
    max_pixels = _check_limit(max_pixels, "max_pixels")
    _check_mode(mode)
    data, name = _source_bytes(source, max_bytes)
    return _decode(data, name, max_pixels=max_pixels, mode=mode)


# --- image folders: layout ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Item:
    path: Path
    label: str
    domain: str | None


def _entries(folder: Path) -> list[Path]:
    """The visible entries of ``folder`` (names starting with ``.`` are skipped), sorted by name."""
    try:
        return sorted((p for p in folder.iterdir() if not p.name.startswith(".")), key=lambda p: p.name)
    except OSError as exc:
        raise DataError(f"cannot list folder {str(folder)!r}: {exc.strerror or exc}") from None


def _is_image_file(p: Path) -> bool:
    return p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()


def _images_in(folder: Path) -> list[Path]:
    return [p for p in _entries(folder) if _is_image_file(p)]


def _held(folder: Path) -> str:
    held = [p.name + ("/" if p.is_dir() else "") for p in _entries(folder)]
    return ", ".join(held[:10]) + (" ..." if len(held) > 10 else "") if held else "nothing"


def is_image_folder(folder: str | os.PathLike[str]) -> bool:
    """Whether :func:`~manyfold.data.load_dataset` reads ``folder`` as images rather than data files.

    True when image files sit one to three folders down (``label/x.png``,
    ``domain/label/x.png``, ``train/domain/label/x.png``) and there is no
    ``train.<ext>`` data file at the top.
    """
    root = Path(folder)
    if not root.is_dir():
        return False
    if any(p.suffix.lower() in FORMATS and p.stem.lower() in _SPLIT_FOLDERS and p.is_file() for p in _entries(root)):
        return False  # train.csv & co.: a folder of data files
    level = [p for p in _entries(root) if p.is_dir()]
    for _ in range(3):
        if any(_is_image_file(p) for d in level for p in _entries(d)):
            return True
        level = [p for d in level for p in _entries(d) if p.is_dir()]
    return False


def _oos_names(oos_label: str | None) -> tuple[str, ...]:
    if oos_label is None:
        return ()
    return AUTO_OOS if oos_label == "auto" else (oos_label.strip(),)


def _scan_labels(folder: Path, oos_names: tuple[str, ...]) -> tuple[list[_Item], bool]:
    """The images under ``folder`` as ``label/x.png`` or ``domain/label/x.png``, and whether it has domains.

    The out-of-scope label's folder may sit at the first level beside domains.
    """
    children = _entries(folder)
    loose = [p.name for p in children if _is_image_file(p)]
    if loose:
        shown = ", ".join(loose[:5]) + (" ..." if len(loose) > 5 else "")
        raise DataError(
            f"folder {str(folder)!r} holds image files directly ({shown}); put each image in a subfolder named by its label"
        )
    dirs = [p for p in children if p.is_dir()]
    if not dirs:
        raise DataError(f"folder {str(folder)!r} has no label subfolders of images; it holds: {_held(folder)}")
    labels: dict[str, list[Path]] = {}
    domains: dict[str, list[Path]] = {}
    for d in dirs:
        images = _images_in(d)
        subs = [s for s in _entries(d) if s.is_dir() and _images_in(s)]
        if images and subs:
            raise DataError(
                f"folder {str(d)!r} holds both images and subfolders of images ({subs[0].name}/); "
                "a folder is a label (its images) or a domain (its label subfolders), not both"
            )
        if images:
            labels[d.name] = images
        elif subs:
            domains[d.name] = [s for s in _entries(d) if s.is_dir()]
        else:
            raise DataError(
                f"label folder {str(d)!r} has no images ({', '.join(IMAGE_EXTENSIONS)}); it holds: {_held(d)}"
            )
    if domains and labels:
        flat = [lab for lab in labels if lab not in oos_names]
        if flat:
            raise DataError(
                f"folder {str(folder)!r} mixes layouts: {flat[0]!r} holds images (a label) but "
                f"{next(iter(domains))!r} holds label subfolders (a domain); use label/image or "
                "domain/label/image throughout"
            )
    items = [_Item(p, lab, None) for lab, paths in labels.items() for p in paths]
    seen: dict[str, str] = {}
    for dom, subs in domains.items():
        for s in subs:
            images = _images_in(s)
            if not images:
                raise DataError(
                    f"label folder {str(s)!r} has no images ({', '.join(IMAGE_EXTENSIONS)}); it holds: {_held(s)}"
                )
            if s.name in labels:
                raise DataError(f"label {s.name!r} under {str(folder)!r} is both a top-level folder and in domain {dom!r}")
            if seen.setdefault(s.name, dom) != dom:
                raise DataError(f"label {s.name!r} under {str(folder)!r} is in two domains: {seen[s.name]!r} and {dom!r}")
            items.extend(_Item(p, s.name, dom) for p in images)
    return items, bool(domains)


def _split_roots(root: Path) -> dict[str, Path]:
    """``{"data": root}``, or ``{"train": ..., "val": ..., "test": ...}`` when ``root`` holds split folders."""
    children = _entries(root)
    split_dirs: dict[str, list[Path]] = {}
    for p in children:
        role = _SPLIT_FOLDERS.get(p.name.lower())
        if role is not None and p.is_dir():
            split_dirs.setdefault(role, []).append(p)
    if not split_dirs:
        return {"data": root}
    names = ", ".join(p.name for ps in split_dirs.values() for p in ps)
    if "train" not in split_dirs:
        raise DataError(
            f"image folder {str(root)!r} has split folder(s) {names} but no train folder "
            "(split folders hold label subfolders: train/label/x.png)"
        )
    for role, dirs in split_dirs.items():
        if len(dirs) > 1:
            raise DataError(f"image folder {str(root)!r} has {len(dirs)} {role} folders: {', '.join(d.name for d in dirs)}; keep one")
    others = [p.name + ("/" if p.is_dir() else "") for p in children if p.is_dir() or _is_image_file(p)]
    others = [n for n in others if n.rstrip("/").lower() not in _SPLIT_FOLDERS]
    if others:
        raise DataError(
            f"image folder {str(root)!r} mixes split folders ({names}) with {', '.join(others[:5])}; "
            "with split folders, every label folder goes inside them"
        )
    return {role: split_dirs[role][0] for role in ROLES if role in split_dirs}


@dataclass(frozen=True)
class _Plan:
    """What a folder holds, before any image is read."""

    roots: dict[str, Path]
    items: dict[str, list[_Item]]
    shares: dict[str, float | None]
    derived: list[str]
    oos: str | None
    label_to_domain: dict[str, str]


def _plan(root: Path, oos_label: str | None, val_share: Any, test_share: Any) -> _Plan:
    roots = _split_roots(root)
    shares, derived = resolve_shares(roots, val_share, test_share)
    main = "data" if "data" in roots else "train"
    names = _oos_names(oos_label)
    items: dict[str, list[_Item]] = {}
    layouts: dict[str, bool] = {}
    for role, folder in roots.items():
        items[role], layouts[role] = _scan_labels(folder, names)
    for role, has_domains in layouts.items():
        if has_domains != layouts[main]:
            def kind(d: bool) -> str:
                return "domain/label/image" if d else "label/image"
            raise DataError(
                f"split folder {str(roots[role])!r} is laid out as {kind(has_domains)} but "
                f"{str(roots[main])!r} as {kind(layouts[main])}; use one layout"
            )

    every = {it.label for its in items.values() for it in its}
    if oos_label == "auto":
        hits = [lab for lab in AUTO_OOS if lab in every]
        if len(hits) > 1:
            raise DataError(
                f"image folder {str(root)!r} has both {hits[0]!r} and {hits[1]!r} label folders; "
                "name the out-of-scope one with oos_label="
            )
        oos = hits[0] if hits else None
    elif oos_label is not None:
        oos = oos_label.strip()
        if oos not in every:
            raise ConfigError(
                f"oos_label {oos!r} is not a label folder in {str(root)!r}; its labels: {', '.join(sorted(every)[:20])}"
            )
    else:
        oos = None

    label_to_domain: dict[str, str] = {}
    for role, its in items.items():
        for it in its:
            if it.domain is None or it.label == oos:
                continue
            if label_to_domain.setdefault(it.label, it.domain) != it.domain:
                raise DataError(
                    f"label {it.label!r} is in domain {label_to_domain[it.label]!r} in one split folder and "
                    f"{it.domain!r} in {str(roots[role])!r}"
                )
    counts = Counter(it.label for it in items[main] if it.label != oos)
    if len(counts) < 2:
        found = ", ".join(map(repr, sorted(counts))) or "none"
        raise DataError(
            f"image folder {str(roots[main])!r} needs at least 2 labels (label subfolders of images), found {len(counts)}: {found}"
        )
    check_label_counts(counts, str(roots[main]), "image")
    for role, its in items.items():
        for it in its:
            if it.label != oos and it.label not in counts:
                raise DataError(
                    f"label {it.label!r} of {str(roots[role])!r} has no images in the training folder {str(roots[main])!r}"
                )
    return _Plan(roots, items, shares, derived, oos, label_to_domain)


def _read_file(path: Path) -> bytes:
    data, _ = _source_bytes(path, MAX_BYTES)
    return data


def _listing_digest(lines: list[str]) -> str:
    return hashlib.sha256("".join(sorted(lines)).encode("utf-8")).hexdigest()


def _listing_line(root: Path, path: Path, data: bytes) -> str:
    return f"{path.relative_to(root).as_posix()}\t{len(data)}\t{hashlib.sha256(data).hexdigest()}\n"


# --- image folders: loading --------------------------------------------------------------------------


def load_image_folder(
    source: str | os.PathLike[str],
    *,
    mode: str = "auto",
    size: int | tuple[int, int] | None = None,
    oos_label: str | None = "auto",
    val_share: float | None = None,
    test_share: float | None = None,
    seed: int = 0,
    name: str | None = None,
) -> Dataset:
    """Load a folder of labelled images as an image :class:`Dataset` (``modality == "image"``).

    Layout: ``root/label/<images>`` (labels = subfolder names, no domains) or
    ``root/domain/label/<images>`` (the first level are domains), optionally
    inside ``train/``, ``val/`` (or ``valid``, ``validation``, ``dev``) and
    ``test/`` folders, which are then the splits. Images are files ending in one
    of :data:`IMAGE_EXTENSIONS`; other files and hidden entries are ignored.
    Missing splits are split off the training images as for text files (seeded,
    stratified; ``val_share=0.1`` and ``test_share=0.2`` for a folder without
    split folders, ``val_share=0.1`` and no test beside a ``train/`` folder).

    ``mode``: ``"L"`` / ``"RGB"`` convert every image; ``"auto"`` gives grayscale
    ``(H, W)`` when every image is grayscale, else RGB ``(H, W, 3)``. ``size``
    (an int or ``(H, W)``) resizes every image (bilinear). Items are one stacked
    ``(n, H, W[, 3])`` uint8 array per split when all images share a shape,
    else lists of arrays. ``oos_label`` as for files: ``"auto"`` takes a label
    folder named ``out_of_scope`` or ``oos`` as out-of-scope (it may sit at the
    top level beside domain folders). See :func:`~manyfold.data.load_dataset`.
    """
    mode = _check_mode(mode)
    size_hw = _check_size(size)
    _check_options(None, None, None, oos_label, seed, name)
    root = Path(os.path.abspath(Path(source).expanduser()))
    if not root.is_dir():
        raise not_found("dataset", os.fspath(source), f"no such image folder {str(root)!r}")
    plan = _plan(root, oos_label, val_share, test_share)

    lines: list[str] = []
    arrays: dict[str, list[np.ndarray]] = {}
    for role, its in plan.items.items():
        out = arrays[role] = []
        for it in its:
            try:
                data = _read_file(it.path)
                out.append(_decode(data, repr(str(it.path)), max_pixels=MAX_PIXELS, mode=mode, size=size_hw))
            except InputError as exc:
                raise DataError(f"image folder {str(root)!r}: {exc}") from None
            lines.append(_listing_line(root, it.path, data))
    every = [a for arrs in arrays.values() for a in arrs]
    if mode == "auto" and len({a.ndim for a in every}) > 1:  # some colour: make the gray ones RGB too
        arrays = {r: [np.repeat(a[:, :, None], 3, axis=2) if a.ndim == 2 else a for a in arrs] for r, arrs in arrays.items()}
        every = [a for arrs in arrays.values() for a in arrs]
    shapes = {a.shape for a in every}
    stacked = len(shapes) == 1

    def items_of(arrs: list[np.ndarray]) -> list | np.ndarray:
        if not stacked:
            return arrs
        return np.stack(arrs) if arrs else np.zeros((0, *next(iter(shapes))), dtype=np.uint8)

    main = "data" if "data" in plan.roots else "train"
    main_items = items_of(arrays[main])
    main_labels = np.array([it.label for it in plan.items[main]], dtype=str)
    parts = split_indices(main_labels.tolist(), plan.shares["val"] or 0.0, plan.shares["test"] or 0.0, seed)
    splits: dict[str, Split] = {}
    for role in ROLES:
        if role != "train" and role in plan.roots:
            splits[role] = Split(items_of(arrays[role]), np.array([it.label for it in plan.items[role]], dtype=str))
        elif role == "train" or role in plan.derived:
            idx = parts[role]
            chosen = main_items[idx] if stacked else [main_items[i] for i in idx.tolist()]
            splits[role] = Split(chosen, main_labels[idx])

    ds_name = name.strip() if name is not None else root.name
    ref = {
        "kind": "images",
        "path": str(root),
        "listing": {"sha256": _listing_digest(lines), "files": len(lines), "bytes": sum(int(s.split("\t")[1]) for s in lines)},
        "mode": mode,
        "size": None if size_hw is None else list(size_hw),
        "oos_label": plan.oos,
        "split": {
            "val_share": None if "val" in plan.roots else plan.shares["val"],
            "test_share": None if "test" in plan.roots else plan.shares["test"],
            "seed": int(seed),
            "derived": plan.derived,
        },
        "name": ds_name,
    }
    info = {"source": ref, "path": str(root), "format": "images", "shape": list(next(iter(shapes))) if stacked else None}
    return Dataset(ds_name, splits, plan.label_to_domain, plan.oos, "image", info)


def load_image_folder_ref(ref: Mapping[str, Any]) -> Dataset:
    """Rebuild an image-folder dataset from its reference; the folder must hold exactly the recorded files.

    The listing (every image's relative path, size and sha256) is checked before
    any image is decoded; a missing folder or any added, removed or changed image
    is a :class:`DataError` naming the folder.
    """
    try:
        root = Path(ref["path"])
        listing = ref["listing"]
        digest, n_files = str(listing["sha256"]), int(listing["files"])
        split = ref["split"]
        options = {
            "mode": ref["mode"], "size": ref["size"], "oos_label": ref["oos_label"],
            "val_share": split["val_share"], "test_share": split["test_share"], "seed": split["seed"],
            "name": ref["name"],
        }
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ConfigError(f"malformed image folder dataset reference (missing or bad field {exc}): {dict(ref)!r}") from None
    if not root.is_dir():
        raise DataError(f"the image folder {str(root)!r} this assembly was built from is missing")

    def changed(detail: str) -> DataError:
        return DataError(
            f"the image folder {str(root)!r} has changed since the assembly was built ({detail}); "
            "rebuild the assembly or restore the folder"
        )

    try:
        plan = _plan(root, options["oos_label"], options["val_share"], options["test_share"])
        lines = []
        for its in plan.items.values():
            for it in its:
                lines.append(_listing_line(root, it.path, _read_file(it.path)))
    except (DataError, InputError) as exc:
        raise changed(str(exc)) from None
    if _listing_digest(lines) != digest:
        raise changed(f"listing sha256 differs; {len(lines)} images now, {n_files} recorded")
    ds = load_image_folder(root, **options)
    if ds.info["source"]["listing"]["sha256"] != digest:  # changed between the check and the load
        raise changed("listing sha256 differs")
    return ds
