"""Pure ASGI middlewares: the body-size limit (413 before the app reads the body) and request metrics.

Pure ASGI rather than Starlette's ``BaseHTTPMiddleware``: that one costs a
task and a stream per request, which a 2-core server under load notices.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

__all__ = ["BodySizeLimit", "RequestMetrics"]


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
    """413 for a request body over the limit (by ``Content-Length``, or counted while streaming).

    The limit is ``max_bytes`` (named ``max_body_bytes`` in the answer), or what
    ``limit_for(scope)`` says for this request: ``(bytes, name of the setting)``
    (image uploads have a limit of their own).
    """

    def __init__(self, app: Any, max_bytes: int, limit_for: Callable[[Any], tuple[int, str]] | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.limit_for = limit_for

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
        while more:  # read (at most max_bytes + one chunk), then replay it to the app
            msg = await receive()
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
