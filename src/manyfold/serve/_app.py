"""The FastAPI application: ``create_app(ServeConfig) -> FastAPI``.

Endpoints: ``POST /v1/predict``, ``POST /v1/route``, ``GET /v1/experts``,
admin (bearer token) ``POST /v1/experts``, ``DELETE /v1/experts/{name}``,
``POST /v1/admin/reload``; ``GET /healthz``, ``GET /readyz``, ``GET /metrics``;
OpenAPI at ``/docs``. Errors have one body, ``{"error", "message", "field"}``;
bad input is always a 4xx that names the field.
"""

import asyncio
import hmac
import logging
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from .._exceptions import ConfigError, InputError, NotFoundError
from .._validation import check_items
from ..routers import top_k
from ._admin import BusyError, Controller, NoRegistryError
from ._batching import DirectRunner, MicroBatcher, QueueFullError
from ._config import ServeConfig
from ._engine import Engine, PipelineError
from ._limits import BodySizeLimit, RequestMetrics
from ._metrics import ServeMetrics
from ._reqlog import RequestLog
from ._schemas import (ChangeResponse, ErrorBody, ExpertOut, Health, PredictResponse, Ready, ReloadRequest,
                       RouteResponse, make_models)

__all__ = ["create_app"]

log = logging.getLogger("manyfold.serve")

_ROUTES = {"/v1/predict", "/v1/route", "/v1/experts", "/v1/admin/reload", "/healthz", "/readyz", "/metrics"}


class ApiError(Exception):
    """An error answer: HTTP ``status``, machine ``code``, human ``message``, optional ``field``."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field, self.headers = status, code, message, field, headers


def _error(status: int, code: str, message: str, field: str | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(ErrorBody(error=code, message=message, field=field).model_dump(), status_code=status, headers=headers)


def _field(loc: Any) -> str:
    parts = [str(p) for p in loc if p != "body"]
    return ".".join(parts) if parts else "body"


def _endpoint(path: str) -> str:
    if path in _ROUTES:
        return path
    return "/v1/experts/{name}" if path.startswith("/v1/experts/") else "other"


def create_app(config: ServeConfig) -> FastAPI:
    """The HTTP API for ``config.assembly`` (see the module docstring for the endpoints)."""
    metrics = ServeMetrics()
    engine = Engine(metrics)
    ctl = Controller(config, engine)
    if not isinstance(config.assembly, str):  # an object serves at once (no lifespan needed)
        engine.swap(config.assembly, config.version)
    max_chars = config.assembly.config.max_chars if not isinstance(config.assembly, str) else 2000
    M = make_models(config.max_items_per_request, max_chars)
    PredictRequest, RouteRequest, AddExpertRequest = M.PredictRequest, M.RouteRequest, M.AddExpertRequest
    if config.micro_batching:
        runner: Any = MicroBatcher(engine.run_batch, metrics, max_batch_size=config.max_batch_size,
                                   max_wait_ms=config.max_wait_ms, max_queue=config.max_queue,
                                   run_generalist=engine.run_generalist if config.generalist_stage else None)
    else:
        runner = DirectRunner(engine.run_batch, metrics, max_queue=config.max_queue)
    token = config.resolved_admin_token()
    reqlog = RequestLog(config.request_log) if config.request_log else None

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # noqa: ANN202
        await runner.start()
        await ctl.start()
        try:
            yield
        finally:
            await ctl.stop()
            await runner.stop()
            if reqlog is not None:
                reqlog.close()

    app = FastAPI(title="manyfold", version="1", lifespan=lifespan,
                  description="Expert heads behind a router, a generalist behind them: one HTTP API.")
    app.state.config, app.state.engine, app.state.controller, app.state.metrics = config, engine, ctl, metrics
    err = {"model": ErrorBody}

    # -- errors ----------------------------------------------------------------------
    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        e = exc.errors()[0] if exc.errors() else {"loc": ("body",), "msg": "invalid request"}
        field = _field(e.get("loc", ()))
        msg = str(e.get("msg", "invalid"))
        if e.get("type") == "json_invalid":
            field, msg = "body", f"the body is not valid JSON ({e.get('ctx', {}).get('error', msg)})"
        return _error(422, "invalid_request", f"{field}: {msg}", field)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status, exc.code, exc.message, exc.field, exc.headers)

    def _raise_for(exc: BaseException) -> None:
        if isinstance(exc, QueueFullError):
            raise ApiError(503, "overloaded", str(exc), headers={"Retry-After": "1"})
        if isinstance(exc, InputError):
            raise ApiError(422, "invalid_request", str(exc), "items")
        if isinstance(exc, NotFoundError):
            raise ApiError(404, "not_found", str(exc))
        if isinstance(exc, BusyError):
            raise ApiError(409, "busy", str(exc), headers={"Retry-After": "1"})
        if isinstance(exc, NoRegistryError):
            raise ApiError(409, "not_configured", str(exc))
        if isinstance(exc, ConfigError):
            raise ApiError(422, "invalid_request", str(exc))
        if isinstance(exc, PipelineError):
            raise ApiError(503, "unavailable", str(exc), headers={"Retry-After": "1"})
        log.error("unexpected error answered with 500", exc_info=exc)  # never swallowed: the traceback goes to the log
        raise ApiError(500, "internal", f"{type(exc).__name__}: {exc}")

    # -- request metrics (outermost: 413s are counted too) ------------------------
    app.add_middleware(BodySizeLimit, max_bytes=config.max_body_bytes)

    def _record(ep: str, method: str, status: int, seconds: float) -> None:
        metrics.requests.labels(ep, method, str(status)).inc()
        metrics.request_latency.labels(ep).observe(seconds)

    app.add_middleware(RequestMetrics, record=_record, endpoint=_endpoint)

    # -- helpers ---------------------------------------------------------------------
    def _ready() -> Any:
        if not engine.ready:
            raise ApiError(503, "not_ready", f"the assembly is still loading ({ctl.state})", headers={"Retry-After": "2"})
        return engine.asm

    async def admin(cred: HTTPAuthorizationCredentials | None = Depends(HTTPBearer(auto_error=False))) -> None:
        if cred is None or cred.scheme.lower() != "bearer":
            raise ApiError(401, "unauthorized", "this endpoint needs 'Authorization: Bearer <admin token>'",
                           headers={"WWW-Authenticate": "Bearer"})
        if token is None or not hmac.compare_digest(cred.credentials.encode(), token.encode()):
            raise ApiError(403, "forbidden", "wrong admin token" if token else
                           "the admin API is off: start the server with an admin token (MANYFOLD_ADMIN_TOKEN)")

    # -- inference ------------------------------------------------------------------------
    @app.post("/v1/predict", response_model=PredictResponse, tags=["inference"],
              responses={413: err, 422: err, 503: err, 504: err})
    async def predict(body: PredictRequest) -> Any:  # type: ignore[valid-type]
        """Labels (or out-of-scope) for the items, with the experts used, escalation and per-stage timings."""
        asm = _ready()
        items = body.texts()
        try:
            check_items(items, modality=getattr(asm.encoder, "modality", None), max_chars=asm.config.max_chars)
            fut = runner.submit(items, body.escalate)
        except (InputError, QueueFullError) as exc:
            _raise_for(exc)
        metrics.in_flight.inc()
        try:
            results, queued = await asyncio.wait_for(fut, config.request_timeout_s)
        except asyncio.TimeoutError:
            metrics.rejected.labels("timeout").inc()
            raise ApiError(504, "timeout", f"no answer within {config.request_timeout_s} s (request_timeout_s)") from None
        except QueueFullError as exc:
            _raise_for(exc)
        finally:
            metrics.in_flight.dec()
        for r in results:
            if isinstance(r, BaseException):
                _raise_for(r)
        out = []
        for p in results:
            d = p.to_dict()
            d["out_of_scope"] = d["label"] == asm.config.oos_label
            d["timings_ms"] = {**d["timings_ms"], "queue": round(1e3 * queued, 4)}
            out.append(d)
        if reqlog is not None:
            reqlog.write(items, out, engine.version)
        # built from plain dicts of the declared fields: answered as is, without a second pydantic pass
        return JSONResponse({"predictions": out, "assembly": config.registry_name, "version": engine.version})

    @app.post("/v1/route", response_model=RouteResponse, tags=["inference"], responses={422: err, 503: err, 504: err})
    async def route(body: RouteRequest) -> dict[str, Any]:  # type: ignore[valid-type]
        """The routing decision only: the top-k experts per item with the router's scores."""
        asm = _ready()
        items = body.texts()
        k = min(body.k or asm.config.top_k, len(asm.router.experts_))

        def go() -> Any:
            pr = asm.router.predict_proba(asm.encoder.encode(items))
            return pr, *top_k(pr, k)

        try:
            pr, idx, w = await asyncio.wait_for(asyncio.to_thread(go), config.request_timeout_s)
        except asyncio.TimeoutError:
            raise ApiError(504, "timeout", f"no answer within {config.request_timeout_s} s") from None
        names = asm.router.experts_
        routes = [{"experts": [{"name": str(names[j]), "score": float(pr[i, j]), "weight": float(w[i, s])}
                               for s, j in enumerate(idx[i])]} for i in range(len(items))]
        return {"routes": routes, "version": engine.version}

    # -- experts ----------------------------------------------------------------------------
    @app.get("/v1/experts", response_model=list[ExpertOut], tags=["experts"])
    async def experts() -> list[dict[str, Any]]:
        """The experts of the assembly being served, with their labels and model cards."""
        asm = _ready()
        out = []
        for e in asm.experts:
            card = getattr(e, "card_", None)
            out.append({"name": e.name, "labels": [str(x) for x in e.labels_.tolist()],
                        "card": card.to_dict() if card is not None else {}})
        return out

    async def _change(status: str, run: Any) -> dict[str, Any]:
        """Run one expert change on the controller; its errors become their HTTP answers."""
        _ready()
        try:
            asm, version = await run()
        except Exception as exc:
            _raise_for(exc)
        return {"status": status, "version": version, "experts": asm.expert_names}

    @app.post("/v1/experts", response_model=ChangeResponse, status_code=201, tags=["admin"],
              dependencies=[Depends(admin)], responses={401: err, 403: err, 409: err, 422: err})
    async def add_expert(body: AddExpertRequest) -> dict[str, Any]:  # type: ignore[valid-type]
        """Add an expert trained on the examples given; the router is refitted, a new version saved and swapped in."""
        return await _change("added", lambda: ctl.add_expert(body))

    @app.delete("/v1/experts/{name}", response_model=ChangeResponse, tags=["admin"], dependencies=[Depends(admin)],
                responses={401: err, 403: err, 404: err, 409: err})
    async def remove_expert(name: str) -> dict[str, Any]:
        """Remove an expert; the router is refitted over the others, a new version saved and swapped in."""
        return await _change("removed", lambda: ctl.remove_expert(name))

    @app.post("/v1/admin/reload", response_model=ChangeResponse, tags=["admin"], dependencies=[Depends(admin)],
              responses={202: {"model": ChangeResponse}, 401: err, 403: err, 409: err})
    async def reload(body: ReloadRequest | None = None) -> Any:
        """Hot swap: load a registry version in the background and switch to it between batches."""
        body = body or ReloadRequest()
        if ctl.config.registry_name is None:
            _raise_for(NoRegistryError("this server serves an Assembly object with no registry name (ServeConfig.name)"))
        if body.wait:
            try:
                version = await ctl.reload(body.version)
            except Exception as exc:
                _raise_for(exc)
            return {"status": "ready", "version": version}
        if ctl._lock.locked():
            _raise_for(BusyError("another reload or expert change is running"))
        ctl.spawn(ctl.reload(body.version))
        return JSONResponse({"status": "loading", "version": body.version}, status_code=202)

    # -- operations -------------------------------------------------------------------------
    @app.get("/healthz", response_model=Health, tags=["ops"])
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/readyz", response_model=Ready, tags=["ops"], responses={503: {"model": Ready}})
    async def readyz() -> Any:
        """Readiness: an assembly is loaded (503 while loading); also the state of the last reload."""
        body = {"ready": engine.ready, "assembly": config.registry_name, "version": engine.version, "reload": ctl.state}
        return body if engine.ready else JSONResponse(body, status_code=503)

    @app.get("/metrics", tags=["ops"], response_class=Response)
    async def prometheus() -> Response:
        """Prometheus text exposition."""
        data, ctype = metrics.exposition()
        return Response(data, media_type=ctype)

    return app
