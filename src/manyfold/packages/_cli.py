"""Plain functions behind ``manyfold experts pack / inspect / verify / keygen`` (the CLI registers them).

Each takes an ``echo`` callable (``typer.echo``) for its output and raises a
:class:`~manyfold.ManyfoldError` (one line) on any problem.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from .._exceptions import ConfigError
from .._io import atomic_write_bytes
from .._trust import builtin_encoder
from ._format import ExpertPackage, pack_expert, read_package
from ._sign import KeySource, generate_keypair

__all__ = ["pack_main", "inspect_main", "verify_main", "keygen_main"]

Echo = Callable[[str], Any]


def _size(n: int) -> str:
    return f"{n} B" if n < 1024 else f"{n / 1024:.1f} KiB" if n < 2**20 else f"{n / 2**20:.1f} MiB"


def _signature_line(pkg: ExpertPackage) -> str:
    if pkg.signature == "verified":
        return f"verified: signed by trusted key {pkg.signed_by}"
    if pkg.signature == "unchecked":
        return f"signed by key {pkg.signer}, not checked (give trusted public keys to check it)"
    return "unsigned"


def pack_main(expert: Any, encoder: Any, X: Any, y: Any, out_path: str | os.PathLike[str], echo: Echo, *,
              modality: str | None = None, creator: str = "", licence: str = "", per_label: int = 10,
              signing_key: KeySource | None = None) -> Path:
    """Pack ``expert`` with the routing ``encoder`` (its ``id``, ``spec``, ``dim`` and ``modality``), ``X`` its
    training items' vectors from that encoder and ``y`` their labels; echo one line and return the file."""
    modality = modality if modality is not None else getattr(encoder, "modality", None)
    if modality is None:
        raise ConfigError(f"encoder {getattr(encoder, 'id', encoder)!r} declares no modality; pass modality=")
    out = pack_expert(expert, encoder_id=encoder.id, encoder_spec=encoder.spec, encoder_dim=int(encoder.dim),
                      modality=modality, X=X, y=y, out_path=out_path, creator=creator, licence=licence,
                      per_label=per_label, signing_key=signing_key)
    pkg = read_package(out)  # what was written reads back (and gives the numbers below)
    echo(f"packed expert {pkg.name!r} ({len(pkg.labels)} labels, {pkg.summary.n_prototypes} routing prototypes) "
         f"into {str(out)!r} ({_size(pkg.size)}, {_signature_line(pkg)})")
    return out


def inspect_main(path: str | os.PathLike[str], echo: Echo, *, trusted_keys: Iterable[KeySource] | None = None,
                 require_signature: bool = False, json_out: bool = False) -> ExpertPackage:
    """Verify the package at ``path`` and print its card, labels, encoder, summary, checksums and signature."""
    pkg = read_package(path, trusted_keys=trusted_keys, require_signature=require_signature)
    m, c, s = pkg.meta, pkg.card, pkg.summary
    if json_out:
        echo(json.dumps({
            "path": str(pkg.path), "size": pkg.size, "format": m["format"], "card": c.to_dict(),
            "type": m["expert"].get("type"), "modality": pkg.modality, "encoder": m["encoder"],
            "creator": m.get("creator", ""), "licence": m.get("licence", ""), "created": m.get("created"),
            "manyfold": m.get("manyfold"),
            "summary": {"prototypes": s.n_prototypes, "labels": len(s.labels), "per_label": s.per_label,
                        "dim": s.dim, "counts": dict(zip(s.labels, s.counts.tolist()))},
            "checksums": pkg.checksums, "signature": pkg.signature, "signer": pkg.signer, "signed_by": pkg.signed_by,
        }))
        return pkg
    labels = list(c.labels)
    shown = ", ".join(labels[:8]) + (f", ... ({len(labels) - 8} more)" if len(labels) > 8 else "")
    enc = m["encoder"]
    rows = [
        ("package", f"{str(pkg.path)} (format {m['format']}, {_size(pkg.size)})"),
        ("expert", f"{c.name} ({m['expert'].get('type')}, {c.size} parameters)" + (f": {c.description}" if c.description else "")),
        ("domain", c.domain or "-"),
        ("labels", f"{len(labels)}: {shown}"),
        ("modality", pkg.modality),
        ("encoder", f"{enc['id']} (spec {enc['spec']!r}, {enc['dim']}-d)"
                    + ("" if builtin_encoder(enc["spec"]) else "; not built in: assembling from it needs --trust-remote")),
        ("metrics", ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in c.metrics.items()) or "-"),
        ("lineage", ", ".join(f"{k}={v}" for k, v in c.lineage.items()) or "-"),
        ("creator", m.get("creator") or "-"),
        ("licence", m.get("licence") or "-"),
        ("created", f"{m.get('created')} with manyfold {m.get('manyfold')}"),
        ("summary", f"{s.n_prototypes} prototypes for {len(s.labels)} labels (at most {s.per_label} per label, "
                    f"each the mean of >= 3 items), {s.dim}-d; {int(s.counts.sum())} items counted"),
        ("checksums", f"{len(pkg.checksums)} members verified (sha256): " + ", ".join(sorted(pkg.checksums))),
        ("signature", _signature_line(pkg)),
    ]
    for k, v in rows:
        echo(f"{k:<10} {v}")
    return pkg


def verify_main(path: str | os.PathLike[str], echo: Echo, *, trusted_keys: Iterable[KeySource] | None = None,
                require_signature: bool = False, expected_encoder_id: str | None = None,
                expected_modality: str | None = None) -> ExpertPackage:
    """Verify the package at ``path`` (see :func:`read_package`) and echo one ``ok`` line."""
    pkg = read_package(path, trusted_keys=trusted_keys, require_signature=require_signature,
                       expected_encoder_id=expected_encoder_id, expected_modality=expected_modality)
    echo(f"ok: {str(pkg.path)!r} holds expert {pkg.name!r} ({len(pkg.labels)} labels, encoder {pkg.encoder_id!r}); "
         f"{len(pkg.checksums)} checksums verified; {_signature_line(pkg)}")
    return pkg


def keygen_main(out_dir: str | os.PathLike[str], echo: Echo, *, name: str = "manyfold-signing") -> tuple[Path, Path]:
    """Write a new ed25519 key pair as ``out_dir/NAME.key`` (private, mode 0600) and ``NAME.pub``; never overwrites."""
    from ..experts import check_name

    check_name(name, "key")
    d = Path(out_dir).expanduser()
    if d.exists() and not d.is_dir():
        raise ConfigError(f"{str(d)!r} is not a folder")
    key, pub = d / f"{name}.key", d / f"{name}.pub"
    for f in (key, pub):
        if f.exists():
            raise ConfigError(f"{str(f)!r} already exists; choose another folder or name (keys are never overwritten)")
    private_pem, public_pem = generate_keypair()
    atomic_write_bytes(key, private_pem)  # a temp file is created 0600, and the rename keeps the mode
    os.chmod(key, 0o600)
    atomic_write_bytes(pub, public_pem)
    os.chmod(pub, 0o644)
    echo(f"wrote private key {str(key)!r} (keep it secret: it signs packages) and public key {str(pub)!r} "
         "(give it to whoever installs your packages)")
    return key, pub
