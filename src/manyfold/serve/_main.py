"""``serve_main``: the entry point ``manyfold serve NAME`` calls."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from .._exceptions import ConfigError, missing_dependency
from ._config import ServeConfig

__all__ = ["serve_main", "uvicorn_options"]

_FIELDS = {f.name for f in dataclasses.fields(ServeConfig)} - {"assembly", "registry_root"}


def uvicorn_options(app: Any, config: ServeConfig, keep_alive_s: float = 30.0) -> dict[str, Any]:
    """The uvicorn options ``serve_main`` runs ``app`` with: the guarded h11 protocol (``header_timeout_s``,
    ``max_connections``; its refusals counted in ``manyfold_rejected_requests_total``) and the keep-alive."""
    from ._conn import guarded_h11_protocol

    metrics = app.state.metrics
    protocol = guarded_h11_protocol(config.header_timeout_s, config.max_connections,
                                    on_refused=lambda reason: metrics.rejected.labels(reason).inc())
    return {"http": protocol, "timeout_keep_alive": keep_alive_s}


def serve_main(name: str, host: str = "127.0.0.1", port: int = 8000, registry: str | None = None, ray: bool = False,
               *, log_level: str = "info", threads: int | None = None, keep_alive_s: float = 30.0,
               ray_expert_replicas: int = 1, ray_generalist_replicas: int = 1, **opts: Any) -> None:
    """Serve registry assembly ``name`` on ``host:port`` (blocks until interrupted).

    ``registry``: registry root (default ``$MANYFOLD_HOME/registry``). ``opts``
    are :class:`ServeConfig` fields (``version``, ``admin_token``,
    ``max_batch_size``, ``max_wait_ms``, ``max_queue``, ``request_timeout_s``,
    ``max_items_per_request``, ``max_body_bytes``, ``micro_batching``, ``generalist_stage``,
    ``dataset``, ``data_dir``, ``save_changes``, ``allowed_hosts``, ``trust_remote``). A ``host`` that is a
    name or address (not ``0.0.0.0`` / ``::``) is added to ``allowed_hosts``. ``ray=True`` deploys on Ray
    Serve instead of uvicorn (experts and generalist as their own deployments).
    ``threads``: the process's thread budget (:func:`manyfold.set_threads`: torch's
    intra-op pool and every onnxruntime session; default ``MANYFOLD_THREADS``, else
    the cores); 1 is much faster on a machine whose cores are shared with other
    jobs, where spinning thread pools wait on descheduled threads. The budget is
    logged at start. numpy's BLAS runs on one thread in the server
    (:func:`~manyfold._threads.single_threaded_blas`: its worker threads would run a large
    request's numpy work at the normal priority).
    ``keep_alive_s``: how long idle HTTP keep-alive connections stay open.
    Slow clients: uvicorn runs with :func:`~manyfold.serve._conn.guarded_h11_protocol`
    (``header_timeout_s``, ``max_connections`` of the config; the app enforces
    ``body_timeout_s``), and the process's open-files limit is raised to fit
    ``max_connections`` where the hard limit allows.
    """
    unknown = sorted(set(opts) - _FIELDS)
    if unknown:
        raise ConfigError(f"unknown serve options {unknown}; valid: {sorted(_FIELDS)}")
    if host not in ("0.0.0.0", "::", "") and "*" not in opts.get("allowed_hosts", ()):  # the bound name is a host of ours
        opts["allowed_hosts"] = (*opts.get("allowed_hosts", ()), host)
    if opts.get("trust_remote") is None:  # decided here, so that Ray's replicas inherit the decision
        from .._trust import trust_remote

        opts["trust_remote"] = trust_remote()
    config = ServeConfig(assembly=name, registry_root=registry, **opts)
    from .._threads import describe_threads, set_threads, single_threaded_blas

    if threads is not None:
        set_threads(threads)
    blas = single_threaded_blas()  # large requests' numpy work stays in their lower-priority thread
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("manyfold.serve").info("%s; %s", describe_threads(), blas)
    if ray:
        from ._ray import run_ray

        run_ray(config, host=host, port=port, expert_replicas=ray_expert_replicas,
                generalist_replicas=ray_generalist_replicas)
        return
    try:
        import uvicorn
    except ImportError as exc:
        raise missing_dependency("uvicorn", "serve", "manyfold serve") from exc
    from . import create_app
    from ._conn import raise_open_files_limit

    app = create_app(config)
    raise_open_files_limit(config.max_connections + 256)
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False,
                **uvicorn_options(app, config, keep_alive_s))
