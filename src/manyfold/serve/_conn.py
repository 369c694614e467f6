"""Slow clients and connection floods, at the connection level (uvicorn's h11 protocol, used by ``serve_main``).

uvicorn times out idle keep-alive connections, but not a client that sends its
request headers one byte at a time (nor one that opens a connection and sends
nothing), and it accepts every connection. :func:`guarded_h11_protocol` adds:

* a header timeout: a request's headers must be complete ``header_timeout_s``
  after the connection opened, or after the first byte of a later request on a
  keep-alive connection; otherwise the server answers 408 and closes it;
* a connection cap: a connection that would make more than ``max_connections``
  open is answered 503 (``Retry-After: 1``) and closed at once.

Both answers are written before any request is read, as one short JSON error
(``{"error", "message", "field"}``). The body timeout is the app's own
(:class:`~manyfold.serve._limits.BodySizeLimit`), so it holds under any ASGI
server; the header size is bounded by h11 (16 KiB: a longer head is a 400).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

__all__ = ["guarded_h11_protocol", "raise_open_files_limit"]


def _raw_answer(status: int, reason: str, error: str, message: str, extra: str = "") -> bytes:
    body = json.dumps({"error": error, "message": message, "field": None}).encode()
    head = (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            f"{extra}connection: close\r\n\r\n")
    return head.encode("latin-1") + body


def guarded_h11_protocol(header_timeout_s: float, max_connections: int,
                         on_refused: Callable[[str], None] | None = None) -> type:
    """A subclass of uvicorn's ``H11Protocol`` with a header timeout and a connection cap (see the module
    docstring); pass it as ``uvicorn.run(app, http=...)``. ``on_refused(reason)`` is called for each refused
    connection (``"header_timeout"`` or ``"connections"``)."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    too_slow = _raw_answer(408, "Request Timeout", "timeout",
                           f"the request headers did not arrive within {header_timeout_s} s (header_timeout_s)")
    too_many = _raw_answer(503, "Service Unavailable", "overloaded",
                           f"the server has {max_connections} open connections (max_connections); retry later",
                           "retry-after: 1\r\n")

    class GuardedH11Protocol(H11Protocol):
        _header_timer: Any = None

        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > max_connections:
                self._refuse(too_many, "connections")
                return
            self._arm()

        def data_received(self, data: bytes) -> None:
            if self.conn.their_state is h11.IDLE:  # the first bytes of a request: its headers are due in time
                self._arm()
            super().data_received(data)
            if self.conn.their_state is not h11.IDLE:  # the headers are complete
                self._disarm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            if self._header_timer is None:
                self._header_timer = self.loop.call_later(header_timeout_s, self._headers_too_slow)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_too_slow(self) -> None:
            self._header_timer = None
            if self.conn.their_state is h11.IDLE and (self.cycle is None or self.cycle.response_complete):
                self._refuse(too_slow, "header_timeout")

        def _refuse(self, answer: bytes, reason: str) -> None:
            if self.transport.is_closing():
                return
            self.transport.write(answer)
            self.transport.close()
            if on_refused is not None:
                on_refused(reason)

    return GuardedH11Protocol


def raise_open_files_limit(need: int) -> None:
    """Raise this process's soft limit of open files to ``need`` (at most the hard limit), where it is lower:
    ``max_connections`` sockets need as many descriptors."""
    try:
        import resource
    except ImportError:  # not on this platform
        return
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = need if hard == resource.RLIM_INFINITY else min(need, hard)
        if soft != resource.RLIM_INFINITY and soft < want:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    except (ValueError, OSError):  # not allowed here: the connection cap still holds, accept() may fail sooner
        pass
