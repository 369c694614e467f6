"""Optional ed25519 signatures of expert packages (the ``sign`` extra: ``cryptography``).

Checksums catch corruption and a tampered member, but anyone can re-pack a
package with fresh checksums. A signature over ``MANIFEST.sha256`` (which
names every other member's sha256) ties the whole package to a private key;
a reader that trusts only some public keys refuses anything else.

The ``SIGNATURE`` member is JSON: ``{"algorithm": "ed25519", "public_key":
<base64 of the 32 raw bytes>, "signature": <base64 of 64 bytes>}``. The public
key in it only says *who claims* to have signed; trust comes from the reader's
own list of keys.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .._exceptions import ConfigError, missing_dependency

__all__ = ["generate_keypair", "load_private_key", "load_public_keys", "sign_manifest", "parse_signature",
           "fingerprint", "verify_signature"]

KeySource = str | bytes | os.PathLike


def _crypto() -> Any:
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError as exc:
        raise missing_dependency("cryptography", "sign", "signing and verifying expert packages") from exc
    return serialization, ed25519


def fingerprint(raw_public: bytes) -> str:
    """A short name for a public key: ``ed25519:`` + the first 16 hex digits of sha256 of its raw bytes."""
    return "ed25519:" + hashlib.sha256(raw_public).hexdigest()[:16]


def generate_keypair() -> tuple[bytes, bytes]:
    """A new ed25519 key pair as ``(private_pem, public_pem)`` (PKCS#8, unencrypted; SubjectPublicKeyInfo)."""
    serialization, ed25519 = _crypto()
    key = ed25519.Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    return private_pem, public_pem


def _pem_bytes(source: KeySource, what: str) -> tuple[bytes, str]:
    """The PEM bytes of ``source`` (PEM text or a file path) and a name for messages."""
    if isinstance(source, bytes):
        return source, f"{what} (PEM bytes)"
    if isinstance(source, str) and source.lstrip().startswith("-----BEGIN"):
        return source.encode("ascii", "replace"), f"{what} (PEM text)"
    if not isinstance(source, (str, os.PathLike)):
        raise ConfigError(f"{what} must be PEM text, PEM bytes or a path to a PEM file, got {type(source).__name__}")
    path = Path(source).expanduser()
    try:
        return path.read_bytes(), f"{what} file {str(path)!r}"
    except OSError as exc:
        raise ConfigError(f"cannot read {what} file {str(path)!r}: {exc.strerror or exc}") from None


def load_private_key(source: KeySource) -> Any:
    """An ed25519 private key from unencrypted PEM text/bytes or a PEM file."""
    serialization, ed25519 = _crypto()
    data, where = _pem_bytes(source, "signing key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{where} is not an unencrypted PEM private key: {exc}") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise ConfigError(f"{where} is a {type(key).__name__}; expert packages are signed with ed25519 keys "
                          "(make one with `manyfold experts keygen`)")
    return key


def load_public_keys(sources: Iterable[KeySource] | KeySource) -> dict[bytes, str]:
    """Trusted ed25519 public keys (PEM text/bytes or files) as ``{raw 32 bytes: where it came from}``."""
    serialization, ed25519 = _crypto()
    if isinstance(sources, (str, bytes, os.PathLike)):
        sources = [sources]
    keys: dict[bytes, str] = {}
    for src in sources:
        data, where = _pem_bytes(src, "trusted key")
        try:
            key = serialization.load_pem_public_key(data)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{where} is not a PEM public key: {exc}") from None
        if not isinstance(key, ed25519.Ed25519PublicKey):
            raise ConfigError(f"{where} is a {type(key).__name__}; expert packages are signed with ed25519 keys")
        raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        keys[raw] = where
    if not keys:
        raise ConfigError("trusted_keys is empty: give at least one ed25519 public key, or None to skip the check")
    return keys


def sign_manifest(manifest: bytes, signing_key: KeySource) -> bytes:
    """The ``SIGNATURE`` member for ``manifest`` (the bytes of ``MANIFEST.sha256``)."""
    serialization, _ = _crypto()
    key = load_private_key(signing_key)
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    doc = {"algorithm": "ed25519", "public_key": base64.b64encode(raw).decode(),
           "signature": base64.b64encode(key.sign(manifest)).decode()}
    return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()


def parse_signature(data: bytes) -> tuple[bytes, bytes]:
    """``(raw public key, signature)`` from a ``SIGNATURE`` member; a malformed one is a ``ValueError``."""
    try:
        doc = json.loads(data.decode("utf-8"))
        if not isinstance(doc, dict) or doc.get("algorithm") != "ed25519":
            algorithm = doc.get("algorithm") if isinstance(doc, dict) else None
            raise ValueError(f"malformed SIGNATURE (algorithm {algorithm!r}, expected 'ed25519')")
        pub = base64.b64decode(doc["public_key"], validate=True)
        sig = base64.b64decode(doc["signature"], validate=True)
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, binascii.Error) as exc:
        raise ValueError(f"malformed SIGNATURE ({type(exc).__name__})") from None
    if len(pub) != 32 or len(sig) != 64:
        raise ValueError("malformed SIGNATURE (an ed25519 key has 32 bytes and a signature 64)")
    return pub, sig


def verify_signature(manifest: bytes, public_raw: bytes, signature: bytes) -> bool:
    """Whether ``signature`` is ``public_raw``'s ed25519 signature of ``manifest``."""
    _, ed25519 = _crypto()
    from cryptography.exceptions import InvalidSignature

    try:
        ed25519.Ed25519PublicKey.from_public_bytes(public_raw).verify(signature, manifest)
    except (InvalidSignature, ValueError):
        return False
    return True
