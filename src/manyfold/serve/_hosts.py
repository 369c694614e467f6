"""The ``Host`` header check (pure ASGI): a defence against DNS rebinding.

A web page can make a browser send requests to ``attacker.example`` after its
DNS answer has changed to ``127.0.0.1``: the request reaches a server on
loopback, with ``Host: attacker.example``. The server answers only the hosts it
knows, so such a page can never read an answer:

* the loopback names ``localhost``, ``127.0.0.1`` and ``::1``;
* the address the connection arrived on (the ASGI ``server``: the socket's own
  address, e.g. ``192.168.1.5`` for a server bound to ``0.0.0.0`` and reached
  on that interface; an IP literal cannot be rebound);
* ``ServeConfig.allowed_hosts`` (``manyfold serve --host NAME`` adds ``NAME``):
  exact names, ``*.example.com`` for the subdomains of ``example.com``, ``*``
  for any host (behind a proxy that checks it).

A request with another host gets 400 with the usual error body (field
``host``). A request without a ``Host`` header (HTTP/1.0) passes: a browser
always sends one.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

__all__ = ["HostCheck", "LOOPBACK_HOSTS", "host_of", "host_allowed"]

LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")


def host_of(value: str) -> str:
    """The host part of a ``Host`` header value, lower case: ``[::1]:8000`` -> ``::1``, ``Example.com.:80`` ->
    ``example.com``."""
    v = value.strip().lower()
    if v.startswith("["):
        v = v[1:].split("]", 1)[0]
    elif v.count(":") == 1:
        v = v.split(":", 1)[0]
    return v.rstrip(".")


def host_allowed(host: str, patterns: Iterable[str]) -> bool:
    """Whether ``host`` (from :func:`host_of`) is one of ``patterns`` (exact, ``*.suffix`` or ``*``)."""
    for p in patterns:
        if p == "*" or p == host or (p.startswith("*.") and host.endswith(p[1:]) and len(host) > len(p) - 1):
            return True
    return False


class HostCheck:
    """400 for a request whose ``Host`` is not among the allowed ones (see the module docstring)."""

    def __init__(self, app: Any, allowed: Iterable[str] = ()) -> None:
        self.app = app
        self.allowed = (*LOOPBACK_HOSTS, *(host_of(h) if not h.startswith("*") else h for h in allowed))

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        raw = next((v for k, v in scope.get("headers", []) if k == b"host"), None)
        if raw is not None:
            host = host_of(raw.decode("latin-1"))
            server = scope.get("server") or (None, None)
            arrived = host_of(str(server[0])) if server[0] else None
            if host != arrived and not host_allowed(host, self.allowed):
                return await self._reject(send, host)
        return await self.app(scope, receive, send)

    async def _reject(self, send: Any, host: str) -> None:
        shown = host if len(host) <= 80 else host[:77] + "..."
        body = json.dumps({"error": "invalid_host", "field": "host",
                           "message": f"host: this server does not answer for {shown!r}; it answers "
                                      f"{', '.join(self.allowed)} and the address it is reached at "
                                      "(more: ServeConfig.allowed_hosts, manyfold serve --allowed-host)"}).encode()
        await send({"type": "http.response.start", "status": 400,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
