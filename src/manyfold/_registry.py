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

from ._config import AssemblyConfig
from ._exceptions import ArtifactError, AssemblyNotFoundError, ConfigError
from ._io import atomic_dir, atomic_write_json, load_arrays, manyfold_home, read_json, save_arrays, sha256_file
from .experts import HeadExpert, check_name
from .generalists import GENERALISTS
from .routers import ROUTERS

__all__ = ["Registry", "FORMAT_VERSION"]

FORMAT_VERSION = 1
_VERSION = re.compile(r"^v(\d{4,})\.json$")
_COMPONENTS: dict[str, Any] = {
    "HeadExpert": HeadExpert,
    **{cls.__name__: cls for cls in ROUTERS.values()},
    **GENERALISTS,
}


def _state_hash(config: dict[str, Any], arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
    for k in sorted(arrays):
        a = np.ascontiguousarray(arrays[k])
        h.update(k.encode() + str(a.dtype).encode() + str(a.shape).encode() + a.tobytes())
    return h.hexdigest()[:24]


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
        cls = _COMPONENTS.get(config.get("type"))
        if cls is None:
            raise ArtifactError(f"unknown component type {config.get('type')!r} in {str(path)!r}")
        try:
            return cls.from_state(config, arrays)
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"cannot rebuild {config.get('type')} from {str(path)!r}: {exc}") from exc

    # -- assemblies ------------------------------------------------------------------
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
        if m.get("format") != FORMAT_VERSION:
            raise ArtifactError(f"assembly {name!r} v{v} has format {m.get('format')!r}; this manyfold reads {FORMAT_VERSION}")
        return m

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
                        "generalist": (m.get("generalist") or {}).get("type"), "created": m["created"]})
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
        dets = {"detector1": asm.detector1_}
        if hasattr(asm, "detector2_") and asm.generalist is not None:
            dets["detector2"] = asm.detector2_
        det_cfg = {k: v.to_state()[0] for k, v in dets.items()}
        det_arr = {f"{k}.{a}": arr for k, v in dets.items() for a, arr in v.to_state()[1].items()}
        policy = self._put("policy", ({"type": "Policy", "detectors": det_cfg,
                                       "policy": {k: float(v) for k, v in asm.policy_.items()}},
                                      {"centroids": asm.centroids_, **det_arr}))
        versions = self.versions(name)
        version = (versions[-1] + 1) if versions else 1
        manifest = {
            "format": FORMAT_VERSION, "name": name, "version": version,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "note": note,
            "config": asm.config.to_dict(),
            "encoder": {"spec": asm.encoder.spec, "id": asm.encoder.id},
            "experts": experts, "router": router, "generalist": gen, "policy": policy,
            "calibration": getattr(asm, "calibration_", {}), "extra": extra or {},
        }
        atomic_write_json(d / f"v{version:04d}.json", manifest)
        return version

    def load(self, name: str, version: int | None = None, *, encoder: Any = None, cache: bool = True) -> Any:
        """Rebuild a saved assembly. ``encoder`` overrides the stored spec (it must have the same id)."""
        from ._assembly import Assembly
        from ._oos import OOSDetector
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
        pol_path = self.root / "objects" / m["policy"]["ref"]
        self._verify(m["policy"], pol_path)
        pcfg, parr = read_json(pol_path / "state.json"), load_arrays(pol_path / "arrays.safetensors")
        asm.policy_ = dict(pcfg["policy"])
        asm.centroids_ = parr["centroids"]
        for k, cfg in pcfg["detectors"].items():
            setattr(asm, f"{k}_", OOSDetector.from_state(cfg, {a.split(".", 1)[1]: v for a, v in parr.items() if a.startswith(k + ".")}))
        asm._layout()
        if gen is not None:
            gl = {lab: i for i, lab in enumerate(gen.labels_.tolist())}
            asm._generalist_cols = np.array([gl.get(lab, -1) for lab in asm.labels_.tolist()])
        asm.calibration_ = m.get("calibration", {})
        asm.manifest_ = m
        return asm

    def _verify(self, entry: dict[str, Any], path: Path) -> None:
        for f, digest in entry["sha256"].items():
            if not (path / f).is_file() or sha256_file(path / f) != digest:
                raise ArtifactError(f"artifact {str(path / f)!r} is missing, corrupted or truncated")

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
        base = self.root / "objects"
        gone = 0
        for p in base.iterdir() if base.is_dir() else []:
            if p.is_dir() and p.name not in used:
                shutil.rmtree(p, ignore_errors=True)
                gone += 1
        return gone
