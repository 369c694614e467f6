"""Pure ASGI middlewares: the body-size limit and read timeout (413 / 408 before the app reads the body), the admin
token check (401 / 403 before the body is read) and request metrics.

Pure ASGI rather than Starlette's ``BaseHTTPMiddleware``: that one costs a
task and a stream per request, which a 2-core server under load notices.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

__all__ = ["BodySizeLimit", "RequestMetrics", "AdminAuth"]


async def _answer(send: Any, status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]] = ()) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": data})


class AdminAuth:
    """Answers an admin request without the right token (401 / 403) before its body is read or parsed.

    ``applies(scope)`` says whether a request is an admin one; ``refuse(authorization)`` (the header's value or
    None) returns the error to answer (an object with ``status``, ``code``, ``message``, ``field``, ``headers``)
    or None to let the request through.
    """

    def __init__(self, app: Any, refuse: Callable[[str | None], Any], applies: Callable[[Any], bool]) -> None:
        self.app, self.refuse, self.applies = app, refuse, applies

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and self.applies(scope):
            raw = next((v for k, v in scope.get("headers", []) if k == b"authorization"), None)
            err = self.refuse(raw.decode("latin-1") if raw is not None else None)
            if err is not None:
                headers = [(k.lower().encode(), v.encode()) for k, v in (err.headers or {}).items()]
                return await _answer(send, err.status, {"error": err.code, "message": err.message, "field": err.field},
                                     headers)
        return await self.app(scope, receive, send)


class RequestMetrics:
    """Counts every HTTP request by endpoint, method and status, and observes its latency.

    ``record(endpoint, method, status, seconds)`` is called once per request;
    ``endpoint(path)`` maps a path to its route template (bounded label values).
    A request that ends in an exception before a response started counts as 500.
    """

    def __init__(self, app: Any, record: Callable[[str, str, int, float], None], endpoint: Callable[[str], str]) -> None:
        self.app = app
        self.record = record
        self.endpoint = endpoint

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        status = 500

        async def send_status(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            self.record(self.endpoint(scope["path"]), scope["method"], status, time.perf_counter() - t0)


class BodySizeLimit:
    """413 for a request body over the limit (by ``Content-Length``, or counted while streaming); 408 for a body
    that has not arrived whole within ``timeout_s`` (a slow client), with the connection closed.

    The limit is ``max_bytes`` (named ``max_body_bytes`` in the answer), or what
    ``limit_for(scope)`` says for this request: ``(bytes, name of the setting)``
    (image uploads have a limit of their own).
    """

    def __init__(self, app: Any, max_bytes: int, limit_for: Callable[[Any], tuple[int, str]] | None = None,
                 timeout_s: float | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.limit_for = limit_for
        self.timeout_s = timeout_s

    async def _reject(self, send: Any, size: str, limit: int, name: str) -> None:
        body = json.dumps({"error": "too_large", "field": "body",
                           "message": f"the request body is {size} bytes; the limit is {limit} ({name})"}
                          ).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit, name = self.limit_for(scope) if self.limit_for is not None else (self.max_bytes, "max_body_bytes")
        for k, v in scope.get("headers", []):
            if k == b"content-length":
                try:
                    n = int(v)
                except ValueError:
                    n = -1
                if n > limit:
                    return await self._reject(send, str(n), limit, name)
        chunks, total, more = [], 0, True
        deadline = None if self.timeout_s is None else time.perf_counter() + self.timeout_s
        while more:  # read (at most max_bytes + one chunk), then replay it to the app
            try:
                msg = await (receive() if deadline is None else
                             asyncio.wait_for(receive(), max(0.0, deadline - time.perf_counter())))
            except asyncio.TimeoutError:
                return await _answer(send, 408, {
                    "error": "timeout", "field": "body",
                    "message": f"the request body did not arrive within {self.timeout_s} s (body_timeout_s; "
                               f"{total} bytes came)"}, [(b"connection", b"close")])
            if msg["type"] == "http.disconnect":
                return None
            chunks.append(msg.get("body", b""))
            total += len(chunks[-1])
            more = msg.get("more_body", False)
            if total > limit:
                return await self._reject(send, f"more than {limit}", limit, name)
        body = b"".join(chunks)
        sent = False

        async def replay() -> Any:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)
