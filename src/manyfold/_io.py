"""Safe, atomic file I/O: JSON + safetensors, never pickle.

Every write goes to a temporary sibling first and is moved into place with
``os.replace``, so a crash or Ctrl-C leaves either the old file or the new one,
never half of one. Directories are written the same way (build in a temp dir,
then rename).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ._exceptions import ArtifactError

__all__ = [
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_dir",
    "read_json",
    "save_arrays",
    "load_arrays",
    "sha256_file",
    "manyfold_home",
]


def manyfold_home() -> Path:
    """The root of manyfold's registry and caches: ``$MANYFOLD_HOME`` or ``~/.manyfold``."""
    return Path(os.environ.get("MANYFOLD_HOME") or Path.home() / ".manyfold").expanduser()


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file + fsync + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as pretty, key-sorted JSON, atomically."""
    text = json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False)
    atomic_write_bytes(path, (text + "\n").encode("utf-8"))


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read JSON, turning a missing, truncated or corrupted file into an :class:`ArtifactError`."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ArtifactError(f"missing artifact file {str(path)!r}") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"corrupted or truncated JSON in {str(path)!r}: {exc}") from exc


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str], *, overwrite: bool = False) -> Iterator[Path]:
    """Build a directory in a temp sibling and rename it to ``path`` on success.

    On any exception (Ctrl-C included) the temp directory is removed and ``path``
    is untouched. With ``overwrite=True`` an existing ``path`` is replaced.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            if not overwrite:
                raise FileExistsError(f"{str(path)!r} already exists")
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.replace(path, old / "x")
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def save_arrays(path: str | os.PathLike[str], arrays: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None = None) -> None:
    """Save named numpy arrays as safetensors, atomically."""
    from safetensors.numpy import save

    clean = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
    atomic_write_bytes(path, save(clean, metadata=dict(metadata) if metadata else None))


def load_arrays(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Load a safetensors file into numpy arrays; a bad file is an :class:`ArtifactError`."""
    from safetensors.numpy import load

    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise ArtifactError(f"missing artifact file {str(path)!r}") from exc
    try:
        return dict(load(data))
    except Exception as exc:  # safetensors raises its own SafetensorError / ValueError
        raise ArtifactError(f"corrupted or truncated weights in {str(path)!r}: {exc}") from exc


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """The hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()
