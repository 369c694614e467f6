"""The component types the registry can rebuild, registered by the classes themselves.

A saved part's ``state.json`` carries ``"type": "<name>"``; :func:`component_class`
turns that name back into the class, and only registered classes can be
rebuilt (a name from a file never imports anything). A new kind of expert,
router, generalist or policy registers itself with :func:`register_component`.
"""

from __future__ import annotations

from typing import Any, TypeVar

from ._exceptions import ArtifactError

__all__ = ["register_component", "component_class", "component_names"]

_T = TypeVar("_T", bound=type)
_COMPONENTS: dict[str, type] = {}


def register_component(cls: _T, *, name: str | None = None) -> _T:
    """Register ``cls`` under ``name`` (default: its class name); usable as a decorator."""
    key = name or cls.__name__
    if not callable(getattr(cls, "from_state", None)):
        raise TypeError(f"{cls.__name__} cannot be registered: it has no from_state(config, arrays)")
    other = _COMPONENTS.get(key)
    if other is not None and other is not cls:
        raise TypeError(f"component type {key!r} is already registered to {other.__module__}.{other.__qualname__}")
    _COMPONENTS[key] = cls
    return cls


def _load_builtins() -> None:
    # importing the packages registers their classes
    from . import _policy, experts, generalists, routers  # noqa: F401


def component_class(name: Any, where: str = "") -> Any:
    """The registered class called ``name``; an unknown name is an :class:`ArtifactError` naming the valid ones."""
    _load_builtins()
    cls = _COMPONENTS.get(name) if isinstance(name, str) else None
    if cls is None:
        at = f" in {where!r}" if where else ""
        raise ArtifactError(f"unknown component type {name!r}{at}; known types: {', '.join(sorted(_COMPONENTS))}")
    return cls


def component_names() -> list[str]:
    _load_builtins()
    return sorted(_COMPONENTS)
