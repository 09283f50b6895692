"""Mapping errors to HTTP responses, once for the whole app.

``CareServeError`` -> its status code and ``{"error": {"type", "message"}}``;
request validation -> 400 naming the bad parameter; anything else -> 500
without a traceback.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from service.errors import CareServeError, ModelNotReady, ServerBusy

__all__ = ["error_response", "install_error_handlers"]

log = logging.getLogger(__name__)


def error_response(status: int, kind: str, message: str) -> JSONResponse:
    headers = {"Retry-After": str(ServerBusy.retry_after_s)} if status == 503 else None
    return JSONResponse(
        {"error": {"type": kind, "message": message}}, status_code=status, headers=headers
    )


async def _care_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, CareServeError)
    if isinstance(exc, ServerBusy | ModelNotReady):
        return error_response(503, type(exc).__name__, exc.message)
    return error_response(exc.status_code, type(exc).__name__, exc.message)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ())]
        where = f"{loc[0]} parameter {'.'.join(loc[1:])}" if len(loc) > 1 else ".".join(loc)
        value = err.get("input")
        problems.append(f"invalid {where}: {err.get('msg')} (got {value!r})")
    return error_response(400, "InvalidInput", "; ".join(problems) or "invalid request")


async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("internal error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "InternalError", "internal server error")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(CareServeError, _care_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _internal_error)
