"""Images in HTTP requests: base64 strings or uploaded files -> checked, decoded uint8 arrays.

Every limit is checked before a single pixel is decoded: the number of images,
each image's bytes, each image's pixels (width x height read from its header,
so a small "decompression bomb" file is refused without allocating it) and the
pixels of the whole request. Only then is each image decoded with
:func:`manyfold.data.read_image` (its one-line errors, prefixed with the item).
A refusal is an :class:`ImageRefused` carrying the HTTP status (413 over a
limit, 415 not an image content type, 422 not an image) and the field it names
(``images.3``, ``image``, ``files.1``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import re
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._exceptions import InputError

__all__ = ["ImageLimits", "ImageRefused", "ImageSource", "b64_image", "check_count", "decode_images", "image_content_type_ok",
           "TAKES_IMAGES", "TAKES_TEXTS"]

#: what a text-fed image assembly answers (and the CLI says)
TAKES_IMAGES = "this assembly takes images: send 'images' (base64) or upload files"
#: what an image-fed text assembly answers
TAKES_TEXTS = "this assembly takes texts: send 'items' (a list of texts) or 'item' (one text)"

_DATA_URL = re.compile(r"^data:[^,;]*(;[^,;]*)*;base64,", re.IGNORECASE)
_SPACE = re.compile(r"\s+")


class ImageRefused(InputError):
    """An image of a request that is refused: ``status`` (413, 415 or 422) and the ``field`` it names."""

    def __init__(self, status: int, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.status, self.field = status, field


@dataclass(frozen=True)
class ImageLimits:
    """The per-image and per-request limits (see :class:`~manyfold.serve.ServeConfig`)."""

    max_bytes: int
    max_pixels: int
    max_request_pixels: int
    max_images: int

    @classmethod
    def of(cls, config: Any) -> "ImageLimits":
        return cls(config.max_image_bytes, config.max_image_pixels, config.max_request_pixels,
                   config.max_images_per_request)


@dataclass(frozen=True)
class ImageSource:
    """One image of a request before decoding: its ``field``, the file name if uploaded, and its bytes or base64."""

    field: str
    data: bytes | str
    filename: str | None = None


def image_content_type_ok(content_type: str | None) -> bool:
    """Whether an uploaded part's content type may hold an image: ``image/*``, ``application/octet-stream`` or none."""
    ct = (content_type or "").split(";")[0].strip().lower()
    return ct in ("", "application/octet-stream") or ct.startswith("image/")


def check_count(n: int, field: str, limits: ImageLimits) -> None:
    """413 when a request holds more than ``max_images_per_request`` images."""
    if n > limits.max_images:
        raise ImageRefused(413, field, f"{n} images; the limit is {limits.max_images} per request (max_images_per_request)")


def b64_image(text: str, field: str, max_bytes: int) -> bytes:
    """The bytes of a standard-base64 image (a ``data:...;base64,`` prefix, line breaks and missing padding are
    tolerated); 413 when it decodes to more than ``max_bytes``, checked from its length before decoding."""
    s = _DATA_URL.sub("", text, count=1) if text[:5].lower() == "data:" else text
    if _SPACE.search(s):
        s = _SPACE.sub("", s)
    if not s:
        raise ImageRefused(422, field, "empty (0 bytes)")
    s += "=" * (-len(s) % 4)
    size = len(s) // 4 * 3 - (s.endswith("==") + s.endswith("="))
    if size > max_bytes:
        raise ImageRefused(413, field, f"{size:,} bytes is more than max_image_bytes={max_bytes:,}")
    try:
        return base64.b64decode(s, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ImageRefused(422, field, f"not valid base64 ({exc}); send the standard base64 of the image file "
                                       "(A-Z a-z 0-9 + /, '=' padding)") from None


def _header(data: bytes) -> tuple[int | None, str | None]:
    """``(pixels, format)`` from the image's header, nothing decoded; ``(None, None)`` when unreadable
    (:func:`read_image` then says why). A Pillow decompression-bomb refusal gives its pixel count."""
    from ..data._images import _BOMB_PIXELS, _FORMATS, _pil

    Image = _pil()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=_FORMATS) as im:
                w, h = im.size
                return int(w) * int(h), im.format
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        found = _BOMB_PIXELS.search(str(exc))
        return (int(found.group(1)) if found else -1), None
    except Exception:  # not an image, corrupt header: read_image gives the one-line reason
        return None, None


def decode_images(sources: list[ImageSource], limits: ImageLimits, field: str = "images"
                  ) -> tuple[list[np.ndarray], list[dict[str, Any]]]:
    """The decoded images of one request and, per image, what the request log keeps (no pixels, no bytes):
    ``sha256`` of the file, ``width``, ``height``, ``mode`` (``L`` or ``RGB``), ``format``, ``bytes``.

    Raises :class:`ImageRefused`: every limit is checked for every image first, then each is decoded
    (``field`` names the images as a whole: too many, none).
    """
    from ..data import read_image

    if not sources:
        raise ImageRefused(422, field, "no image: send at least one")
    check_count(len(sources), field, limits)
    blobs: list[bytes] = []
    formats: list[str | None] = []
    total = 0
    for src in sources:
        data = b64_image(src.data, src.field, limits.max_bytes) if isinstance(src.data, str) else src.data
        if not data:
            raise ImageRefused(422, src.field, f"{_named(src)}empty (0 bytes)")
        if len(data) > limits.max_bytes:
            raise ImageRefused(413, src.field, f"{_named(src)}{len(data):,} bytes is more than "
                                               f"max_image_bytes={limits.max_bytes:,}")
        pixels, fmt = _header(data)
        if pixels is not None:
            if pixels < 0 or pixels > limits.max_pixels:
                shown = "more pixels than Pillow's decompression-bomb limit" if pixels < 0 else f"{pixels:,} pixels"
                raise ImageRefused(413, src.field, f"{_named(src)}{shown} is more than "
                                                   f"max_image_pixels={limits.max_pixels:,} (refused without decoding)")
            total += pixels
            if total > limits.max_request_pixels:
                raise ImageRefused(413, src.field, f"the images up to this one have {total:,} pixels in all, more than "
                                                   f"max_request_pixels={limits.max_request_pixels:,}")
        blobs.append(data)
        formats.append(fmt)
    images, info = [], []
    for src, data, fmt in zip(sources, blobs, formats):
        fh = io.BytesIO(data)
        fh.name = src.filename or src.field  # how read_image names it in its message
        try:
            arr = read_image(fh, max_bytes=limits.max_bytes, max_pixels=limits.max_pixels, mode="auto")
        except InputError as exc:
            raise ImageRefused(422, src.field, str(exc)) from None
        images.append(arr)
        info.append({"sha256": hashlib.sha256(data).hexdigest(), "width": int(arr.shape[1]), "height": int(arr.shape[0]),
                     "mode": "L" if arr.ndim == 2 else "RGB", "format": fmt, "bytes": len(data)})
    return images, info


def _named(src: ImageSource) -> str:
    return f"{src.filename!r}: " if src.filename else ""
