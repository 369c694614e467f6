"""The FastAPI application: ``create_app(ServeConfig) -> FastAPI``.

Endpoints: ``POST /v1/predict``, ``POST /v1/route``, ``GET /v1/experts``,
admin (bearer token) ``POST /v1/experts``, ``DELETE /v1/experts/{name}``,
``POST /v1/admin/reload``; ``GET /healthz``, ``GET /readyz``, ``GET /metrics``;
OpenAPI at ``/docs``. Errors have one body, ``{"error", "message", "field"}``;
bad input is always a 4xx that names the field (a body that is not UTF-8,
JSON nested too deep or an integer too long to read is a 422 like any invalid
JSON; an unknown path or method answers in the same shape). A request for a
host the server does not answer gets 400 before anything else (:mod:`._hosts`,
DNS rebinding); an admin request without the right token gets 401 / 403 before
its body is read; a corrupt or untrusted registry version to reload is a 409 /
403.

Admission: ``/v1/predict`` and ``/v1/route`` go through the same runner
(:mod:`._batching`): a request over ``max_request_chars`` is 413, one that
finds the queue or the admitted work full is 503 + ``Retry-After``; a caller
that times out (504) or disconnects has its remaining work dropped. An answer's
``version`` is the snapshot its batches ran on.

An assembly whose encoder takes images answers the same two inference paths:
JSON ``{"images": [base64, ...]}`` / ``{"image": base64}``, or a
``multipart/form-data`` upload (fields ``file`` / ``files``, plus ``escalate``
or ``k``). Both are one route per path: its JSON body is the text-or-image
union, and an upload is handed to the upload handler before FastAPI reads the
body (:func:`_inference_route`); the OpenAPI operation declares both media
types (the multipart one through ``openapi_extra``).
"""

import asyncio
import copy
import hmac
import logging
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, NoReturn

import numpy as np
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from .._exceptions import ArtifactError, ConfigError, DependencyError, InputError, NotFoundError, TrustError
from .._validation import check_items
from ..routers import top_k
from ._admin import BusyError, Controller, NoRegistryError
from ._batching import DirectRunner, MicroBatcher, QueueFullError, work_of
from ._config import ServeConfig
from ._console import add_console
from ._engine import Engine, PipelineError
from ._hosts import HostCheck
from ._images import TAKES_IMAGES, TAKES_TEXTS, ImageLimits, ImageRefused, ImageSource, check_count, decode_images, \
    image_content_type_ok
from ._limits import AdminAuth, BodySizeLimit, RequestMetrics
from ._metrics import ServeMetrics
from ._reqlog import RequestLog
from ._schemas import (BODY_TAGS, ChangeResponse, ErrorBody, ExpertOut, Health, PredictResponse, Ready, ReloadRequest,
                       RouteResponse, make_models)

__all__ = ["create_app"]

log = logging.getLogger("manyfold.serve")

_ROUTES = {"/v1/predict", "/v1/route", "/v1/experts", "/v1/admin/reload", "/healthz", "/readyz", "/metrics",
           "/v1/console/info", "/v1/console/stats"}
_INFERENCE = ("/v1/predict", "/v1/route")
_UPLOAD_FIELDS = ("file", "files")
_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def _upload_schema(option: dict[str, Any]) -> dict[str, Any]:
    """``openapi_extra`` declaring the multipart/form-data body of an inference path (image assemblies)."""
    binary = {"type": "string", "format": "binary"}
    props = {"file": {**binary, "description": "one image file"},
             "files": {"type": "array", "items": binary, "description": "image files (send the field once per file)"},
             **option}
    return {"requestBody": {"content": {"multipart/form-data": {"schema": {
        "type": "object", "properties": props, "additionalProperties": False,
        "description": "image assemblies only: upload image files (PNG, JPEG, BMP, GIF, WebP)"}}}}}


def _openapi_for(schema: dict[str, Any], takes: str | None) -> dict[str, Any]:
    """The OpenAPI document for what the served assembly takes: a text assembly's inference bodies are the text
    requests alone (as before images existed), an image assembly's the image request and the upload; with no
    assembly loaded yet, both."""
    if takes is None:
        return schema
    out = copy.deepcopy(schema)
    comps = out.get("components", {}).get("schemas", {})
    for path, models in (("/v1/predict", ("PredictRequest", "ImagePredictRequest")),
                         ("/v1/route", ("RouteRequest", "ImageRouteRequest"))):
        op = out["paths"][path]["post"]
        content = op["requestBody"]["content"]
        keep, drop = models if takes == "text" else models[::-1]
        content["application/json"]["schema"] = {"$ref": f"#/components/schemas/{keep}"}
        comps.pop(drop, None)
        if takes == "text":
            content.pop("multipart/form-data", None)
            op["responses"].pop("415", None)
    return out


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def _inference_route(uploads: dict[str, Callable[[Request], Awaitable[Response]]],
                     refuse: Callable[[Request], None]) -> type[APIRoute]:
    """A route class whose handler sends multipart uploads to ``uploads[path]`` and everything else to
    FastAPI's JSON handler (``refuse(request)`` may first answer a media type it cannot take)."""

    class InferenceRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
            json_handler = super().get_route_handler()
            path = self.path

            async def handler(request: Request) -> Response:
                if _media_type(request) == "multipart/form-data":
                    return await uploads[path](request)
                refuse(request)
                return await json_handler(request)

            return handler

    return InferenceRoute


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


def _parse_failure(cause: BaseException | None) -> str:
    """Why FastAPI could not read a JSON body (it answers these with a bare 400 of its own)."""
    if isinstance(cause, UnicodeDecodeError):
        return f"not UTF-8: byte 0x{cause.object[cause.start]:02x} at position {cause.start}"
    if isinstance(cause, RecursionError):
        return "nested too deeply"
    if isinstance(cause, ValueError) and "digits" in str(cause):
        return "an integer of more than 4300 digits"
    return f"{type(cause).__name__}: {str(cause)[:200]}" if cause is not None else "unreadable"


def _is_admin(scope: Any) -> bool:
    """The admin endpoints: POST /v1/experts, DELETE /v1/experts/{name}, /v1/admin/*."""
    path, method = scope.get("path", ""), scope.get("method", "GET")
    return path.startswith("/v1/admin") or (path.startswith("/v1/experts") and method not in ("GET", "HEAD"))


def _endpoint(path: str) -> str:
    if path in _ROUTES:
        return path
    if path == "/" or path == "/ui" or path.startswith("/ui/"):
        return "/ui"
    return "/v1/experts/{name}" if path.startswith("/v1/experts/") else "other"


def _describe_generalist(gen: Any) -> str | None:
    """The generalist's kind and encoder, for the console (nothing else: a remote one's settings hold a key)."""
    if gen is None:
        return None
    enc = getattr(gen, "encoder", None)
    enc = enc if isinstance(enc, str) else getattr(enc, "id", None)
    return f"{type(gen).__name__} ({enc})" if enc else type(gen).__name__


def create_app(config: ServeConfig) -> FastAPI:
    """The HTTP API for ``config.assembly`` (see the module docstring for the endpoints)."""
    metrics = ServeMetrics()
    engine = Engine(metrics)
    ctl = Controller(config, engine)
    if not isinstance(config.assembly, str):  # an object serves at once (no lifespan needed)
        engine.swap(config.assembly, config.version)
    max_chars = config.assembly.config.max_chars if not isinstance(config.assembly, str) else 2000
    limits = ImageLimits.of(config)

    def modality() -> str | None:
        """What the served assembly takes: "image", "text" (any other encoder), None while none is loaded."""
        if not engine.ready:
            return None
        return "image" if getattr(engine.asm.encoder, "modality", None) == "image" else "text"

    M = make_models(config.max_items_per_request, max_chars, max_images=config.max_images_per_request,
                    modality=modality)
    PredictBody, RouteBody, AddExpertRequest = M.PredictBody, M.RouteBody, M.AddExpertRequest
    ImagePredictRequest, ImageRouteRequest = M.ImagePredictRequest, M.ImageRouteRequest
    admission = dict(max_queue=config.max_queue, max_batch_size=config.max_batch_size,
                     max_batch_chars=config.max_batch_chars, max_part_chars=config.max_part_chars,
                     max_queued_chars=config.max_queued_chars,
                     max_generalist_batch_chars=config.max_generalist_batch_chars,
                     run_route=engine.run_route, snapshot=engine.snapshot)
    admission.update(run_generalist=engine.run_generalist, skip_generalist=engine.skip_generalist,
                     max_escalated_chars=config.max_escalated_chars)
    if config.micro_batching:
        runner: Any = MicroBatcher(engine.run_batch, metrics, max_wait_ms=config.max_wait_ms,
                                   generalist_stage=config.generalist_stage,
                                   large_nice=config.large_nice,
                                   generalist_deadline_ms=config.generalist_deadline_ms, **admission)
    else:
        runner = DirectRunner(engine.run_batch, metrics, **admission)
    token = config.resolved_admin_token()
    reqlog = (RequestLog(config.request_log, config.request_log_max_bytes, config.request_log_backups)
              if config.request_log else None)

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
        loc = tuple(e.get("loc", ()))
        if request.url.path in _INFERENCE and len(loc) >= 2 and loc[0] == "body" and loc[1] in BODY_TAGS:
            loc = loc[:1] + loc[2:]  # the text-or-image branch pydantic took: not a field of the request
        field = _field(loc)
        msg = str(e.get("msg", "invalid"))
        if e.get("type") == "wrong_modality":  # texts to an image assembly, or images to a text one
            field = str((e.get("ctx") or {}).get("field", field))
        if e.get("type") == "json_invalid":
            field, msg = "body", f"the body is not valid JSON ({e.get('ctx', {}).get('error', msg)})"
        return _error(422, "invalid_request", f"{field}: {msg}", field)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status, exc.code, exc.message, exc.field, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        """FastAPI's and Starlette's own errors, in the documented shape."""
        if exc.status_code == 400 and exc.__cause__ is not None:  # FastAPI could not read the JSON body
            why = _parse_failure(exc.__cause__)
            return _error(422, "invalid_request", f"body: the body is not valid JSON ({why})", "body")
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _error(exc.status_code, code, f"{request.method} {request.url.path}: {exc.detail}",
                      headers=getattr(exc, "headers", None))

    def _raise_for(exc: BaseException) -> NoReturn:
        if isinstance(exc, ImageRefused):
            code = {413: "too_large", 415: "unsupported_media_type"}.get(exc.status, "invalid_request")
            raise ApiError(exc.status, code, str(exc), exc.field)
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
        if isinstance(exc, TrustError):  # the version asks for what this server was not allowed (trust_remote)
            raise ApiError(403, "untrusted", str(exc))
        if isinstance(exc, ArtifactError):  # a corrupt or truncated version: the old one keeps serving
            raise ApiError(409, "bad_artifact", str(exc))
        log.error("unexpected error answered with 500", exc_info=exc)  # never swallowed: the traceback goes to the log
        raise ApiError(500, "internal", f"{type(exc).__name__}: {exc}")

    # -- request metrics (outermost: 413s are counted too) ------------------------
    def body_limit(scope: Any) -> tuple[int, str]:
        if scope.get("path") in _INFERENCE and modality() == "image":
            return config.max_image_body_bytes, "max_image_body_bytes"
        return config.max_body_bytes, "max_body_bytes"

    def admin_refusal(authorization: str | None) -> ApiError | None:
        """401 / 403 for an admin request without the right bearer token, else None."""
        scheme, _, cred = (authorization or "").strip().partition(" ")
        if scheme.lower() != "bearer" or not cred.strip():
            return ApiError(401, "unauthorized", "this endpoint needs 'Authorization: Bearer <admin token>'",
                            headers={"WWW-Authenticate": "Bearer"})
        if token is None or not hmac.compare_digest(cred.strip().encode(), token.encode()):
            return ApiError(403, "forbidden", "wrong admin token" if token else
                            "the admin API is off: start the server with an admin token (MANYFOLD_ADMIN_TOKEN)")
        return None

    app.add_middleware(BodySizeLimit, max_bytes=config.max_body_bytes, limit_for=body_limit,
                       timeout_s=config.body_timeout_s)
    app.add_middleware(AdminAuth, refuse=admin_refusal, applies=_is_admin)  # the token before the body is read
    app.add_middleware(HostCheck, allowed=config.allowed_hosts)  # before any body is read; its 400s are counted

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
        """(Checked by :class:`AdminAuth` before the body is read; here too, and for the OpenAPI document.)"""
        refused = admin_refusal(f"{cred.scheme} {cred.credentials}" if cred is not None else None)
        if refused is not None:
            raise refused

    # -- inference ------------------------------------------------------------------------
    def _expect(asm: Any, images: bool, field: str) -> None:
        """422 when the request's kind of item is not what the served assembly takes."""
        takes_images = getattr(asm.encoder, "modality", None) == "image"
        if images and not takes_images:
            raise ApiError(422, "invalid_request", f"{field}: {TAKES_TEXTS}", field)
        if not images and takes_images:
            raise ApiError(422, "invalid_request", f"{field}: {TAKES_IMAGES}", field)

    async def _images(sources: list[ImageSource], field: str) -> tuple[list[Any], list[dict[str, Any]]]:
        """Decode (in a thread: CPU-bound) after every limit is checked; refusals become their 4xx."""
        try:
            return await asyncio.to_thread(decode_images, sources, limits, field)
        except ImageRefused as exc:
            _raise_for(exc)
            raise  # unreachable: _raise_for always raises
        except DependencyError as exc:  # no Pillow on this server: it cannot read any image
            raise ApiError(501, "not_implemented", str(exc)) from None

    def _check_work(items: list[Any]) -> None:
        work = work_of(items)
        if work > config.max_request_chars:
            raise ApiError(413, "too_large", f"items: {work:,} characters in this request; the limit is "
                           f"{config.max_request_chars:,} (max_request_chars): send fewer or shorter texts per "
                           "request", "items")

    async def _disconnected(request: Request) -> bool:
        """Returns once the client has gone (the body was read already: the next message is the disconnect)."""
        while True:
            if (await request.receive())["type"] == "http.disconnect":
                return True

    async def _answer(fut: asyncio.Future, request: Request) -> tuple[list[Any], float, Any]:
        """Wait for the runner's answer; a caller that times out or disconnects has its remaining work dropped."""
        gone = asyncio.ensure_future(_disconnected(request))
        metrics.in_flight.inc()
        try:
            done, _ = await asyncio.wait((fut, gone), timeout=config.request_timeout_s,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            metrics.in_flight.dec()
            gone.cancel()
            if not fut.done():
                fut.cancel()  # nobody waits for it any more: the runner drops its parts that have not run
        if fut in done:
            try:
                return fut.result()
            except Exception as exc:
                _raise_for(exc)
        if gone in done:
            metrics.rejected.labels("disconnected").inc()
            raise ApiError(499, "client_closed", "the client closed the connection before the answer; its work was "
                           "dropped")
        metrics.rejected.labels("timeout").inc()
        raise ApiError(504, "timeout", f"no answer within {config.request_timeout_s} s (request_timeout_s); "
                       "its remaining work was dropped")

    async def _submit(request: Request, items: list[Any], escalate: bool, route: bool) -> tuple[list[Any], Any]:
        _check_work(items)
        try:
            fut = runner.submit(items, escalate, route=route)
        except QueueFullError as exc:
            _raise_for(exc)
        results, queued, snap = await _answer(fut, request)
        for r in results:
            if isinstance(r, BaseException):
                _raise_for(r)
        return results, (queued, snap)

    async def _predict(request: Request, asm: Any, items: list[Any], escalate: bool,
                       images: list[dict[str, Any]] | None = None) -> JSONResponse:
        try:
            check_items(items, **({"encoder": asm.encoder} if images is not None else
                                  {"modality": getattr(asm.encoder, "modality", None)}), max_chars=asm.config.max_chars)
        except InputError as exc:
            _raise_for(exc)
        results, (queued, snap) = await _submit(request, items, escalate, route=False)
        ran, version = snap if snap is not None else (asm, engine.version)  # the snapshot its batches ran on
        out = []
        for p in results:
            d = p.to_dict()
            d["out_of_scope"] = d["label"] == ran.config.oos_label
            d["timings_ms"] = {**d["timings_ms"], "queue": round(1e3 * queued, 4)}
            out.append(d)
        if reqlog is not None:
            reqlog.write(items, out, version, images=images)
        # built from plain dicts of the declared fields: answered as is, without a second pydantic pass
        return JSONResponse({"predictions": out, "assembly": config.registry_name, "version": version})

    async def _route(request: Request, asm: Any, items: list[Any], k: int | None) -> dict[str, Any]:
        results, (_, snap) = await _submit(request, items, True, route=True)
        ran, version = snap if snap is not None else (asm, engine.version)
        names = ran.router.experts_
        k = min(k or ran.config.top_k, len(names))
        pr = np.stack(results)
        idx, w = top_k(pr, k)
        routes = [{"experts": [{"name": str(names[j]), "score": float(pr[i, j]), "weight": float(w[i, s])}
                               for s, j in enumerate(idx[i])]} for i in range(len(items))]
        return {"routes": routes, "version": version}

    async def predict(body: PredictBody, request: Request) -> Any:  # type: ignore[valid-type]
        """Labels (or out-of-scope) for the items, with the experts used, escalation and per-stage timings.

        Texts: ``{"items": [...]}`` / ``{"item": "..."}``. Images (an image assembly): ``{"images": [base64, ...]}``
        / ``{"image": base64}``, or a multipart/form-data upload of files (``file`` / ``files``, ``escalate``).
        """
        asm = _ready()
        if isinstance(body, ImagePredictRequest):
            _expect(asm, True, "images" if body.images is not None else "image")
            items, info = await _images([ImageSource(f, d) for f, d in body.sources()], "images")
            return await _predict(request, asm, items, body.escalate, info)
        _expect(asm, False, "items" if body.items is not None else "item")
        return await _predict(request, asm, body.texts(), body.escalate)

    async def route(body: RouteBody, request: Request) -> dict[str, Any]:  # type: ignore[valid-type]
        """The routing decision only: the top-k experts per item with the router's scores (texts or images,
        as for ``/v1/predict``)."""
        asm = _ready()
        if isinstance(body, ImageRouteRequest):
            _expect(asm, True, "images" if body.images is not None else "image")
            items, _ = await _images([ImageSource(f, d) for f, d in body.sources()], "images")
            return await _route(request, asm, items, body.k)
        _expect(asm, False, "items" if body.items is not None else "item")
        return await _route(request, asm, body.texts(), body.k)

    # -- uploads (multipart/form-data) on the same paths ------------------------------------
    async def _form(request: Request, option: str) -> tuple[list[ImageSource], str | None]:
        """The uploaded images (checked: count, content type, bytes) and the value of ``option``."""
        from starlette import formparsers

        if formparsers.multipart is None:
            raise ApiError(415, "unsupported_media_type", "this server cannot read multipart uploads (python-multipart "
                           "is not installed: pip install 'manyfold[serve]'); send JSON {\"images\": [base64, ...]}",
                           "body")
        parser = formparsers.MultiPartParser(request.headers, request.stream(), max_files=limits.max_images,
                                             max_fields=8, max_part_size=1024)
        try:
            form = await parser.parse()
        except formparsers.MultiPartException as exc:
            if exc.message.startswith("Too many files"):
                raise ApiError(413, "too_large", f"files: more than {limits.max_images} files; the limit is "
                               f"{limits.max_images} per request (max_images_per_request)", "files") from None
            raise ApiError(422, "invalid_request", f"body: not a valid multipart/form-data upload ({exc.message})",
                           "body") from None
        try:
            uploads: list[tuple[str, UploadFile]] = []
            value: str | None = None
            for name, v in form.multi_items():
                if name in _UPLOAD_FIELDS:
                    if not isinstance(v, UploadFile):
                        raise ApiError(422, "invalid_request", f"{name}: send a file (a part with a filename), "
                                       "not a plain form value", name)
                    uploads.append((name, v))
                elif name == option:
                    value = v if isinstance(v, str) else None
                    if value is None:
                        raise ApiError(422, "invalid_request", f"{name}: a plain form value, not a file", name)
                else:
                    raise ApiError(422, "invalid_request", f"{name}: unknown form field; valid fields: file, files, "
                                   f"{option}", name)
            if not uploads:
                raise ApiError(422, "invalid_request", "files: no image uploaded; send one or more files in the "
                               "form fields 'file' or 'files'", "files")
            try:
                check_count(len(uploads), "files", limits)
            except ImageRefused as exc:
                _raise_for(exc)
            sources = []
            for i, (name, up) in enumerate(uploads):
                field = f"{name}.{i}"
                if not image_content_type_ok(up.content_type):
                    raise ApiError(415, "unsupported_media_type", f"{field}: {up.filename!r} was sent as "
                                   f"{up.content_type!r}, not an image; upload image files (image/png, image/jpeg, "
                                   "...) or application/octet-stream", field)
                if up.size is not None and up.size > limits.max_bytes:
                    raise ApiError(413, "too_large", f"{field}: {up.filename!r}: {up.size:,} bytes is more than "
                                   f"max_image_bytes={limits.max_bytes:,}", field)
                sources.append(ImageSource(field, await up.read(), up.filename or None))
            return sources, value
        finally:
            await form.close()

    def _flag(name: str, value: str | None, default: bool) -> bool:
        if value is None:
            return default
        v = value.strip().lower()
        if v in _TRUE or v in _FALSE:
            return v in _TRUE
        raise ApiError(422, "invalid_request", f"{name}: {value[:40]!r} is not a boolean; valid: true, false", name)

    def _uploads_only(asm: Any) -> None:
        if getattr(asm.encoder, "modality", None) != "image":
            raise ApiError(422, "invalid_request", f"files: {TAKES_TEXTS} as JSON; file uploads are for image "
                           "assemblies", "files")

    async def predict_upload(request: Request) -> Response:
        asm = _ready()
        _uploads_only(asm)
        sources, escalate = await _form(request, "escalate")
        esc = _flag("escalate", escalate, True)
        items, info = await _images(sources, "files")
        return await _predict(request, asm, items, esc, info)

    async def route_upload(request: Request) -> Response:
        asm = _ready()
        _uploads_only(asm)
        sources, k = await _form(request, "k")
        kk = None
        if k is not None:
            try:
                kk = int(k)
            except ValueError:
                kk = 0
            if not 1 <= kk <= 64:
                raise ApiError(422, "invalid_request", f"k: {k[:40]!r} is not an integer from 1 to 64", "k")
        items, _ = await _images(sources, "files")
        return JSONResponse(await _route(request, asm, items, kk))

    def refuse_media(request: Request) -> None:
        """An image assembly takes JSON or multipart only (a text one keeps FastAPI's answer: 422)."""
        mt = _media_type(request)
        if mt and mt != "application/json" and not mt.endswith("+json") and modality() == "image":
            raise ApiError(415, "unsupported_media_type", f"body: content type {mt!r} is not taken here; send JSON "
                           "{\"images\": [base64, ...]} or a multipart/form-data upload of files", "body")

    route_class = _inference_route({"/v1/predict": predict_upload, "/v1/route": route_upload}, refuse_media)
    escalate_field = {"escalate": {"type": "boolean", "default": True,
                                   "description": "false keeps the generalist out"}}
    k_field = {"k": {"type": "integer", "minimum": 1, "maximum": 64,
                     "description": "how many experts (default: the assembly's top_k)"}}
    app.router.add_api_route("/v1/predict", predict, methods=["POST"], response_model=PredictResponse,
                             tags=["inference"], responses={413: err, 415: err, 422: err, 503: err, 504: err},
                             openapi_extra=_upload_schema(escalate_field), route_class_override=route_class)
    app.router.add_api_route("/v1/route", route, methods=["POST"], response_model=RouteResponse, tags=["inference"],
                             responses={413: err, 415: err, 422: err, 503: err, 504: err},
                             openapi_extra=_upload_schema(k_field), route_class_override=route_class)
    full_openapi, variants = app.openapi, {}

    def openapi() -> dict[str, Any]:
        """FastAPI's document (cached by FastAPI), narrowed to what the served assembly takes (cached per kind)."""
        takes = modality()
        if takes not in variants:
            variants[takes] = _openapi_for(full_openapi(), takes)
        return variants[takes]

    app.openapi = openapi  # type: ignore[method-assign]

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

    # -- the web console (GET / and /ui; docs/serve.md "Web console") ----------------------------
    def console_info() -> dict[str, Any]:
        """The served assembly as the console shows it, and what this server can do; never the token."""
        out: dict[str, Any] = {"assembly": config.registry_name, "version": engine.version, "ready": engine.ready,
                               "modality": modality(), "reload": ctl.state,
                               "admin": {"token_configured": token is not None,
                                         "registry": config.registry_name is not None}}
        if engine.ready:
            asm = engine.asm
            out.update(top_k=asm.config.top_k, oos_label=asm.config.oos_label, max_chars=asm.config.max_chars,
                       experts=list(asm.expert_names), labels=len(asm.labels_), calibration=asm.calibration_,
                       thresholds=dict(asm.policy_.thresholds_), encoder=str(getattr(asm.encoder, "id", "")),
                       generalist=_describe_generalist(asm.generalist))
        return out

    if config.console:
        add_console(app, info=console_info, stats=metrics.snapshot)
    return app
