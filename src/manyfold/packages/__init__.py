"""Portable expert packages: build an expert in one place, ship one file, verify it and plug it in elsewhere.

A package (``*.mfx``, see :mod:`manyfold.packages._format`) holds an expert's
card, weights and a routing summary (per-label prototypes in the routing
encoder's space, never the training items), with a sha256 manifest of every
member and an optional ed25519 signature. Reading one never extracts to disk,
never unpickles and never imports anything named in the file.

>>> from manyfold.packages import pack_expert, read_package          # doctest: +SKIP
>>> pack_expert(expert, encoder_id=enc.id, encoder_spec=enc.spec, encoder_dim=enc.dim,
...             modality="text", X=enc.encode(texts), y=labels, out_path="banking.mfx")  # doctest: +SKIP
>>> pkg = read_package("banking.mfx", expected_encoder_id=enc.id)   # doctest: +SKIP

See ``docs/packages.md`` for the format, what the summary reveals, and what
checksums and signatures do and do not protect against.
"""

from ._cli import inspect_main, keygen_main, pack_main, verify_main
from ._format import FORMAT_VERSION, ExpertPackage, check_collisions, pack_expert, read_package
from ._sign import generate_keypair
from ._summary import RoutingSummary, summarize

__all__ = [
    "FORMAT_VERSION",
    "ExpertPackage",
    "RoutingSummary",
    "summarize",
    "pack_expert",
    "read_package",
    "check_collisions",
    "generate_keypair",
    "pack_main",
    "inspect_main",
    "verify_main",
    "keygen_main",
]
