"""The FastAPI application: routers, JSON errors, ``/metrics`` and the audit log."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from postloan.api import affairs, loans, risk, tracking
from postloan.api.context import Admin, ApiContext, ApiError, Context
from postloan.times import TimeValueError

log = logging.getLogger(__name__)


def create_app(context: ApiContext) -> FastAPI:
    """Build the API over `context`; the OpenAPI schema is at ``/openapi.json``."""
    app = FastAPI(
        title="postloan",
        summary="Post-loan risk control for auto finance: tracks, loans, cases.",
        version="0.1.0",
    )
    app.state.context = context
    for router in (tracking.router, loans.router, risk.router, affairs.router):
        app.include_router(router)
    app.add_api_route("/health", health, methods=["GET"], tags=["ops"])
    app.add_api_route("/metrics", metrics, methods=["GET"], tags=["ops"])
    app.add_api_route("/audit", audit_log, methods=["GET"], tags=["ops"])
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.middleware("http")(_log_request)
    return app


async def _log_request(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    """Log each request with its user and the device or contract it names."""
    started = time.perf_counter()
    response = await call_next(request)
    params = request.path_params
    log.info(
        "%s %s -> %d user=%s device=%s contract=%s %.1f ms",
        request.method,
        request.url.path,
        response.status_code,
        getattr(request.state, "user", "-"),
        params.get("device_id", "-"),
        params.get("contract_id", "-"),
        (time.perf_counter() - started) * 1000,
    )
    return response


def health() -> dict[str, str]:
    """Liveness: the process serves requests."""
    return {"status": "ok"}


def metrics(context: Context) -> Response:
    """Prometheus text exposition of the registry given to the app."""
    body = b"" if context.registry is None else generate_latest(context.registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


def audit_log(context: Context, user: Admin) -> list[dict[str, Any]]:
    """Return every write made through the API: who, when, what, on which record."""
    return [entry.to_record() for entry in context.audit.entries()]


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    if exc.status >= 500:
        log.error("%s %s failed: %s", request.method, request.url.path, exc.message)
    return JSONResponse(exc.to_json(), status_code=exc.status)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    described = [_describe(error) for error in exc.errors()]
    errors = [error for error, _ in described]
    first, summary = described[0] if described else ({"field": None, "value": None}, "")
    body = {
        "error": summary,
        "field": first["field"],
        "value": first["value"],
        "errors": errors,
    }
    return JSONResponse(body, status_code=422)


_PLACES = {"query": "query parameter", "path": "path parameter", "header": "header"}


def _describe(error: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    """Return one validation error as field, value and message, and its summary.

    A body that is not JSON and a missing field are reported as such, without
    the parsed-so-far or whole body that pydantic gives as their input.
    """
    location = tuple(error.get("loc", ()))
    kind = error.get("type")
    if kind == "json_invalid":
        cause = (error.get("ctx") or {}).get("error", "")
        position = location[1] if len(location) > 1 else "?"
        message = f"request body is not valid JSON: {cause} at character {position}"
        return {"field": "body", "value": None, "message": message}, message
    field = _field(location)
    if kind == "missing":
        if location == ("body",):
            message = "missing request body; send a JSON object"
        else:
            where = _PLACES.get(str(location[0]), "field") if location else "field"
            message = f"missing required {where} {field!r}"
        return {"field": field, "value": None, "message": message}, message
    value = _printable(error.get("input"))
    if location == ("body",) and kind in {"model_attributes_type", "dict_type"}:
        message = "request body must be a JSON object"
        return {"field": "body", "value": value, "message": message}, message
    message = _message(error)
    named = f" {value!r}" if isinstance(value, str | int | float) else ""
    summary = f"invalid {field}{named}: {message}"
    return {"field": field, "value": value, "message": message}, summary


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    return JSONResponse(
        {"error": exc.detail}, status_code=exc.status_code, headers=exc.headers
    )


def _field(location: Sequence[Any]) -> str:
    """Name a field as the client wrote it: ``since``, not ``query.since``."""
    parts = [str(part) for part in location]
    if len(parts) > 1 and parts[0] in {"query", "path", "body", "header"}:
        parts = parts[1:]
    return ".".join(parts)


def _message(error: Mapping[str, Any]) -> str:
    """Return what is wrong with the value, without pydantic's prefix."""
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, TimeValueError):
        return cause.problem
    message = str(error.get("msg", ""))
    return message.removeprefix("Value error, ")


def _printable(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    text = repr(value)
    return text if len(text) <= 200 else text[:200] + "..."
