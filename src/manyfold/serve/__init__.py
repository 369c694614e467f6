"""manyfold.serve: one HTTP API for an assembly (FastAPI + dynamic micro-batching; optional Ray Serve).

>>> from manyfold.serve import ServeConfig, create_app          # doctest: +SKIP
>>> app = create_app(ServeConfig(assembly="clinc150"))            # doctest: +SKIP

or from the shell: ``manyfold serve clinc150 --port 8000`` (see :func:`serve_main`).
Needs the ``serve`` extra (fastapi, uvicorn, prometheus_client).
"""

from __future__ import annotations

from typing import Any

from ._config import ADMIN_TOKEN_ENV, ServeConfig

__all__ = ["ServeConfig", "create_app", "serve_main", "build_ray_app", "ADMIN_TOKEN_ENV"]


def create_app(config: ServeConfig) -> Any:
    """The FastAPI app serving ``config`` (imports the web stack on first use)."""
    try:
        from ._app import create_app as _create
    except ImportError as exc:
        from .._exceptions import missing_dependency

        raise missing_dependency(exc.name or "fastapi", "serve", "manyfold serve") from exc
    return _create(config)


def serve_main(name: str, host: str = "127.0.0.1", port: int = 8000, registry: str | None = None, ray: bool = False,
               **opts: Any) -> None:
    """Serve registry assembly ``name`` on ``host:port`` until interrupted (what ``manyfold serve`` runs)."""
    from ._main import serve_main as _main

    _main(name, host, port, registry, ray, **opts)


def build_ray_app(config: ServeConfig, **kw: Any) -> Any:
    """The Ray Serve application for ``config`` (see :mod:`manyfold.serve._ray`)."""
    from ._ray import build_ray_app as _build

    return _build(config, **kw)
