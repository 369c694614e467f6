"""The web console: one page at ``GET /`` and ``GET /ui``, its script and style under ``/ui/``, and the JSON it reads.

Everything ships inside the package (``manyfold/serve/console/``): no build step,
nothing fetched at run time. The page is static; what it shows comes from the
API (``/v1/predict``, ``/v1/route``, ``/v1/experts``, the admin endpoints) and
from two read-only JSON endpoints added for it:

* ``GET /v1/console/info``: the assembly being served (name, version, what it
  takes, top k, out-of-scope label, calibration and thresholds) and which admin
  actions this server can do (a token configured, a registry name, a dataset).
  Never the token.
* ``GET /v1/console/stats``: the server's own counters
  (:meth:`ServeMetrics.snapshot`), which the live view differentiates between
  two polls (requests per second, escalation rate per expert, latency
  percentiles per stage from the histogram buckets, queue depth).

Safe by construction: every console asset is answered with a
Content-Security-Policy that allows scripts and styles from this origin only
(``script-src 'self'``: no inline script, no ``eval``), no framing, no form
posts, ``connect-src 'self'``; plus ``X-Content-Type-Options: nosniff`` and no
referrer. The script writes text with ``textContent`` only (never HTML), and
the admin token typed in the page stays in a variable of the page (never a
cookie, never web storage).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache
from importlib import resources
from typing import Any

__all__ = ["CONSOLE_CSP", "CONSOLE_HEADERS", "CONSOLE_ASSETS", "add_console", "console_asset", "json_safe"]

#: the Content-Security-Policy of every console asset
CONSOLE_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; connect-src 'self'; "
               "form-action 'none'; frame-ancestors 'none'; base-uri 'none'")
CONSOLE_HEADERS = {"Content-Security-Policy": CONSOLE_CSP, "X-Content-Type-Options": "nosniff",
                   "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY", "Cache-Control": "no-cache"}
#: the files of the console (under ``manyfold/serve/console/``) and their content types
CONSOLE_ASSETS = {"index.html": "text/html; charset=utf-8", "console.js": "text/javascript; charset=utf-8",
                  "console.css": "text/css; charset=utf-8", "favicon.svg": "image/svg+xml"}


@lru_cache(maxsize=None)
def console_asset(name: str) -> bytes:
    """The bytes of one console file (``index.html``, ``console.js``, ``console.css``, ``favicon.svg``)."""
    if name not in CONSOLE_ASSETS:
        raise KeyError(f"no console asset {name!r}; valid: {', '.join(CONSOLE_ASSETS)}")
    return (resources.files("manyfold.serve") / "console" / name).read_bytes()


def json_safe(value: Any) -> Any:
    """``value`` as plain JSON types: numpy scalars and arrays become numbers and lists, NaN and infinities None,
    tuples lists, keys strings; anything else its ``str``."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        return json_safe(value.tolist())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (str, int, bool)):
        return value
    return str(value)


def add_console(app: Any, info: Callable[[], dict[str, Any]], stats: Callable[[], dict[str, Any]]) -> None:
    """Add the console's routes to the FastAPI ``app``: the page (``/``, ``/ui``), its files (``/ui/console.js``,
    ``/ui/console.css``) and the JSON endpoints ``/v1/console/info`` (``info()``) and ``/v1/console/stats``
    (``stats()``)."""
    from fastapi.responses import JSONResponse, Response

    def asset(name: str) -> Callable[[], Any]:
        async def get() -> Response:
            return Response(console_asset(name), media_type=CONSOLE_ASSETS[name], headers=CONSOLE_HEADERS)

        get.__name__ = "console_" + name.replace(".", "_")
        return get

    for path in ("/", "/ui", "/ui/"):
        app.add_api_route(path, asset("index.html"), methods=["GET"], include_in_schema=False)
    for name in ("console.js", "console.css", "favicon.svg"):
        app.add_api_route(f"/ui/{name}", asset(name), methods=["GET"], include_in_schema=False)

    @app.get("/v1/console/info", tags=["console"], response_model=dict)
    async def console_info() -> JSONResponse:
        """What the web console shows about the served assembly and this server (never the admin token)."""
        return JSONResponse(json_safe(info()), headers={"Cache-Control": "no-store"})

    @app.get("/v1/console/stats", tags=["console"], response_model=dict)
    async def console_stats() -> JSONResponse:
        """The server's counters, cumulative since start (the console's live view takes differences)."""
        return JSONResponse(json_safe(stats()), headers={"Cache-Control": "no-store"})
