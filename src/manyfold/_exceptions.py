"""The one exception tree of manyfold.

Every error manyfold raises on purpose is a :class:`ManyfoldError`; catch that to
catch them all. The leaves also derive from the matching built-in, so code that
already catches ``ValueError`` or ``ImportError`` keeps working::

    ManyfoldError
    ├── ConfigError          (ValueError)    a parameter has a bad value
    ├── InputError           (ValueError)    a request item is empty, not a string, too long, ...
    ├── NotFittedError       (RuntimeError)  predict/save before fit
    ├── NotFoundError        (LookupError)   a name that does not exist
    │   ├── AssemblyNotFoundError
    │   ├── ExpertNotFoundError
    │   └── EncoderNotFoundError
    ├── ArtifactError        (OSError)       an artifact on disk is corrupted, truncated or incompatible
    │   └── TrustError                       it asks for what needs your opt-in (remote generalist, ...)
    ├── DataError            (OSError)       a dataset is missing, fails its checksum or cannot be fetched
    ├── DependencyError      (ImportError)   an optional dependency is not installed (message has the install hint)
    └── GeneralistError      (RuntimeError)  the generalist (big model / LLM endpoint) failed to answer

Messages name the bad value and, where there is a closed set, the valid choices.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = [
    "ManyfoldError",
    "ConfigError",
    "InputError",
    "NotFittedError",
    "NotFoundError",
    "AssemblyNotFoundError",
    "ExpertNotFoundError",
    "EncoderNotFoundError",
    "ArtifactError",
    "TrustError",
    "DataError",
    "DependencyError",
    "GeneralistError",
]


class ManyfoldError(Exception):
    """Base class of every error manyfold raises on purpose."""


class ConfigError(ManyfoldError, ValueError):
    """A parameter or configuration value is invalid."""


class InputError(ManyfoldError, ValueError):
    """A request item is invalid (empty, wrong type, too long, ...)."""


class NotFittedError(ManyfoldError, RuntimeError):
    """An estimator was used before ``fit``."""


class NotFoundError(ManyfoldError, LookupError):
    """A named thing does not exist."""

    def __init__(self, kind: str, name: str, choices: Iterable[str] = ()) -> None:
        self.kind, self.name = kind, name
        self.choices = sorted(choices)
        shown = ", ".join(self.choices[:20]) + (" ..." if len(self.choices) > 20 else "")
        msg = f"unknown {kind} {name!r}"
        msg += f"; valid choices: {shown}" if self.choices else f"; there is no {kind} yet"
        super().__init__(msg)

    def __str__(self) -> str:  # LookupError would quote the message like a KeyError
        return self.args[0]


class AssemblyNotFoundError(NotFoundError):
    def __init__(self, name: str, choices: Iterable[str] = ()) -> None:
        super().__init__("assembly", name, choices)


class ExpertNotFoundError(NotFoundError):
    def __init__(self, name: str, choices: Iterable[str] = ()) -> None:
        super().__init__("expert", name, choices)


class EncoderNotFoundError(NotFoundError):
    def __init__(self, name: str, choices: Iterable[str] = ()) -> None:
        super().__init__("encoder", name, choices)


class ArtifactError(ManyfoldError, OSError):
    """An artifact on disk is corrupted, truncated or of an unknown format version."""


class TrustError(ArtifactError):
    """A saved artifact asks for something that needs the user's opt-in (``trust_remote``): a remote
    generalist, an API-key environment variable, a non-built-in encoder (a local model folder or hub id)."""


class DataError(ManyfoldError, OSError):
    """A dataset is missing, fails its checksum, or cannot be downloaded."""


class DependencyError(ManyfoldError, ImportError):
    """An optional dependency is missing; the message says what to install."""


class GeneralistError(ManyfoldError, RuntimeError):
    """The generalist failed to answer (timeout, bad response, endpoint down)."""


def missing_dependency(package: str, extra: str, feature: str) -> DependencyError:
    """Build the install-hint error for an optional dependency."""
    return DependencyError(
        f"{feature} needs the optional package {package!r}, which is not installed; "
        f'install it with: pip install "manyfold[{extra}]"'
    )
