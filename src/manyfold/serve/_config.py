"""Frozen configuration of the HTTP server (a plain dataclass: no web framework needed to build one)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from .._exceptions import ConfigError

__all__ = ["ServeConfig", "ADMIN_TOKEN_ENV"]

#: environment variable read for the admin bearer token when ``ServeConfig.admin_token`` is None
ADMIN_TOKEN_ENV = "MANYFOLD_ADMIN_TOKEN"


@dataclass(frozen=True)
class ServeConfig:
    """How :func:`manyfold.serve.create_app` serves an assembly.

    - ``assembly``: a registry name (loaded at start-up, in the background) or an
      :class:`~manyfold.Assembly` object (served as given; handy in tests).
    - ``version``: the registry version to load (default: the latest).
    - ``name``: the registry name used by reloads and expert changes when
      ``assembly`` is an object (default: ``assembly`` when it is a name).
    - ``registry_root``: registry directory (default ``$MANYFOLD_HOME/registry``).
    - ``admin_token``: bearer token of the admin endpoints (default: the
      ``MANYFOLD_ADMIN_TOKEN`` environment variable; with neither, admin is off).
    - ``max_batch_size``: most items one micro-batch gathers (one request larger
      than this runs alone); ``max_wait_ms``: how long the batcher waits for more
      requests after the first; ``max_queue``: requests waiting or running
      before new ones get 503; ``micro_batching``: off runs each request on its own.
    - ``generalist_stage`` (with micro-batching): escalated items wait for the
      generalist in a stage of their own, so the other items of a batch are
      answered as soon as the experts have; off runs each batch through both.
    - ``request_timeout_s``: a request not answered by then gets 504 (its
      remaining work is dropped; so is a disconnected caller's).
    - ``max_items_per_request`` (422 beyond), ``max_body_bytes`` (413 beyond).
    - Work budget (texts; docs/serve.md has the measured cost):
      ``max_request_chars``: the characters of one request's texts together
      (413 beyond); ``max_queued_chars``: the characters of all admitted,
      unanswered requests together (a new request that would pass it gets 503 +
      ``Retry-After``; requests that run in parts may hold half of it, the
      rest is kept for small requests); ``max_batch_chars``: the most characters
      in one encoder batch; ``max_part_chars``: a request over this many
      characters (or ``max_batch_size`` items) is *large* and runs in parts of at
      most this many (an item is never cut), each in a batch of its own: small
      requests go first, the large ones take turns (deficit round robin over
      characters) and get at least every second batch, so a small request waits
      for at most one part of a large one (at most ``max_batch_chars``);
      ``max_generalist_batch_chars``: the most characters in one generalist call
      (escalated items are gathered round robin across requests, a large
      request's apart); ``max_escalated_chars``: the characters of
      one request's items that may go to the generalist (its first escalated
      item always may); its other escalated items keep the experts' answer,
      flagged ``degraded`` (reason ``escalation_budget: ...``);
      ``generalist_deadline_ms``: an escalated item still waiting for the
      generalist this long after its request arrived is answered with the
      experts' answer, flagged ``degraded`` (reason ``generalist_deadline:
      ...``) and counted (``manyfold_generalist_deadline_items``): the
      generalist never holds an answer the experts already have past it (an item
      whose generalist call has started waits for that call). ``None`` (the
      default): escalated items wait for the generalist however long it takes
      (up to ``request_timeout_s``). A latency bound for a busy server, at the
      cost of the generalist's accuracy on the items it misses;
      ``large_nice``: large requests (more than one part) run in a thread of
      their own, their parts and their escalated items, whose niceness is raised
      by this much (Linux; 0: the normal priority), so their long texts take the
      cores small requests leave idle instead of sharing them evenly, and a small
      request never waits for a large one's part.
    - Slow clients: ``header_timeout_s`` (a request's headers must have arrived
      this long after its first byte, or after the connection opened; the
      connection is closed), ``body_timeout_s`` (the whole body, from the end
      of the headers; 408 and the connection closed), ``max_connections``
      (open connections; one more gets 503 and is closed). The header timeout
      and the connection cap are enforced by :func:`serve_main`'s uvicorn
      protocol, the body timeout by the app (any ASGI server).
    - Images (an assembly whose encoder takes images; 413 beyond each limit,
      checked before any pixel is decoded): ``max_image_bytes`` (one image's
      file), ``max_image_pixels`` (one image's width x height, read from its
      header), ``max_request_pixels`` (all the images of one request),
      ``max_images_per_request``, and ``max_image_body_bytes``: the body limit of
      ``/v1/predict`` and ``/v1/route`` on such an assembly, in place of
      ``max_body_bytes`` (base64 adds a third to every image).
    - ``dataset``: a :class:`~manyfold.Dataset` (or a dataset name, loaded from
      ``data_dir``) whose train/val splits refit the router when experts are
      added or removed over HTTP; without it those endpoints answer 409.
    - ``save_changes``: save reconfigured assemblies as a new registry version.
    - ``embedding_cache``: load with the on-disk embedding cache (off by
      default: served texts are mostly new, and the cache writes one shard per
      batch of new texts).
    - ``request_log``: a JSONL file; every answered ``/v1/predict`` request is
      appended to it (items, labels, escalated): a pool for ``manyfold distill``.
      Created 0600; when it would pass ``request_log_max_bytes`` it is rotated
      (``FILE.1`` ... ``FILE.<request_log_backups>``, the oldest deleted), so
      at most ``(request_log_backups + 1) * request_log_max_bytes`` are kept.
    - ``allowed_hosts``: ``Host`` header names answered besides the loopback
      names (``localhost``, ``127.0.0.1``, ``::1``) and the address the
      connection arrived on (``manyfold serve --host NAME`` adds ``NAME``);
      ``"*.example.com"`` takes its subdomains, ``"*"`` any host. Any other
      host gets 400 (a defence against DNS rebinding).
    - ``trust_remote``: load a registry version whose generalist is remote (and
      sent an API key) or whose encoder is not built in (default ``None``:
      ``$MANYFOLD_TRUST_REMOTE``); without it such a version is refused (403 on
      reload).
    - ``console``: serve the web console at ``/`` and ``/ui`` (and the JSON it reads,
      ``/v1/console/info`` and ``/v1/console/stats``); off, those paths are 404.
    """

    assembly: Any
    version: int | None = None
    name: str | None = None
    registry_root: str | None = None
    admin_token: str | None = None
    max_batch_size: int = 64
    max_wait_ms: float = 5.0
    max_queue: int = 1024
    request_timeout_s: float = 30.0
    max_items_per_request: int = 256
    max_body_bytes: int = 1 << 20
    max_image_bytes: int = 10_000_000
    max_image_pixels: int = 16_000_000
    max_request_pixels: int = 64_000_000
    max_images_per_request: int = 64
    max_image_body_bytes: int = 64 << 20
    max_request_chars: int = 16_384
    max_queued_chars: int = 65_536
    max_batch_chars: int = 4_096
    max_part_chars: int = 1_024
    max_generalist_batch_chars: int = 1_024
    max_escalated_chars: int = 2_048
    generalist_deadline_ms: float | None = None
    large_nice: int = 10
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    max_connections: int = 2048
    micro_batching: bool = True
    generalist_stage: bool = True
    dataset: Any = None
    data_dir: str | None = None
    save_changes: bool = True
    embedding_cache: bool = False
    request_log: str | None = None
    request_log_max_bytes: int = 64 << 20
    request_log_backups: int = 4
    allowed_hosts: tuple[str, ...] = ()
    trust_remote: bool | None = None
    console: bool = True

    def __post_init__(self) -> None:
        if self.assembly is None or (isinstance(self.assembly, str) and not self.assembly):
            raise ConfigError("ServeConfig.assembly must be a registry name or an Assembly")
        if not isinstance(self.assembly, str) and not hasattr(self.assembly, "forward"):
            raise ConfigError(f"ServeConfig.assembly must be a registry name or an Assembly, got {type(self.assembly).__name__}")
        for f in ("max_batch_size", "max_queue", "max_items_per_request", "max_body_bytes", "max_image_bytes",
                  "max_image_pixels", "max_request_pixels", "max_images_per_request", "max_image_body_bytes",
                  "max_request_chars", "max_queued_chars", "max_batch_chars", "max_part_chars", "max_generalist_batch_chars", "max_escalated_chars",
                  "max_connections",
                  "request_log_max_bytes"):
            v = getattr(self, f)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"ServeConfig.{f} must be a positive integer, got {v!r}")
        if not isinstance(self.request_log_backups, int) or isinstance(self.request_log_backups, bool) \
                or self.request_log_backups < 0:
            raise ConfigError(f"ServeConfig.request_log_backups must be an integer >= 0, got {self.request_log_backups!r}")
        for f in ("max_wait_ms", "request_timeout_s", "header_timeout_s", "body_timeout_s"):
            v = getattr(self, f)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0 or (f != "max_wait_ms" and v == 0):
                raise ConfigError(f"ServeConfig.{f} must be a positive number, got {v!r}")
        d = self.generalist_deadline_ms
        if d is not None and (not isinstance(d, (int, float)) or isinstance(d, bool) or not 0 < d < float("inf")):
            raise ConfigError(f"ServeConfig.generalist_deadline_ms must be a positive number of milliseconds or None "
                              f"(no deadline), got {d!r}")
        if d is not None and not (self.micro_batching and self.generalist_stage):
            raise ConfigError("ServeConfig.generalist_deadline_ms needs micro_batching=True and generalist_stage=True: "
                              "escalated items wait for the generalist in a stage of their own")
        if not isinstance(self.large_nice, int) or isinstance(self.large_nice, bool) \
                or not 0 <= self.large_nice <= 19:
            raise ConfigError("ServeConfig.large_nice must be an integer from 0 (the normal priority) "
                              f"to 19, got {self.large_nice!r}")
        if self.max_part_chars > self.max_batch_chars:
            raise ConfigError(f"ServeConfig.max_part_chars ({self.max_part_chars:,}) must be at most max_batch_chars "
                              f"({self.max_batch_chars:,}): a part of a large request runs in one batch")
        if self.max_request_chars > self.max_queued_chars // 2:
            raise ConfigError(f"ServeConfig.max_request_chars ({self.max_request_chars:,}) must be at most half of "
                              f"max_queued_chars ({self.max_queued_chars:,}): large requests may hold half of the "
                              "admitted work")
        if self.version is not None and (not isinstance(self.version, int) or self.version < 1):
            raise ConfigError(f"ServeConfig.version must be a positive integer, got {self.version!r}")
        hosts = self.allowed_hosts
        if isinstance(hosts, str) or not isinstance(hosts, (tuple, list)) or not all(
                isinstance(h, str) and h.strip() and not any(c in h for c in " /,") for h in hosts):
            raise ConfigError("ServeConfig.allowed_hosts must be a tuple of host names (e.g. ('api.example.com', "
                              f"'*.example.com'), or ('*',) for any), got {hosts!r}")
        object.__setattr__(self, "allowed_hosts", tuple(h.strip().lower() for h in hosts))
        if not isinstance(self.console, bool):
            raise ConfigError(f"ServeConfig.console must be True or False, got {self.console!r}")
        if self.trust_remote is not None and not isinstance(self.trust_remote, bool):
            raise ConfigError(f"ServeConfig.trust_remote must be True, False or None, got {self.trust_remote!r}")

    @property
    def registry_name(self) -> str | None:
        """The registry name reloads and expert changes use (None: not served from a registry)."""
        return self.assembly if isinstance(self.assembly, str) else self.name

    def resolved_admin_token(self) -> str | None:
        """The admin token: the configured one, else ``$MANYFOLD_ADMIN_TOKEN``, else None (admin off)."""
        return self.admin_token or os.environ.get(ADMIN_TOKEN_ENV) or None
