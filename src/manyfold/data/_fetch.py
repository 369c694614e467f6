"""Where dataset files live, how they are checked, and how they are fetched.

* :data:`PINNED` is the one table of every file manyfold can fetch: its public
  URL and the pinned checksum that a local or downloaded copy must match.
* :func:`resolve_dir` finds the directory: explicit ``data_dir``, else
  ``$MANYFOLD_DATA``, else ``manyfold_home()/data``.
* :func:`ensure_files` checks what is there, downloads what is missing (urllib,
  tqdm bar, temp file, checksum, atomic ``os.replace``) and verifies local copies.
  A verification is remembered in memory per (path, size, mtime), so loading
  twice in one process hashes once.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._exceptions import DataError
from .._io import manyfold_home

__all__ = ["RemoteFile", "PINNED", "ENV_VAR", "default_data_root", "resolve_dir", "ensure_files", "verify_file"]

#: Environment variable naming the directory that contains ``clinc150/``, ``mnist/``, ...
ENV_VAR = "MANYFOLD_DATA"

CLINC150_COMMIT = "828f8093932c8fe6ca7936c3d2e52903b1c523de"
_CLINC_BASE = f"https://raw.githubusercontent.com/clinc/oos-eval/{CLINC150_COMMIT}/"
_MNIST_BASE = "https://ossci-datasets.s3.amazonaws.com/mnist/"
_FASHION_BASE = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"


@dataclass(frozen=True)
class RemoteFile:
    """One pinned file: where to get it and the checksum it must have.

    ``decompressed=True`` means the digest is of the gunzipped content, not of
    the ``.gz`` file (used for MNIST, whose well-known MD5s are of the content
    and whose ``.gz`` bytes differ between mirrors).
    """

    name: str
    url: str
    algo: str
    digest: str
    decompressed: bool = False


def _table() -> dict[str, dict[str, RemoteFile]]:
    clinc = {
        "data_full.json": ("sha256", "36923c3705a59e08fe9c3883d8bc2dd966ef93e22cb78ac41171782a698d56e0"),
        "data_oos_plus.json": ("sha256", "bfcca9ae515623541dc1983c94c4ed7cae9d26b42ae47d74b972e51bb6f7a21f"),
        "domains.json": ("sha256", "b947b579d3b8e74b06f93b01083d8efaff2888b43a3e362533bd88a6e1211b3a"),
    }
    # MNIST: the well-known MD5s of the *decompressed* IDX files (LeCun's originals).
    mnist = {
        "train-images-idx3-ubyte.gz": ("md5", "6bbc9ace898e44ae57da46a324031adb"),
        "train-labels-idx1-ubyte.gz": ("md5", "a25bea736e30d166cdddb491f175f624"),
        "t10k-images-idx3-ubyte.gz": ("md5", "2646ac647ad5339dbf082846283269ea"),
        "t10k-labels-idx1-ubyte.gz": ("md5", "27ae3e4e09519cfbb04c329615203637"),
    }
    # Fashion-MNIST: sha256 of the original .gz files (whose MD5s are the ones in
    # zalandoresearch/fashion-mnist's README: 8d4fb7e6..., 25c81989..., bef4ecab..., bb300cfd...).
    fashion = {
        "train-images-idx3-ubyte.gz": ("sha256", "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84"),
        "train-labels-idx1-ubyte.gz": ("sha256", "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845"),
        "t10k-images-idx3-ubyte.gz": ("sha256", "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073"),
        "t10k-labels-idx1-ubyte.gz": ("sha256", "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"),
    }
    return {
        "clinc150": {n: RemoteFile(n, _CLINC_BASE + "data/" + n, a, d) for n, (a, d) in clinc.items()},
        "mnist": {n: RemoteFile(n, _MNIST_BASE + n, a, d, decompressed=True) for n, (a, d) in mnist.items()},
        "fashion-mnist": {n: RemoteFile(n, _FASHION_BASE + n, a, d) for n, (a, d) in fashion.items()},
    }


#: ``{dataset folder name: {file name: RemoteFile}}`` -- every pinned URL and checksum.
PINNED: dict[str, dict[str, RemoteFile]] = _table()

# (absolute path, size, mtime_ns, digest) of files already verified in this process.
_VERIFIED: set[tuple[str, int, int, str]] = set()


def default_data_root() -> Path:
    """``$MANYFOLD_DATA`` if set, else ``manyfold_home()/data``."""
    env = os.environ.get(ENV_VAR)
    return Path(env).expanduser() if env else manyfold_home() / "data"


def resolve_dir(data_dir: str | os.PathLike[str] | None, folder: str, names: list[str]) -> tuple[Path, bool]:
    """The directory holding ``folder``'s files, and whether it was given explicitly.

    ``data_dir`` (or ``$MANYFOLD_DATA``, or the cache) may be the parent that
    contains ``folder/`` or the ``folder`` directory itself.
    """
    explicit = data_dir is not None
    root = Path(data_dir).expanduser() if explicit else default_data_root()
    if (root / folder).is_dir():
        return root / folder, explicit
    if root.name == folder or any((root / n).is_file() for n in names):
        return root, explicit
    return root / folder, explicit


def _key(path: Path, digest: str) -> tuple[str, int, int, str]:
    st = path.stat()
    return (str(path.resolve()), st.st_size, st.st_mtime_ns, digest)


def _hash_bytes(algo: str, data: bytes) -> str:
    return hashlib.new(algo, data).hexdigest()


def _hash_file(path: Path, rf: RemoteFile) -> str:
    h = hashlib.new(rf.algo)
    opener: Any = gzip.open if rf.decompressed else open
    try:
        with opener(path, "rb") as fh:
            while block := fh.read(1 << 20):
                h.update(block)
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise DataError(f"{str(path)!r} is not a valid gzip file (truncated or corrupted): {exc}") from exc
    return h.hexdigest()


def _mismatch(path: Path, rf: RemoteFile, actual: str, source: str) -> DataError:
    what = "decompressed content of " if rf.decompressed else ""
    return DataError(
        f"checksum mismatch for the {what}{source} {str(path)!r}: expected {rf.algo} {rf.digest}, "
        f"got {actual}. The file is corrupted, truncated or not the pinned version; delete it "
        f"(it is then downloaded again) or replace it with a copy of {rf.url}"
    )


def verify_file(path: str | os.PathLike[str], rf: RemoteFile, content: bytes | None = None) -> None:
    """Check ``path`` against its pinned checksum; a mismatch is a :class:`DataError`.

    For a ``decompressed`` check, pass the already-gunzipped ``content`` to avoid
    decompressing twice. A success is remembered per (path, size, mtime).
    """
    path = Path(path)
    key = _key(path, rf.digest)
    if key in _VERIFIED:
        return
    if content is not None and rf.decompressed:
        actual = _hash_bytes(rf.algo, content)
    else:
        actual = _hash_file(path, rf)
    if actual != rf.digest:
        raise _mismatch(path, rf, actual, "local file")
    _VERIFIED.add(key)


def _urlopen(url: str, timeout: float) -> Any:
    """Open ``url`` (module-level so tests can serve local bytes without a network)."""
    req = urllib.request.Request(url, headers={"User-Agent": "manyfold-data/0.1"})
    return urllib.request.urlopen(req, timeout=timeout)  # noqa: S310 -- fixed https/http URLs from PINNED


def _manual_hint(directory: Path, folder: str, names: list[str]) -> str:
    urls = ", ".join(PINNED[folder][n].url for n in names)
    return (
        f"To supply the files by hand, download {urls} into {str(directory)!r} and pass "
        f"--data-dir {str(directory.parent)!r} (or data_dir=...), or set {ENV_VAR} to the "
        f"directory that contains {folder + '/'!r}"
    )


def _download(rf: RemoteFile, dest: Path, folder: str, *, progress: bool, timeout: float = 60.0) -> None:
    """Fetch ``rf`` to a temp file beside ``dest``, verify it, then ``os.replace`` it into place."""
    from tqdm.auto import tqdm

    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        h = hashlib.new(rf.algo)
        with os.fdopen(fd, "wb") as out:
            try:
                with _urlopen(rf.url, timeout) as resp:
                    headers = getattr(resp, "headers", None)
                    total = headers.get("Content-Length") if headers is not None else None
                    with tqdm(
                        total=int(total) if total else None, unit="B", unit_scale=True, unit_divisor=1024,
                        desc=f"{folder}/{rf.name}", disable=not progress, leave=False,
                    ) as bar:
                        while block := resp.read(1 << 16):
                            out.write(block)
                            h.update(block)
                            bar.update(len(block))
            except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
                reason = getattr(exc, "reason", None) or exc
                raise DataError(
                    f"could not download {rf.url}: {reason}. " + _manual_hint(dest.parent, folder, [rf.name])
                ) from exc
            out.flush()
            os.fsync(out.fileno())
        actual = _hash_file(tmp, rf) if rf.decompressed else h.hexdigest()
        if actual != rf.digest:
            raise _mismatch(dest, rf, actual, f"file downloaded from {rf.url} as")
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    _VERIFIED.add(_key(dest, rf.digest))


def ensure_files(
    folder: str,
    names: list[str],
    data_dir: str | os.PathLike[str] | None,
    *,
    download: bool,
    progress: bool,
) -> Path:
    """Make sure ``folder``'s ``names`` are present and verified; return their directory.

    Missing files are downloaded when ``download`` is true, else a
    :class:`DataError` names the directory and the missing files. Present files
    are verified now, except ``decompressed`` checks, which the caller does with
    :func:`verify_file` on the content it decompresses anyway.
    """
    directory, explicit = resolve_dir(data_dir, folder, names)
    missing = [n for n in names if not (directory / n).is_file()]
    if missing and not download:
        where = "the given data_dir" if explicit else f"the data directory (from {ENV_VAR} or the cache)"
        raise DataError(
            f"{folder} files missing from {where} {str(directory)!r}: {', '.join(missing)}; "
            f"pass download=True to fetch them. " + _manual_hint(directory, folder, missing)
        )
    for n in missing:
        _download(PINNED[folder][n], directory / n, folder, progress=progress)
    for n in names:
        rf = PINNED[folder][n]
        if n not in missing and not rf.decompressed:
            verify_file(directory / n, rf)
    return directory
