"""Ray Serve deployment of the same API (``manyfold serve NAME --ray``).

Three deployments: one per expert (``expert_replicas`` replicas each), one
for the generalist (``generalist_replicas``), and the ingress, which runs the
FastAPI app of :func:`create_app` (micro-batching, limits, metrics, admin)
with the encoder and router in-process and the experts and the generalist
reached through deployment handles. The assembly is composed by injection,
so the handles simply stand in for the expert and generalist objects.

An expert replica that fails raises in the ingress like a local expert would
(its items fall back to the generalist); a generalist call that fails
becomes a :class:`GeneralistError` (answers flagged ``degraded``). In Ray mode
``/v1/admin/reload`` swaps the ingress to a locally loaded version (experts
in-process); redeploy to move the remote ones to it.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np

from .._exceptions import GeneralistError, missing_dependency
from ._config import ServeConfig

__all__ = ["build_ray_app", "run_ray", "RemoteExpert", "RemoteGeneralist"]


def _ray() -> tuple[Any, Any]:
    try:
        import ray
        from ray import serve
    except ImportError as exc:
        raise missing_dependency("ray[serve]", "ray", "manyfold serve --ray") from exc
    return ray, serve


class RemoteExpert:
    """Stands in for a HeadExpert whose ``predict_proba`` runs in an expert deployment."""

    def __init__(self, name: str, labels: np.ndarray, card: dict[str, Any], handle: Any) -> None:
        self.name, self.labels_, self.handle = name, np.asarray(labels), handle
        self.card_ = type("Card", (), {"to_dict": lambda _self: dict(card)})()

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(self.handle.predict_proba.remote(np.asarray(X)).result())


class RemoteGeneralist:
    """Stands in for the generalist; its ``signals`` run in the generalist deployment."""

    def __init__(self, labels: np.ndarray, handle: Any) -> None:
        self.labels_, self.handle = np.asarray(labels), handle

    def signals(self, items: list[str]) -> tuple[np.ndarray, np.ndarray]:
        try:
            pg, fg = self.handle.signals.remote(list(items)).result()
        except Exception as exc:  # the replica or the call failed: the assembly degrades and counts it
            raise GeneralistError(f"generalist deployment failed: {type(exc).__name__}: {exc}") from exc
        return np.asarray(pg), np.asarray(fg)


def _component(config: ServeConfig, which: str) -> Any:
    from .._registry import Registry

    reg = Registry(config.registry_root)
    m = reg.manifest(config.registry_name, config.version)
    if which == "generalist":
        return reg.load(config.registry_name, m["version"], cache=config.embedding_cache,
                        trust_remote=config.trust_remote).generalist
    return reg._get(next(e for e in m["experts"] if e["name"] == which))


def build_ray_app(config: ServeConfig, *, expert_replicas: int = 1, generalist_replicas: int = 1,
                  replica_cpus: float = 0.25) -> Any:
    """The bound Ray Serve application for registry assembly ``config.assembly``.

    ``replica_cpus``: the CPUs Ray reserves per replica (fractional, so that
    every expert fits on a small machine; Serve's default is one each).
    """
    _, serve = _ray()
    if config.registry_name is None:
        from .._exceptions import ConfigError

        raise ConfigError("Ray Serve needs a registry assembly name (its replicas load their parts from the registry)")
    from .._registry import Registry

    manifest = Registry(config.registry_root).manifest(config.registry_name, config.version)
    cfg = dataclasses.replace(config, version=int(manifest["version"]))

    opts = {"num_cpus": replica_cpus}

    @serve.deployment(num_replicas=expert_replicas, ray_actor_options=opts)
    class Expert:
        def __init__(self, cfg: ServeConfig, name: str) -> None:
            self.expert = _component(cfg, name)

        def predict_proba(self, X: np.ndarray) -> np.ndarray:
            return self.expert.predict_proba(X)

    @serve.deployment(num_replicas=generalist_replicas, ray_actor_options=opts)
    class Generalist:
        def __init__(self, cfg: ServeConfig) -> None:
            self.gen = _component(cfg, "generalist")

        def signals(self, items: list[str]) -> tuple[np.ndarray, np.ndarray]:
            return self.gen.signals(items)

    @serve.deployment(ray_actor_options=opts)
    @serve.ingress()
    class Ingress:
        def __init__(self, cfg: ServeConfig, experts: dict[str, Any], generalist: Any) -> None:
            from .._registry import Registry

            asm = Registry(cfg.registry_root).load(cfg.registry_name, cfg.version, cache=cfg.embedding_cache,
                                                   trust_remote=cfg.trust_remote)
            asm.experts = [RemoteExpert(e.name, e.labels_, e.card_.to_dict(), experts[e.name]) for e in asm.experts]
            if asm.generalist is not None and generalist is not None:
                asm.generalist = RemoteGeneralist(asm.generalist.labels_, generalist)
            asm._layout()
            from manyfold.serve import create_app

            self._asgi = create_app(dataclasses.replace(cfg, assembly=asm, name=cfg.registry_name))

        def __serve_build_asgi_app__(self) -> Any:
            return self._asgi

    experts = {e["name"]: Expert.options(name=f"expert-{e['name']}").bind(cfg, e["name"]) for e in manifest["experts"]}
    gen = Generalist.bind(cfg) if manifest.get("generalist") else None
    return Ingress.bind(cfg, experts, gen)


def run_ray(config: ServeConfig, *, host: str = "127.0.0.1", port: int = 8000, expert_replicas: int = 1,
            generalist_replicas: int = 1) -> None:
    """Start Ray locally, deploy :func:`build_ray_app` on ``host:port`` and block until interrupted."""
    ray, serve = _ray()
    ray.init(ignore_reinit_error=True)
    serve.start(http_options={"host": host, "port": port})
    serve.run(build_ray_app(config, expert_replicas=expert_replicas, generalist_replicas=generalist_replicas),
              name="manyfold", route_prefix="/")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        serve.shutdown()
        ray.shutdown()
