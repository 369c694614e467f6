"""The on-disk registry of assemblies and experts (JSON + safetensors, no pickle).

Layout under ``$MANYFOLD_HOME/registry``::

    objects/<kind>-<sha>/state.json          one saved component, content-addressed:
    objects/<kind>-<sha>/arrays.safetensors   written once, never modified
    assemblies/<name>/v0001.json              a manifest: which objects make the
    assemblies/<name>/v0002.json              assembly, with their checksums

Every file is written atomically and a manifest is written last, so an
interrupted save leaves the registry as it was (at most an unreferenced
object, removed by :meth:`Registry.gc`). Adding or replacing one expert writes
one new expert object and a new manifest; the other experts' files are shared,
untouched, by both versions.
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

    def _get(self, entry: dict[str, Any], *, verify: bool = True) -> Any:
        path = self.root / "objects" / entry["ref"]
        if not path.is_dir():
            raise ArtifactError(f"the registry object {entry['ref']!r} is missing from {str(path.parent)!r}")
        if verify:
            for f, digest in entry["sha256"].items():
                if not (path / f).is_file():
                    raise ArtifactError(f"missing artifact file {str(path / f)!r}")
                if sha256_file(path / f) != digest:
                    raise ArtifactError(f"artifact {str(path / f)!r} is corrupted or truncated (checksum mismatch)")
        config = read_json(path / "state.json")
        arrays = load_arrays(path / "arrays.safetensors")
        cls = component_class("EscalationPolicy" if config.get("type") == "Policy" else config.get("type"), str(path))
        try:
            return cls.from_state(config, arrays)
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"cannot rebuild {config.get('type')} from {str(path)!r}: {exc}") from exc

    # -- assemblies ------------------------------------------------------------------
    def _get_summary(self, entry: dict[str, Any]) -> Any:
        """A routing summary object (checksummed like every object; data only, no type lookup)."""
        from .packages import RoutingSummary

        path = self.root / "objects" / entry["ref"]
        for f, digest in entry["sha256"].items():
            if not (path / f).is_file() or sha256_file(path / f) != digest:
                raise ArtifactError(f"artifact {str(path / f)!r} is missing, corrupted or truncated")
        config = read_json(path / "state.json")
        try:
            return RoutingSummary.from_arrays(config["meta"], load_arrays(path / "arrays.safetensors"))
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"cannot rebuild a routing summary from {str(path)!r}: {exc}") from exc

    def _dir(self, name: str) -> Path:
        return self.root / "assemblies" / check_name(name, "assembly")

    def names(self) -> list[str]:
        base = self.root / "assemblies"
        return sorted(p.name for p in base.iterdir() if p.is_dir() and self.versions(p.name)) if base.is_dir() else []

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
        return _migrate(m)

    def list(self) -> list[dict[str, Any]]:
        """One summary per assembly (latest version)."""
        out = []
        for name in self.names():
            try:
                m = self.manifest(name)
            except ArtifactError as exc:
                out.append({"name": name, "error": str(exc)})
                continue
            out.append({"name": name, "version": m["version"], "versions": len(self.versions(name)),
                        "experts": [e["name"] for e in m["experts"]], "encoder": m["encoder"]["spec"],
                        "generalist": (m.get("generalist") or {}).get("type"), "created": m["created"],
                        "dataset": _describe(m.get("dataset"))})
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

    def load(self, name: str, version: int | None = None, *, encoder: Any = None, cache: bool = True) -> Any:
        """Rebuild a saved assembly. ``encoder`` overrides the stored spec (it must have the same id)."""
        from ._assembly import Assembly
        from .encoders import cached_encoder, get_encoder

        m = self.manifest(name, version)
        experts = [self._get(e) for e in m["experts"]]
        router = self._get(m["router"])
        gen = self._get(m["generalist"]) if m.get("generalist") else None
        enc = encoder if encoder is not None else get_encoder(m["encoder"]["spec"])
        if enc.id != m["encoder"]["id"]:
            raise ArtifactError(f"assembly {name!r} was built with encoder {m['encoder']['id']!r}, got {enc.id!r}")
        if cache and encoder is None:
            enc = cached_encoder(enc)
            if gen is not None and hasattr(gen, "encoder"):
                gen._encoder = cached_encoder(get_encoder(gen.encoder))
        asm = Assembly(enc, router, experts, gen, AssemblyConfig.from_dict(m["config"]))
        asm.policy_ = self._get(m["policy"])
        asm._layout()
        asm.provenance_ = {"dataset": m.get("dataset"), "grouping": m.get("grouping"), "packages": m.get("packages") or {}}
        if m.get("summaries"):
            asm.summaries_ = {ename: self._get_summary(entry) for ename, entry in m["summaries"].items()}
        asm.manifest_ = m
        return asm

    def remove(self, name: str) -> None:
        """Delete an assembly's manifests (objects are left for :meth:`gc`)."""
        if not self.versions(name):
            raise AssemblyNotFoundError(name, self.names())
        shutil.rmtree(self._dir(name))

    def gc(self) -> int:
        """Remove objects no manifest refers to; returns how many were removed."""
        used: set[str] = set()
        for name in self.names():
            for v in self.versions(name):
                m = read_json(self._dir(name) / f"v{v:04d}.json")
                used.update(e["ref"] for e in m["experts"])
                used.update(x["ref"] for x in (m["router"], m["policy"], m.get("generalist")) if x)
                used.update(x["ref"] for x in (m.get("summaries") or {}).values())
        base = self.root / "objects"
        gone = 0
        for p in base.iterdir() if base.is_dir() else []:
            if p.is_dir() and p.name not in used:
                shutil.rmtree(p, ignore_errors=True)
                gone += 1
        return gone
