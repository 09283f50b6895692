"""Mapping errors to HTTP responses, once for the whole app.

``CareServeError`` -> its status code and ``{"error": {"type", "message"}}``;
Starlette's own 404/405 -> the same envelope; request validation -> 400 naming
the bad parameter (with the store's own message for model names and versions);
anything else -> 500 without a traceback. 401 carries ``WWW-Authenticate:
Bearer``, 503 ``Retry-After``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from care_serve.errors import CareServeError, ModelNotReady, ServerBusy, Unauthorized
from care_serve.observability.request_context import current_request_id
from care_serve.store.manifest import validate_model_name, validate_version
from care_serve.transports.remedies import client_message, rest_remedy

__all__ = ["error_response", "install_error_handlers"]

log = logging.getLogger(__name__)


_HTTP_KINDS = {404: "NotFound", 405: "MethodNotAllowed"}
# Parameters the store validates: its message says what is accepted.
_MODEL_NAMES = ("name", "model")


def error_response(
    status: int, kind: str, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    headers = dict(headers or {})
    if status == 503:
        headers["Retry-After"] = str(ServerBusy.retry_after_s)
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="care-serve"'
    error: dict[str, str | None] = {"type": kind, "message": message}
    request_id = current_request_id()
    if request_id is not None:
        error["request_id"] = request_id
        headers["X-Request-Id"] = request_id
    return JSONResponse({"error": error}, status_code=status, headers=headers)


async def _care_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, CareServeError)
    if isinstance(exc, ServerBusy | ModelNotReady):
        return error_response(503, type(exc).__name__, client_message(exc, rest_remedy))
    if isinstance(exc, Unauthorized):
        return error_response(401, type(exc).__name__, client_message(exc, rest_remedy))
    return error_response(exc.status_code, type(exc).__name__, client_message(exc, rest_remedy))


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    if status == 404:
        message = f"no route {request.url.path}; see /docs for the API"
    elif status == 405:
        message = f"{request.method} is not allowed on {request.url.path}"
    else:
        message = str(exc.detail)
    return error_response(status, _HTTP_KINDS.get(status, "HTTPError"), message, exc.headers)


def _own_message(param: str, value: object, request: Request) -> str | None:
    """The message the server itself gives for a bad ``param`` (None: no own message)."""
    if param == "top_k":
        limit = request.app.state.settings.max_top_k
        return f"top_k must be an integer from 1 to {limit}, got {value!r}"
    try:
        if param == "version":
            validate_version(value if isinstance(value, int | str) else repr(value))
        elif param in _MODEL_NAMES:
            validate_model_name(str(value))
    except ValueError as exc:
        return str(exc)
    return None


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ())]
        where = f"{loc[0]} parameter {'.'.join(loc[1:])}" if len(loc) > 1 else ".".join(loc)
        value = err.get("input")
        own = _own_message(loc[-1], value, request) if len(loc) > 1 else None
        problems.append(own or f"invalid {where}: {err.get('msg')} (got {value!r})")
    return error_response(400, "InvalidInput", "; ".join(problems) or "invalid request")


async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("internal error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "InternalError", "internal server error")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(CareServeError, _care_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _internal_error)
