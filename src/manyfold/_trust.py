"""The one trust check: what manyfold accepts from a file it did not just write.

A registry manifest, the dataset reference inside it, and an expert package may
come from elsewhere (a copied registry, a shared package, an edited file).
Before anything they name is opened, hashed, loaded or contacted, it passes the
checks here; the registry, :func:`manyfold.data.load_dataset_ref` and
:func:`manyfold.packages.read_package` all use them.

* **Names, not paths.** A registry object is ``<kind>-<24 hex digits>`` (what
  :class:`~manyfold.Registry` writes), of the kind its slot expects; its
  members are exactly ``state.json`` and ``arrays.safetensors``, both required,
  both checksummed (sha256) and neither a symlink. A registry file named in a
  manifest (distillation pseudo-labels) matches the registry's own naming. A
  package member is one of the format's names (no absolute path, ``..``,
  backslash or drive).
* **Dataset references** name data, nothing else: a files reference names its
  file, or files directly inside its folder whose names say their split
  (``train.csv``, ``val.jsonl``, ...), by absolute path with a data-file
  extension and a sha256; an image folder is an absolute path; a built-in
  dataset takes no option but its ``variant``.
* **What needs an opt-in** (:func:`remote_needs`): a generalist that sends
  items over the network (:class:`~manyfold.OpenAIGeneralist`'s ``base_url``),
  the environment variable whose value it sends as an API key
  (``api_key_env``), and an encoder spec that is not built in (``st:...``, a
  local model folder or a hub id: files or downloads of someone's choosing).
  Opt in with ``trust_remote=True`` (:meth:`~manyfold.Registry.load`,
  ``ServeConfig``, ``assemble_from_packages``), ``manyfold --trust-remote
  COMMAND``, or ``MANYFOLD_TRUST_REMOTE=1`` in the environment.

Every refusal is one :class:`~manyfold.ArtifactError` line naming the file and
the bad value; a missing opt-in is its subclass :class:`~manyfold.TrustError`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ._exceptions import ArtifactError, ConfigError, TrustError

__all__ = [
    "TRUST_ENV", "OBJECT_KINDS", "OBJECT_MEMBERS", "check_digest", "object_entry", "object_file", "registry_file",
    "safe_member_name", "check_member", "check_dataset_ref", "builtin_encoder", "remote_needs", "trust_remote",
    "require_trust",
]

#: the environment variable that opts in to what :func:`remote_needs` lists (``1``, ``true``, ``yes`` or ``on``)
TRUST_ENV = "MANYFOLD_TRUST_REMOTE"
OBJECT_KINDS = ("expert", "router", "generalist", "policy", "summary")
OBJECT_MEMBERS = ("arrays.safetensors", "state.json")
_OBJECT_REF = re.compile(r"^(" + "|".join(OBJECT_KINDS) + r")-[0-9a-f]{24}$")
_DIGEST = re.compile(r"^[0-9a-f]{64}$")
_TRUE = ("1", "true", "yes", "on")
#: options a built-in dataset reference may carry (what the built-in loaders record)
_BUILTIN_OPTIONS = ("variant",)


def _short(value: Any, n: int = 80) -> str:
    r = repr(value)
    return r if len(r) <= n else r[: n - 3] + "..."


# -- registry objects and files -------------------------------------------------------------------


def check_digest(value: Any, where: str) -> str:
    """``value`` if it is a lower-case hex sha256 (64 digits), else an :class:`ArtifactError`."""
    if not isinstance(value, str) or not _DIGEST.match(value):
        raise ArtifactError(f"{where}: {_short(value)} is not a sha256 (64 lower-case hex digits)")
    return value


def object_entry(entry: Any, kind: str, where: str) -> tuple[str, dict[str, str]]:
    """The ``(ref, {member: sha256})`` of a manifest's object entry, checked.

    ``ref`` must be a registry object name of ``kind`` (``expert-<24 hex>``, ...)
    and the checksums must cover exactly :data:`OBJECT_MEMBERS`: nothing is
    joined onto the registry path that the registry did not name itself.
    """
    if not isinstance(entry, Mapping):
        raise ArtifactError(f"{where}: expected an object entry {{'ref', 'sha256'}}, got {_short(entry)}")
    ref = entry.get("ref")
    m = _OBJECT_REF.match(ref) if isinstance(ref, str) else None
    if m is None:
        raise ArtifactError(f"{where}: {_short(ref)} is not a registry object name "
                            f"(<kind>-<24 hex digits>, kind one of {', '.join(OBJECT_KINDS)})")
    if m.group(1) != kind:
        raise ArtifactError(f"{where}: object {ref!r} is a {m.group(1)}, and this entry needs a {kind}")
    sha = entry.get("sha256")
    if not isinstance(sha, Mapping) or set(sha) != set(OBJECT_MEMBERS):
        got = sorted(map(str, sha)) if isinstance(sha, Mapping) else _short(sha)
        raise ArtifactError(f"{where}: the checksums of {ref!r} must cover exactly {', '.join(OBJECT_MEMBERS)}; "
                            f"got {got}")
    return ref, {f: check_digest(sha[f], f"{where}: sha256 of {ref}/{f}") for f in OBJECT_MEMBERS}


def object_file(folder: Path, member: str, digest: str) -> Path:
    """``folder / member``: present, a regular file (no symlink) and matching ``digest``, else an ArtifactError."""
    from ._io import sha256_file

    path = folder / member
    if path.is_symlink():
        raise ArtifactError(f"artifact {str(path)!r} is a symlink; registry files are regular files")
    if not path.is_file():
        raise ArtifactError(f"missing artifact file {str(path)!r}")
    if sha256_file(path) != digest:
        raise ArtifactError(f"artifact {str(path)!r} is corrupted or truncated (checksum mismatch)")
    return path


def registry_file(root: Path, rel: Any, pattern: str, where: str) -> Path:
    """``root / rel`` for a file a manifest names inside the registry: ``rel`` must match ``pattern`` (a
    regular expression of the registry's own naming, matched whole) and stay inside ``root``."""
    if not isinstance(rel, str) or not re.fullmatch(pattern, rel):
        raise ArtifactError(f"{where}: {_short(rel)} is not a file name this registry writes")
    path = root / rel
    try:
        inside = path.resolve().is_relative_to(root.resolve())
    except OSError:
        inside = False
    if not inside:
        raise ArtifactError(f"{where}: {rel!r} leads out of the registry {str(root)!r}")
    return path


# -- package members ---------------------------------------------------------------------------------


def safe_member_name(name: Any) -> bool:
    """A relative name with no ``..`` part, backslash, NUL or drive, not absolute (zip members, registry files)."""
    return (isinstance(name, str) and bool(name) and not name.startswith(("/", "\\")) and "\\" not in name
            and "\x00" not in name and ".." not in name
            and not re.match(r"^[A-Za-z]:", name))


def check_member(name: Any, allowed: Iterable[str], what: str) -> str:
    """``name`` if it is a safe member name among ``allowed`` (the members ``what`` may hold), else an
    :class:`ArtifactError`."""
    allowed = tuple(allowed)
    if not safe_member_name(name):
        raise ArtifactError(f"member {name!r} has an unsafe path (absolute, '..' or a backslash)")
    if name not in allowed:
        raise ArtifactError(f"unexpected member {name!r}; {what} holds only {', '.join(allowed)}")
    return name


# -- dataset references --------------------------------------------------------------------------------


def _abs_path(value: Any, where: str) -> Path:
    if not isinstance(value, str) or not value or "\x00" in value or not os.path.isabs(value):
        raise ArtifactError(f"{where}: {_short(value)} is not an absolute path")
    return Path(value)


def check_dataset_ref(ref: Any, where: str = "dataset reference") -> None:
    """Check a dataset reference before anything it names is read (see the module docstring)."""
    from .data._files import FORMATS, ROLES

    if not isinstance(ref, Mapping):
        raise ConfigError(f"a dataset reference is a dict, not {type(ref).__name__}")
    kind = ref.get("kind")
    if kind == "builtin":
        options = ref.get("options") or {}
        if not isinstance(options, Mapping) or set(options) - set(_BUILTIN_OPTIONS):
            raise ArtifactError(f"{where}: a built-in dataset takes only the options {', '.join(_BUILTIN_OPTIONS)}; "
                                f"got {_short(options)}")
        d = ref.get("data_dir")
        if d is not None and (not isinstance(d, str) or "\x00" in d):
            raise ArtifactError(f"{where}: data_dir {_short(d)} is not a path")
    elif kind == "files":
        root = _abs_path(ref.get("path"), f"{where}: path")
        files = ref.get("files")
        for role, e in files.items() if isinstance(files, Mapping) else ():  # a malformed one: the loader says so
            if not isinstance(e, Mapping):
                continue
            p = _abs_path(e.get("path"), f"{where}: files[{role!r}].path")
            check_digest(e.get("sha256"), f"{where}: files[{role!r}].sha256")
            if p.suffix.lower() not in FORMATS:
                raise ArtifactError(f"{where}: {str(p)!r} is not a data file ({', '.join(FORMATS)})")
            if role == "data":
                ok = p == root
            else:
                ok = p.parent == root and p.stem.lower() in ROLES.get(str(role), ())
            if not ok:
                raise ArtifactError(f"{where}: files[{role!r}] names {str(p)!r}, which is not "
                                    + ("the reference's file" if role == "data" else
                                       f"a {role} file directly inside {str(root)!r}"))
    elif kind == "images":
        _abs_path(ref.get("path"), f"{where}: path")


# -- what needs the user's opt-in ------------------------------------------------------------------------


def builtin_encoder(spec: Any) -> bool:
    """Whether ``spec`` names only encoders manyfold ships (``hashing``, ``minilm``, ``concat:a+b`` of those, ...)."""
    from .encoders import encoder_names

    if not isinstance(spec, str) or not spec.strip():
        return False
    s = spec.strip()
    if s.startswith("concat:"):
        parts = [p for p in s[len("concat:"):].split("+") if p]
        return bool(parts) and all(builtin_encoder(p) for p in parts)
    if s.startswith("st:"):  # sentence-transformers: only the shipped aliases (st:minilm) are built in
        from .encoders._sentence_transformers import ST_ALIASES

        return s[3:].partition("?")[0] in ST_ALIASES
    return s.partition(":")[0] in encoder_names()


def remote_needs(encoder_spec: Any = None, generalist: Any = None) -> list[str]:
    """What a saved assembly (its encoder spec, its generalist's ``state.json`` config) or a package (its
    encoder spec) asks for that needs the user's opt-in, one phrase each; empty: nothing."""
    needs = []
    if encoder_spec is not None and not builtin_encoder(encoder_spec):
        needs.append(f"the encoder {_short(encoder_spec)}, which is not built in (a local model folder or a hub id)")
    if isinstance(generalist, Mapping):
        params = generalist.get("params") if isinstance(generalist.get("params"), Mapping) else {}
        if generalist.get("type") == "OpenAIGeneralist":
            needs.append(f"a remote generalist at {_short(params.get('base_url'))}, which is sent the items it escalates")
            if params.get("api_key_env"):
                needs.append(f"the value of the environment variable {_short(params.get('api_key_env'))}, "
                             "sent to it as the API key")
        elif "encoder" in params and not builtin_encoder(params["encoder"]):
            needs.append(f"the generalist's encoder {_short(params['encoder'])}, which is not built in "
                         "(a local model folder or a hub id)")
    return needs


def trust_remote(value: Any = None) -> bool:
    """The opt-in: ``value`` when given (a bool), else ``$MANYFOLD_TRUST_REMOTE`` (``manyfold --trust-remote`` sets it)."""
    if value is None:
        return os.environ.get(TRUST_ENV, "").strip().lower() in _TRUE
    if not isinstance(value, bool):
        raise ConfigError(f"trust_remote must be True, False or None (then ${TRUST_ENV} decides), got {value!r}")
    return value


def require_trust(needs: list[str], what: str, value: Any = None) -> None:
    """A :class:`TrustError` naming ``needs`` unless the user opted in (:func:`trust_remote`)."""
    if needs and not trust_remote(value):
        raise TrustError(f"{what} asks for {'; '.join(needs)}. Load it only if you trust where it came from: "
                         f"trust_remote=True, `manyfold --trust-remote COMMAND ...` or {TRUST_ENV}=1")
