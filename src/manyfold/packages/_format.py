"""The expert package file (``*.mfx``, format 1): write it, and read it back without trusting it.

A package is a zip archive of exactly these members::

    package.json          format, card, modality, routing encoder (id, spec, dim), the expert's
                          state config, summary metadata, creator, licence, created, manyfold version
    weights.safetensors   the expert's arrays
    summary.safetensors   the routing summary (prototypes, label index, weights, spreads, counts)
    MANIFEST.sha256       "<sha256>  <member>" for every other member (sha256sum format)
    SIGNATURE             optional: ed25519 signature of the bytes of MANIFEST.sha256 (JSON)

Reading never extracts to disk, never unpickles and never imports a name from
the file: members are read into memory with limits (count, size, compression
ratio), checked against the manifest, and the expert is rebuilt only through a
class registered with :func:`manyfold._components.register_component`. Every
refusal is one :class:`~manyfold.ArtifactError` line naming the package.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import time
import zipfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._components import component_class
from .._exceptions import ArtifactError, ConfigError, ManyfoldError
from .._io import atomic_write_bytes
from .._trust import check_member, safe_member_name
from ..experts import ExpertCard, check_name
from ._sign import KeySource, fingerprint, load_public_keys, parse_signature, sign_manifest, verify_signature
from ._summary import RoutingSummary, summarize

__all__ = ["FORMAT_VERSION", "ExpertPackage", "pack_expert", "read_package", "check_collisions"]

#: the package format this manyfold writes; it reads :data:`READS`
FORMAT_VERSION = 1
READS = (1,)
KIND = "manyfold-expert-package"
PACKAGE_JSON, WEIGHTS, SUMMARY, MANIFEST, SIGNATURE = (
    "package.json", "weights.safetensors", "summary.safetensors", "MANIFEST.sha256", "SIGNATURE")
REQUIRED = (PACKAGE_JSON, WEIGHTS, SUMMARY, MANIFEST)
ALLOWED = (*REQUIRED, SIGNATURE)
#: reading limits: members, total uncompressed bytes, compression ratio of a member over 1 MiB, small members
MAX_MEMBERS = 16
MAX_TOTAL = 512 * 2**20
MAX_RATIO = 100
_RATIO_FLOOR = 2**20
MAX_DIM = 2**24  # the largest routing-encoder dimension (as HashingEncoder's), bounds the probe input
_SMALL = {PACKAGE_JSON: 16 * 2**20, MANIFEST: 2**16, SIGNATURE: 2**16}
_LINE = re.compile(r"^([0-9a-f]{64})  (\S.*)$")
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


@dataclass(frozen=True, eq=False)
class ExpertPackage:
    """A verified expert package, read into memory.

    ``card`` (:class:`~manyfold.experts.ExpertCard`), ``expert`` (rebuilt from
    its registered class), ``summary`` (:class:`RoutingSummary`), ``meta`` (the
    parsed ``package.json``), ``signed_by`` (fingerprint of the trusted key that
    verified the signature, else ``None``), ``signature`` (``"none"``: unsigned,
    ``"unchecked"``: signed but no trusted keys were given, ``"verified"``),
    ``signer`` (fingerprint of the key the signature claims, if signed),
    ``checksums`` (member -> verified sha256), ``path`` and ``size`` (bytes).
    """

    card: ExpertCard
    expert: Any
    summary: RoutingSummary
    meta: dict[str, Any]
    signed_by: str | None = None
    signature: str = "none"
    signer: str | None = None
    checksums: dict[str, str] = field(default_factory=dict)
    path: Path | None = None
    size: int = 0

    @property
    def name(self) -> str:
        return self.card.name

    @property
    def labels(self) -> tuple[str, ...]:
        return self.card.labels

    @property
    def encoder_id(self) -> str:
        return self.meta["encoder"]["id"]

    @property
    def modality(self) -> str:
        return self.meta["modality"]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _version() -> str:
    from .. import __version__

    return __version__


def _check_str(value: Any, name: str, *, empty: bool = False) -> str:
    if not isinstance(value, str) or (not empty and not value.strip()):
        raise ConfigError(f"{name} must be a{'' if empty else ' non-empty'} string, got {value!r}")
    return value


def _safetensors(arrays: dict[str, np.ndarray]) -> bytes:
    from safetensors.numpy import save

    return save({k: np.ascontiguousarray(v) for k, v in arrays.items()})


def pack_expert(
    expert: Any,
    *,
    encoder_id: str,
    encoder_spec: str,
    encoder_dim: int,
    modality: str,
    X: Any,
    y: Any,
    out_path: str | os.PathLike[str],
    creator: str = "",
    licence: str = "",
    per_label: int = 10,
    signing_key: KeySource | None = None,
) -> Path:
    """Write a fitted ``expert`` as one package file at ``out_path`` (atomically) and return its path.

    ``X`` (n, encoder_dim) are the expert's training items in the routing
    encoder's space and ``y`` their labels (every one of the expert's labels,
    nothing else: drop out-of-scope rows first); only their
    :func:`~manyfold.packages.summarize` summary goes into the file.
    ``signing_key`` (PEM text/bytes or a PEM file) adds an ed25519 ``SIGNATURE``.
    Everything is checked before anything is written.
    """
    config, arrays = expert.to_state()
    type_name = config.get("type") if isinstance(config, dict) else None
    cls = component_class(type_name)
    if not isinstance(expert, cls):
        raise ConfigError(f"expert type {type_name!r} is registered to {cls.__qualname__}, not {type(expert).__qualname__}")
    card = config.get("card")
    if not isinstance(card, dict):
        raise ConfigError(f"a {type_name} state has no card; only experts with an ExpertCard can be packaged")
    name = check_name(card.get("name"))
    labels = [str(x) for x in card.get("labels", ())]
    _check_str(encoder_id, "encoder_id")
    _check_str(encoder_spec, "encoder_spec")
    _check_str(modality, "modality")
    _check_str(creator, "creator", empty=True)
    _check_str(licence, "licence", empty=True)
    if isinstance(encoder_dim, bool) or not isinstance(encoder_dim, (int, np.integer)) or encoder_dim < 1:
        raise ConfigError(f"encoder_dim must be a positive integer, got {encoder_dim!r}")
    encoder_dim = int(encoder_dim)
    n_in = getattr(expert, "n_features_in_", None)
    if n_in is not None and int(n_in) != encoder_dim:
        raise ConfigError(f"expert {name!r} takes {n_in}-d features, but encoder {encoder_id!r} gives {encoder_dim}-d vectors")
    X = np.asarray(X, dtype=np.float32)
    if X.ndim != 2 or X.shape[1] != encoder_dim:
        raise ConfigError(f"X must be the items' {encoder_dim}-d vectors from encoder {encoder_id!r}, got shape {X.shape}")
    y = np.asarray(y).astype(str)
    seen = set(y.tolist())
    unknown, absent = sorted(seen - set(labels)), sorted(set(labels) - seen)
    if unknown:
        raise ConfigError(f"y has labels expert {name!r} does not know: {unknown[:5]} (drop out-of-scope rows); "
                          f"its labels: {labels[:10]}")
    if absent:
        raise ConfigError(f"y has no items of expert {name!r}'s labels {absent[:5]}: the routing summary needs every label")
    summary = summarize(X, y, per_label=per_label, seed=0)
    s_meta, s_arrays = summary.to_arrays()
    doc = {
        "format": FORMAT_VERSION, "kind": KIND, "name": name, "card": card, "modality": modality,
        "encoder": {"id": encoder_id, "spec": encoder_spec, "dim": encoder_dim},
        "expert": config, "summary": s_meta, "creator": creator, "licence": licence,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "manyfold": _version(),
    }
    try:
        pkg_json = (json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n").encode()
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"expert {name!r} cannot be packaged: its state is not plain JSON ({exc})") from None
    members = {PACKAGE_JSON: pkg_json, WEIGHTS: _safetensors({k: np.asarray(v) for k, v in arrays.items()}),
               SUMMARY: _safetensors(s_arrays)}
    manifest = "".join(f"{_sha(members[m])}  {m}\n" for m in sorted(members)).encode()
    members[MANIFEST] = manifest
    if signing_key is not None:
        members[SIGNATURE] = sign_manifest(manifest, signing_key)
    out = Path(out_path).expanduser()
    if out.is_dir():
        raise ConfigError(f"out_path {str(out)!r} is a folder; give a file name such as {str(out / (name + '.mfx'))!r}")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for m in (PACKAGE_JSON, MANIFEST, SIGNATURE, WEIGHTS, SUMMARY):
            if m in members:
                info = zipfile.ZipInfo(m, date_time=_ZIP_TIME)
                info.compress_type = zipfile.ZIP_DEFLATED if m == PACKAGE_JSON else zipfile.ZIP_STORED
                info.external_attr = 0o644 << 16
                zf.writestr(info, members[m])
    atomic_write_bytes(out, buf.getvalue())
    return out


# -- reading ------------------------------------------------------------------------------------------


def _unsafe(name: str) -> bool:
    return not safe_member_name(name)


def _expected_shapes(config: dict[str, Any]) -> dict[str, tuple[int, ...]] | None:
    """The array shapes a config implies, for the types whose layout is known (else ``None``)."""
    if config.get("type") != "HeadExpert":
        return None
    d, c, params = int(config["n_features_in"]), len(config["labels"]), config["params"]
    if params.get("kind") == "mlp" and c > 1:  # a one-label expert keeps a zero linear head
        h = int(params["hidden"])
        return {"W1": (d, h), "b1": (h,), "W2": (h, c), "b2": (c,)}
    return {"W": (d, c), "b": (c,)}


def read_package(
    path: str | os.PathLike[str],
    *,
    trusted_keys: Iterable[KeySource] | KeySource | None = None,
    require_signature: bool = False,
    expected_encoder_id: str | None = None,
    expected_modality: str | None = None,
) -> ExpertPackage:
    """Read and verify the package at ``path``; any problem is one :class:`~manyfold.ArtifactError` line.

    Checks, in order: a zip within the limits; no member with an absolute path,
    ``..``, a backslash, or a name outside the format's set; a known format
    version; every member present and matching ``MANIFEST.sha256``; the
    signature (against ``trusted_keys``, PEM text/bytes or files, when given;
    required with ``require_signature``); the routing encoder id and the
    modality when expected ones are given; a registered component type; weights
    whose shapes match the config; an expert that runs on encoder-sized input;
    a summary over the same labels and dimension. Nothing is written anywhere.
    An unsigned package is accepted unless ``require_signature``.
    """
    if require_signature and trusted_keys is None:
        raise ConfigError("require_signature=True needs trusted_keys (the public keys whose signatures you accept)")
    keys = load_public_keys(trusted_keys) if trusted_keys is not None else None
    p = Path(path).expanduser()
    where = str(p)

    def fail(msg: str) -> ArtifactError:  # one line, whatever a wrapped exception said
        return ArtifactError(f"expert package {where!r}: " + " ".join(msg.split()))

    if not p.is_file():
        raise fail("no such file" if not p.exists() else "is not a file")
    try:
        size = p.stat().st_size
        if size > MAX_TOTAL:
            raise fail(f"is {size} bytes, over the {MAX_TOTAL}-byte limit")
        data = p.read_bytes()
    except ArtifactError:
        raise
    except OSError as exc:
        raise fail(f"cannot be read ({exc.strerror or exc})") from None
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
        infos = zf.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError):
        raise fail("is not a zip archive, or is truncated") from None
    with zf:
        members, checksums, manifest = _read_members(zf, infos, fail)
    doc = _parse_json(members[PACKAGE_JSON], fail)
    # -- signature --------------------------------------------------------------------------------
    signed_by, signer, status = None, None, "none"
    if SIGNATURE in members:
        try:
            pub, sig = parse_signature(members[SIGNATURE])
        except ValueError as exc:
            raise fail(str(exc)) from None
        signer, status = fingerprint(pub), "unchecked"
        if keys is not None:
            if pub not in keys:
                raise fail(f"is signed by key {signer}, which is not among the trusted keys")
            if not verify_signature(manifest, pub, sig):
                raise fail(f"has a bad signature (it claims key {signer}): MANIFEST.sha256 does not match it")
            signed_by, status = signer, "verified"
    elif require_signature:
        raise fail("is not signed, and a signature by a trusted key is required")
    # -- compatibility ----------------------------------------------------------------------------
    modality, enc = doc["modality"], doc["encoder"]
    if expected_modality is not None and modality != expected_modality:
        raise fail(f"holds an expert for {modality} items; this assembly takes {expected_modality} items")
    if expected_encoder_id is not None and enc["id"] != expected_encoder_id:
        raise ArtifactError(f"expert package {where!r} was trained against encoder {enc['id']!r}; "
                            f"this assembly routes with {expected_encoder_id!r}")
    # -- the expert -------------------------------------------------------------------------------
    config = doc["expert"]
    cls = component_class(config.get("type"), where)
    try:
        card = ExpertCard.from_dict(doc["card"])
        check_name(card.name)
    except (TypeError, ValueError, AttributeError) as exc:
        raise fail(f"has an invalid expert card ({exc})") from None
    if config.get("card") != doc["card"] or doc.get("name") != card.name:
        raise fail("the card in package.json disagrees with the expert's state")
    if (not isinstance(doc["card"].get("labels"), list) or not card.labels or len(set(card.labels)) != len(card.labels)
            or not all(isinstance(x, str) for x in card.labels)):
        raise fail("the expert's labels must be a non-empty list of distinct strings")
    if not (isinstance(card.description, str) and isinstance(card.metrics, dict) and isinstance(card.lineage, dict)
            and (card.domain is None or isinstance(card.domain, str))):
        raise fail("has an invalid expert card (description, domain, metrics or lineage of the wrong type)")
    weights = _load_safetensors(members[WEIGHTS], WEIGHTS, fail)
    try:
        shapes = _expected_shapes(config)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise fail(f"the {config.get('type')} config is malformed ({type(exc).__name__}: {exc})") from None
    if shapes is not None:
        got = {k: tuple(v.shape) for k, v in weights.items()}
        if set(got) != set(shapes):
            raise fail(f"weights.safetensors holds arrays {sorted(got)}, the config implies {sorted(shapes)}")
        bad = [k for k in sorted(shapes) if got[k] != shapes[k]]
        if bad:
            k = bad[0]
            raise fail(f"weights do not match the config: {k!r} has shape {got[k]}, expected {shapes[k]}")
    try:
        expert = cls.from_state(config, weights)
    except (KeyError, TypeError, ValueError, AttributeError, ManyfoldError) as exc:
        raise fail(f"cannot rebuild the {config.get('type')} ({type(exc).__name__}: {exc})") from None
    if not isinstance(getattr(expert, "card_", None), ExpertCard) or expert.card_ != card:
        raise fail(f"component type {config.get('type')!r} does not rebuild an expert with this card")
    dim = enc["dim"]
    n_in = getattr(expert, "n_features_in_", dim)
    if n_in != dim:
        raise fail(f"the expert takes {n_in}-d features but its encoder {enc['id']!r} gives {dim}-d vectors")
    labels_ = [str(x) for x in np.asarray(getattr(expert, "labels_", card.labels)).tolist()]
    if tuple(labels_) != card.labels:
        raise fail("the expert's labels disagree with its card")
    try:
        proba = np.asarray(expert.predict_proba(np.zeros((2, dim), np.float32)))
        ok = proba.shape == (2, len(card.labels)) and bool(np.isfinite(proba).all())
    except Exception as exc:  # registered code on a zero probe: any failure means the weights are unusable
        raise fail(f"the expert does not run on {dim}-d input ({type(exc).__name__}: {exc})") from None
    if not ok:
        raise fail(f"the expert gives probabilities of shape {proba.shape} on {dim}-d input, expected (2, {len(card.labels)})")
    # -- the routing summary ----------------------------------------------------------------------
    try:
        summary = RoutingSummary.from_arrays(doc["summary"], _load_safetensors(members[SUMMARY], SUMMARY, fail))
    except ArtifactError as exc:
        if str(exc).startswith("expert package"):
            raise
        raise fail(str(exc)) from None
    if summary.dim != dim or set(summary.labels) != set(card.labels):
        raise fail(f"the routing summary ({summary.dim}-d, {len(summary.labels)} labels) does not match the expert "
                   f"({dim}-d, {len(card.labels)} labels)")
    return ExpertPackage(card=card, expert=expert, summary=summary, meta=doc, signed_by=signed_by, signature=status,
                         signer=signer, checksums=checksums, path=p, size=size)


def _read_members(zf: zipfile.ZipFile, infos: list[zipfile.ZipInfo], fail: Any) -> tuple[dict[str, bytes], dict[str, str], bytes]:
    """Every member's bytes, checked against the limits, the allowed set and the manifest."""
    if len(infos) > MAX_MEMBERS:
        raise fail(f"has {len(infos)} members, more than the {MAX_MEMBERS} allowed")
    names: list[str] = []
    for info in infos:
        for n in {info.filename, info.orig_filename}:
            if _unsafe(n):
                raise fail(f"member {n!r} has an unsafe path (absolute, '..' or a backslash)")
        if info.filename in names:
            raise fail(f"member {info.filename!r} appears twice")
        names.append(info.filename)
        if info.flag_bits & 0x1:
            raise fail(f"member {info.filename!r} is encrypted")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise fail(f"member {info.filename!r} uses compression method {info.compress_type}; "
                       "packages use stored or deflated members")
    total = sum(i.file_size for i in infos)
    if total > MAX_TOTAL:
        raise fail(f"members expand to {total} bytes, over the {MAX_TOTAL}-byte limit")
    for info in infos:
        limit = _SMALL.get(info.filename)
        if limit is not None and info.file_size > limit:
            raise fail(f"member {info.filename!r} is {info.file_size} bytes, over its {limit}-byte limit")
        if info.file_size > _RATIO_FLOOR and info.file_size > MAX_RATIO * max(info.compress_size, 1):
            raise fail(f"member {info.filename!r} expands {info.file_size // max(info.compress_size, 1)} times "
                       f"(over {MAX_RATIO}x: a zip bomb?)")
    by_name = {i.filename: i for i in infos}

    def read(name: str) -> bytes:
        info = by_name[name]
        try:
            with zf.open(info) as fh:
                data = fh.read(info.file_size + 1)
        except (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError, NotImplementedError) as exc:
            raise fail(f"member {name!r} is corrupted ({exc})") from None
        if len(data) != info.file_size:
            raise fail(f"member {name!r} does not have its declared size")
        return data

    # the format version first, so a newer package is told apart from a damaged one (an unreadable
    # package.json is left to the checksums, which name the damaged member)
    if PACKAGE_JSON in by_name:
        try:
            doc = json.loads(read(PACKAGE_JSON).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            doc = None
        if doc is not None:
            _parse_json(b"", fail, doc=doc, check_only_format=True)
    for n in names:
        try:
            check_member(n, ALLOWED, f"a format-{FORMAT_VERSION} package")
        except ArtifactError as exc:
            raise fail(str(exc)) from None
    missing = [m for m in REQUIRED if m not in by_name]
    if missing:
        raise fail(f"missing member {missing[0]!r}")
    members = {n: read(n) for n in names}
    manifest = members[MANIFEST]
    listed: dict[str, str] = {}
    try:
        lines = manifest.decode("ascii").splitlines()
    except UnicodeDecodeError:
        raise fail(f"{MANIFEST} is not ASCII text") from None
    for line in lines:
        m = _LINE.match(line)
        if not m or m.group(2) in listed:
            raise fail(f"{MANIFEST} has a malformed or repeated line {line[:80]!r}")
        listed[m.group(2)] = m.group(1)
    covered = [n for n in names if n not in (MANIFEST, SIGNATURE)]
    for n in sorted(listed):
        if n not in members:
            raise fail(f"{MANIFEST} lists {n!r}, which is not in the package")
    for n in covered:
        if n not in listed:
            raise fail(f"member {n!r} is not listed in {MANIFEST}")
        if _sha(members[n]) != listed[n]:
            raise fail(f"checksum mismatch in member {n!r}: the package was altered or corrupted")
    if set(listed) & {MANIFEST, SIGNATURE}:
        raise fail(f"{MANIFEST} must not list itself or {SIGNATURE}")
    return members, {n: listed[n] for n in covered}, manifest


def _parse_json(data: bytes, fail: Any, *, doc: Any = None, check_only_format: bool = False) -> dict[str, Any]:
    """``package.json`` (``data``, or already parsed as ``doc``) with its format version and (unless
    ``check_only_format``) its fields checked."""
    if doc is None:
        try:
            doc = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            raise fail(f"{PACKAGE_JSON} is not valid JSON") from None
    if not isinstance(doc, dict) or doc.get("kind") != KIND:
        raise fail(f"{PACKAGE_JSON} does not describe a manyfold expert package (kind must be {KIND!r})")
    fmt = doc.get("format")
    if fmt not in READS or isinstance(fmt, bool):
        newer = isinstance(fmt, int) and not isinstance(fmt, bool) and fmt > FORMAT_VERSION
        raise fail(f"has package format {fmt!r}; this manyfold reads format "
                   f"{', '.join(map(str, READS))}" + ("; upgrade manyfold to read it" if newer else ""))
    if check_only_format:
        return doc
    enc = doc.get("encoder")
    problems = []
    if not isinstance(doc.get("card"), dict):
        problems.append("'card' must be an object")
    if not isinstance(doc.get("expert"), dict):
        problems.append("'expert' must be an object")
    if not isinstance(doc.get("summary"), dict):
        problems.append("'summary' must be an object")
    if not isinstance(doc.get("modality"), str) or not doc["modality"]:
        problems.append("'modality' must be a non-empty string")
    if not (isinstance(enc, dict) and isinstance(enc.get("id"), str) and isinstance(enc.get("spec"), str)
            and isinstance(enc.get("dim"), int) and not isinstance(enc.get("dim"), bool) and 0 < enc["dim"] <= MAX_DIM):
        problems.append(f"'encoder' must hold a string id and spec and an integer dim in [1, {MAX_DIM}]")
    for k in ("creator", "licence", "created", "manyfold"):
        if not isinstance(doc.get(k, ""), str):
            problems.append(f"{k!r} must be a string")
    if problems:
        raise fail(f"{PACKAGE_JSON} is malformed: " + "; ".join(problems))
    return doc


def _load_safetensors(data: bytes, member: str, fail: Any) -> dict[str, np.ndarray]:
    from safetensors.numpy import load

    try:
        arrays = dict(load(data))
    except Exception:  # safetensors raises its own SafetensorError on bad headers
        raise fail(f"member {member!r} is not a valid safetensors file") from None
    for k, v in arrays.items():
        if v.dtype.kind not in "fiu":
            raise fail(f"array {k!r} in {member!r} has dtype {v.dtype}; packages hold numeric arrays")
    return arrays


def check_collisions(package: ExpertPackage, *, labels: Iterable[str] = (), expert_names: Iterable[str] = ()) -> None:
    """Refuse (one :class:`~manyfold.ArtifactError` line) a package whose labels or name an assembly already has."""
    where = str(package.path) if package.path is not None else package.name
    taken = set(labels)
    clash = [lab for lab in package.labels if lab in taken]
    if clash:
        shown = ", ".join(repr(x) for x in clash[:5]) + (" ..." if len(clash) > 5 else "")
        raise ArtifactError(f"expert package {where!r}: {len(clash)} of its labels already belong to this assembly "
                            f"({shown}); rename them or remove the expert that has them")
    if package.name in set(expert_names):
        raise ArtifactError(f"expert package {where!r}: this assembly already has an expert named {package.name!r}")
