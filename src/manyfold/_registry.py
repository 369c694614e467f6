"""The on-disk registry of assemblies and experts (JSON + safetensors, no pickle).

Layout under ``$MANYFOLD_HOME/registry``::

    objects/<kind>-<sha>/state.json          one saved component, content-addressed:
    objects/<kind>-<sha>/arrays.safetensors   written once, never modified
    assemblies/<name>/v0001.json              a manifest: which objects make the
    assemblies/<name>/v0002.json              assembly, with their checksums

Every file is written atomically and a manifest is written last, so an
interrupted save leaves the registry as it was (at most an unreferenced
object or a temporary file, removed by :meth:`Registry.gc`). Adding or
replacing one expert writes one new expert object and a new manifest; the
other experts' files are shared, untouched, by both versions.

A manifest is not trusted (it may come from a copied registry or have been
edited): its structure is checked, every object it names must be a registry
object name of the right kind with both member files checksummed
(:mod:`manyfold._trust`), and a remote generalist, the API-key variable it
sends, or an encoder that is not built in load only with ``trust_remote``.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from . import _trust
from ._components import component_class
from ._config import AssemblyConfig
from ._exceptions import ArtifactError, AssemblyNotFoundError, ConfigError
from ._io import atomic_dir, atomic_write_json, load_arrays, manyfold_home, read_json, save_arrays, sha256_file
from .experts import check_name

__all__ = ["Registry", "FORMAT_VERSION"]

#: manifest format written by this manyfold; it reads formats 1 (manyfold 0.1) and 2
FORMAT_VERSION = 2
_READS = (1, 2)
_VERSION = re.compile(r"^v(\d{4,})\.json$")
#: leftovers of an interrupted atomic write (``.v0002.json.x1y2.tmp``, ``.expert-<sha>.x1y2.tmp/``, ``.old``)
_LEFTOVER = re.compile(r"^\..+\.(tmp|old)$")


def _migrate(m: dict[str, Any]) -> dict[str, Any]:
    """A format-1 manifest in format-2 terms: the dataset reference comes from ``extra``."""
    m = dict(m)
    if m.get("format") == 1:
        extra = m.get("extra") or {}
        m["dataset"] = ({"kind": "builtin", "name": extra["dataset"], "data_dir": extra.get("data_dir")}
                        if extra.get("dataset") else None)
        m["grouping"] = None
        m["migrated_from_format"] = 1
    return m


def _state_hash(config: dict[str, Any], arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
    for k in sorted(arrays):
        a = np.ascontiguousarray(arrays[k])
        h.update(k.encode() + str(a.dtype).encode() + str(a.shape).encode() + a.tobytes())
    return h.hexdigest()[:24]


def _version() -> str:
    from . import __version__

    return __version__


def _describe(ref: Any) -> str | None:
    """A short name for a dataset reference (``manyfold list``)."""
    if not isinstance(ref, dict):
        return None
    return ref.get("name") if ref.get("kind") == "builtin" else ref.get("path")


class Registry:
    """Save, list, load and version assemblies under ``root`` (default ``$MANYFOLD_HOME/registry``)."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else manyfold_home() / "registry"

    def __repr__(self) -> str:
        return f"Registry({str(self.root)!r})"

    # -- objects ------------------------------------------------------------------
    def _put(self, kind: str, state: tuple[dict[str, Any], dict[str, np.ndarray]]) -> dict[str, Any]:
        config, arrays = state
        arrays = {k: np.asarray(v) for k, v in arrays.items()}
        ref = f"{kind}-{_state_hash(config, arrays)}"
        path = self.root / "objects" / ref
        if not path.exists():
            with atomic_dir(path) as tmp:
                atomic_write_json(tmp / "state.json", config)
                save_arrays(tmp / "arrays.safetensors", arrays)
        return {"ref": ref, "sha256": {f: sha256_file(path / f) for f in ("state.json", "arrays.safetensors")}}

    def _state(self, entry: Any, kind: str, where: str) -> tuple[Path, dict[str, Any]]:
        """The folder and ``state.json`` of the object ``entry`` names, every check passed (see :mod:`manyfold._trust`)."""
        ref, digests = _trust.object_entry(entry, kind, where)
        path = self.root / "objects" / ref
        if path.is_symlink() or not path.is_dir():
            raise ArtifactError(f"the registry object {ref!r} is missing from {str(path.parent)!r}")
        for f, digest in digests.items():
            _trust.object_file(path, f, digest)
        config = read_json(path / "state.json")
        if not isinstance(config, dict):
            raise ArtifactError(f"{str(path / 'state.json')!r} does not hold a component state (a JSON object)")
        return path, config

    def _get(self, entry: Any, kind: str = "expert", where: str = "registry object",
             state: tuple[Path, dict[str, Any]] | None = None) -> Any:
        """The component an object entry of ``kind`` names, rebuilt through its registered class."""
        path, config = state if state is not None else self._state(entry, kind, where)
        arrays = load_arrays(path / "arrays.safetensors")
        cls = component_class("EscalationPolicy" if config.get("type") == "Policy" else config.get("type"), str(path))
        try:
            return cls.from_state(config, arrays)
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"cannot rebuild {config.get('type')} from {str(path)!r}: {exc}") from exc

    # -- assemblies ------------------------------------------------------------------
    def _get_summary(self, entry: Any, where: str) -> Any:
        """A routing summary object (checksummed like every object; data only, no type lookup)."""
        from .packages import RoutingSummary

        path, config = self._state(entry, "summary", where)
        try:
            return RoutingSummary.from_arrays(config["meta"], load_arrays(path / "arrays.safetensors"))
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"cannot rebuild a routing summary from {str(path)!r}: {exc}") from exc

    def _dir(self, name: str) -> Path:
        return self.root / "assemblies" / check_name(name, "assembly")

    def names(self) -> list[str]:
        base = self.root / "assemblies"
        if not base.is_dir():
            return []
        return sorted(p.name for p in base.iterdir() if p.is_dir() and _valid_name(p.name) and self.versions(p.name))

    def versions(self, name: str) -> list[int]:
        d = self._dir(name)
        if not d.is_dir():
            return []
        return sorted(int(m.group(1)) for p in d.iterdir() if (m := _VERSION.match(p.name)))

    def manifest(self, name: str, version: int | None = None) -> dict[str, Any]:
        versions = self.versions(name)
        if not versions:
            raise AssemblyNotFoundError(name, self.names())
        v = versions[-1] if version is None else version
        if v not in versions:
            raise ConfigError(f"assembly {name!r} has no version {v}; versions: {versions}")
        m = read_json(self._dir(name) / f"v{v:04d}.json")
        fmt = m.get("format") if isinstance(m, dict) else None
        if fmt not in _READS:
            newer = isinstance(fmt, int) and fmt > FORMAT_VERSION
            raise ArtifactError(
                f"assembly {name!r} v{v} has manifest format {fmt!r}; this manyfold reads formats "
                f"{', '.join(map(str, _READS))}: " + ("upgrade manyfold to load it" if newer else
                "rebuild it with `manyfold assemble` (or re-save it with the manyfold that wrote it)"))
        m = _migrate(m)
        _check_manifest(m, f"assembly {name!r} v{v}", v)
        return m

    def list(self) -> list[dict[str, Any]]:
        """One summary per assembly (latest version); an unreadable one is ``{"name", "error"}``.

        ``needs_trust`` lists what loading it asks the user to opt in to (a
        remote generalist, an API-key variable, an encoder that is not built in).
        """
        out = []
        for name in self.names():
            try:
                m = self.manifest(name)
                gen = m.get("generalist")
                where = f"assembly {name!r} v{m['version']}"
                needs = _trust.remote_needs(m["encoder"]["spec"],
                                            self._state(gen, "generalist", f"{where}: generalist")[1] if gen else None)
            except ArtifactError as exc:
                out.append({"name": name, "error": str(exc)})
                continue
            out.append({"name": name, "version": m["version"], "versions": len(self.versions(name)),
                        "experts": [e["name"] for e in m["experts"]], "encoder": m["encoder"]["spec"],
                        "generalist": (gen or {}).get("type"), "created": m.get("created"),
                        "dataset": _describe(m.get("dataset")), "needs_trust": needs})
        return out

    def save(self, asm: Any, name: str, *, note: str = "", extra: dict[str, Any] | None = None) -> int:
        """Save ``asm`` as the next version of ``name``; returns the version number."""
        asm._check_ready()
        d = self._dir(name)
        experts = [{"name": e.name, **self._put("expert", e.to_state())} for e in asm.experts]
        router = self._put("router", asm.router.to_state())
        gen = None
        if asm.generalist is not None:
            gen = {"type": type(asm.generalist).__name__, **self._put("generalist", asm.generalist.to_state())}
        policy = self._put("policy", asm.policy_.to_state())
        summaries = {}
        for ename, s in (getattr(asm, "summaries_", None) or {}).items():
            meta, arrays = s.to_arrays()
            summaries[ename] = self._put("summary", ({"type": "RoutingSummary", "meta": meta}, arrays))
        prov = getattr(asm, "provenance_", None) or {}
        versions = self.versions(name)
        version = (versions[-1] + 1) if versions else 1
        manifest = {
            "format": FORMAT_VERSION, "name": name, "version": version, "manyfold": _version(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "note": note,
            "config": asm.config.to_dict(),
            "encoder": {"spec": asm.encoder.spec, "id": asm.encoder.id},
            "experts": experts, "router": router, "generalist": gen, "policy": policy,
            "dataset": prov.get("dataset"), "grouping": prov.get("grouping"), "summaries": summaries,
            "packages": prov.get("packages") or {},
            "calibration": asm.calibration_, "extra": extra or {},
        }
        atomic_write_json(d / f"v{version:04d}.json", manifest)
        return version

    def load(self, name: str, version: int | None = None, *, encoder: Any = None, cache: bool = True,
             trust_remote: bool | None = None) -> Any:
        """Rebuild a saved assembly. ``encoder`` overrides the stored spec (it must have the same id).

        Every object is checked and checksummed before it is read. An assembly
        whose generalist sends items over the network (and an API key from an
        environment variable), or whose encoder is not built in (a local model
        folder, a hub id), loads only with ``trust_remote=True`` (default
        ``None``: ``$MANYFOLD_TRUST_REMOTE``), else :class:`~manyfold.TrustError`
        says what it asks for. ``remote_`` on the result lists what was allowed.
        """
        from ._assembly import Assembly
        from .encoders import cached_encoder, get_encoder

        m = self.manifest(name, version)
        where = f"assembly {name!r} v{m['version']}"
        gen_state = self._state(m["generalist"], "generalist", f"{where}: generalist") if m.get("generalist") else None
        if gen_state is not None and gen_state[1].get("type") != m["generalist"].get("type"):
            raise ArtifactError(f"{where}: the manifest says its generalist is a {m['generalist'].get('type')!r}, "
                                f"its object holds a {gen_state[1].get('type')!r}")
        needs = _trust.remote_needs(m["encoder"]["spec"] if encoder is None else None,
                                    gen_state[1] if gen_state is not None else None)
        _trust.require_trust(needs, where, trust_remote)
        experts = [self._get(e, "expert", f"{where}: expert {e['name']!r}") for e in m["experts"]]
        router = self._get(m["router"], "router", f"{where}: router")
        gen = self._get(m["generalist"], "generalist", f"{where}: generalist", gen_state) if gen_state else None
        enc = encoder if encoder is not None else get_encoder(m["encoder"]["spec"])
        if enc.id != m["encoder"]["id"]:
            raise ArtifactError(f"assembly {name!r} was built with encoder {m['encoder']['id']!r}, got {enc.id!r}")
        trained_on = getattr(gen, "encoder_id_", None)
        if trained_on is not None and isinstance(gen.encoder, str) and (now := get_encoder(gen.encoder).id) != trained_on:
            raise ArtifactError(f"assembly {name!r}: its generalist was trained on encoder {trained_on!r}, but its "
                                f"spec {gen.encoder!r} builds {now!r} with this manyfold (another version of the "
                                "model): train the assembly again")
        if cache and encoder is None:
            enc = cached_encoder(enc)
            if gen is not None and hasattr(gen, "encoder"):
                gen._encoder = cached_encoder(get_encoder(gen.encoder))
        asm = Assembly(enc, router, experts, gen, AssemblyConfig.from_dict(m["config"]))
        asm.policy_ = self._get(m["policy"], "policy", f"{where}: policy")
        asm._layout()
        asm.provenance_ = {"dataset": m.get("dataset"), "grouping": m.get("grouping"), "packages": m.get("packages") or {}}
        if m.get("summaries"):
            asm.summaries_ = {ename: self._get_summary(entry, f"{where}: summary of {ename!r}")
                              for ename, entry in m["summaries"].items()}
        asm.manifest_ = m
        asm.remote_ = needs
        return asm

    def remove(self, name: str) -> None:
        """Delete an assembly's manifests (objects are left for :meth:`gc`)."""
        if not self.versions(name):
            raise AssemblyNotFoundError(name, self.names())
        shutil.rmtree(self._dir(name))

    def gc(self, *, min_age_s: float = 600.0, dry_run: bool = False) -> dict[str, Any]:
        """Remove what no manifest refers to: objects, distillation pseudo-label files, and the temporary
        files and folders an interrupted write left (``.v0002.json.*.tmp``, ``.expert-*.tmp/``, ...).

        Only what is older than ``min_age_s`` seconds goes (a save in progress
        writes its objects before its manifest). Every manifest is read first:
        one that cannot be read is an :class:`ArtifactError` naming it, and
        nothing is removed. With ``dry_run`` nothing is removed either. Returns
        ``{"objects": [...], "pseudo": [...], "temp": [...], "bytes": n}``
        (paths relative to the registry root).
        """
        if not isinstance(min_age_s, (int, float)) or isinstance(min_age_s, bool) or min_age_s < 0:
            raise ConfigError(f"min_age_s must be a number of seconds >= 0, got {min_age_s!r}")
        used: set[str] = set()
        pseudo: set[str] = set()
        for name in self.names():
            for v in self.versions(name):
                m = self.manifest(name, v)  # checked: a broken manifest stops gc before anything is removed
                used.update(e["ref"] for e in m["experts"])
                used.update(x["ref"] for x in (m["router"], m["policy"], m.get("generalist")) if x)
                used.update(x["ref"] for x in (m.get("summaries") or {}).values())
                fw = (m.get("extra") or {}).get("flywheel") if isinstance(m.get("extra"), dict) else None
                if isinstance(fw, dict) and isinstance(fw.get("pseudo_file"), str):
                    pseudo.add(fw["pseudo_file"])
        now = time.time()

        def old(p: Path) -> bool:
            try:
                return now - p.lstat().st_mtime >= min_age_s
            except FileNotFoundError:
                return False

        report: dict[str, Any] = {"objects": [], "pseudo": [], "temp": [], "bytes": 0}
        gone: list[tuple[str, Path]] = []
        base = self.root / "objects"
        for p in sorted(base.iterdir()) if base.is_dir() else []:
            if _LEFTOVER.match(p.name):
                gone.append(("temp", p))
            elif p.is_dir() and p.name not in used:
                gone.append(("objects", p))
        adir = self.root / "assemblies"
        for d in [adir, *sorted(p for p in adir.iterdir() if p.is_dir() and not p.is_symlink())] if adir.is_dir() else []:
            gone += [("temp", p) for p in sorted(d.iterdir()) if _LEFTOVER.match(p.name)]
        fly = self.root / "flywheel"
        for p in sorted(fly.rglob("*")) if fly.is_dir() else []:
            rel = p.relative_to(self.root).as_posix()
            if p.is_file() and (p.name.endswith(".tmp") or _LEFTOVER.match(p.name)):
                gone.append(("temp", p))
            elif p.is_file() and p.name.endswith(".pseudo.jsonl") and rel not in pseudo:
                gone.append(("pseudo", p))
        for what, p in gone:
            if not old(p):
                continue
            report[what].append(p.relative_to(self.root).as_posix())
            report["bytes"] += sum(f.lstat().st_size for f in ([p] if not p.is_dir() else p.rglob("*")))
            if not dry_run:
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)
        return report


def _valid_name(name: str) -> bool:
    try:
        check_name(name, "assembly")
    except ConfigError:
        return False
    return True


def _check_manifest(m: dict[str, Any], where: str, v: int) -> None:
    """The structure every reader relies on; one :class:`ArtifactError` line naming the first bad field."""
    version = m.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version != v:
        raise ArtifactError(f"{where}: its version field is {version!r}, but the file is v{v:04d}.json")
    experts = m.get("experts")
    if not isinstance(experts, list) or not experts:
        raise ArtifactError(f"{where}: 'experts' must be a non-empty list, got {str(experts)[:60]!r}")
    names = []
    for i, e in enumerate(experts):
        if not isinstance(e, dict):
            raise ArtifactError(f"{where}: experts[{i}] is not an object entry")
        try:
            names.append(check_name(e.get("name")))
        except ConfigError as exc:
            raise ArtifactError(f"{where}: experts[{i}]: {exc}") from None
        _trust.object_entry(e, "expert", f"{where}: expert {e['name']!r}")
    if len(set(names)) != len(names):
        raise ArtifactError(f"{where}: expert names repeat: {sorted({n for n in names if names.count(n) > 1})}")
    _trust.object_entry(m.get("router"), "router", f"{where}: router")
    _trust.object_entry(m.get("policy"), "policy", f"{where}: policy")
    gen = m.get("generalist")
    if gen is not None:
        _trust.object_entry(gen, "generalist", f"{where}: generalist")
        if not isinstance(gen.get("type"), str):
            raise ArtifactError(f"{where}: the generalist entry has no type")
    enc = m.get("encoder")
    if not (isinstance(enc, dict) and isinstance(enc.get("spec"), str) and isinstance(enc.get("id"), str)):
        raise ArtifactError(f"{where}: 'encoder' must hold a string spec and id")
    if not isinstance(m.get("config"), dict):
        raise ArtifactError(f"{where}: 'config' must be an object")
    summaries = m.get("summaries")
    if summaries is not None:
        if not isinstance(summaries, dict):
            raise ArtifactError(f"{where}: 'summaries' must be an object")
        for ename, entry in summaries.items():
            if ename not in names:
                raise ArtifactError(f"{where}: a routing summary names {ename!r}, which is not one of its experts")
            _trust.object_entry(entry, "summary", f"{where}: summary of {ename!r}")
    for key in ("dataset", "extra", "grouping", "packages", "calibration"):
        if m.get(key) is not None and not isinstance(m[key], dict):
            raise ArtifactError(f"{where}: {key!r} must be an object or null")
