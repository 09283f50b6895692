"""The v2 REST routes under ``/v2``: health, metadata, infer and the repository extension.

Thin: parse with ``care_serve.transports.v2.http_codec``, call ``V2Protocol``, encode. Errors are
the protocol's ``{"error": "<message>"}`` with the error's status code (400 bad
request, 401 admin token, 404 unknown model or version, 503 not ready or queue
full, 504 deadline), never a 500 for a malformed request.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Header, Request, Response
from fastapi.responses import JSONResponse

from care_serve.errors import CareServeError, InvalidInput, ModelNotReady, ServerBusy
from care_serve.serving.data_plane import DataPlane
from care_serve.transports.remedies import client_message, v2_rest_remedy
from care_serve.transports.rest.body import read_limited
from care_serve.transports.v2.http_codec import HEADER_LENGTH, encode_response, parse_request
from care_serve.transports.v2.protocol import V2Protocol

__all__ = ["router"]

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v2", tags=["v2 (Open Inference Protocol)"])

ERROR = {"description": "Error", "content": {"application/json": {"example": {"error": "..."}}}}
ERRORS: dict[int | str, dict[str, Any]] = {c: ERROR for c in (400, 401, 404, 503, 504)}
_TENSOR = {
    "type": "object",
    "required": ["name", "datatype", "shape"],
    "properties": {
        "name": {"type": "string", "enum": ["image", "input", "frame"]},
        "datatype": {"type": "string", "enum": ["BYTES", "FP32", "UINT8"]},
        "shape": {"type": "array", "items": {"type": "integer"}},
        "parameters": {
            "type": "object",
            "properties": {"binary_data_size": {"type": "integer"}},
        },
        "data": {"type": "array", "items": {}},
    },
}
INFER_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "An inference request (JSON), optionally followed by binary tensor "
        "data; then the header Inference-Header-Content-Length gives the JSON part's length.",
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["inputs"],
                    "properties": {
                        "id": {"type": "string"},
                        "parameters": {"type": "object"},
                        "inputs": {"type": "array", "items": _TENSOR},
                        "outputs": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {
                                    "name": {"type": "string"},
                                    "parameters": {
                                        "type": "object",
                                        "properties": {
                                            "binary_data": {"type": "boolean"},
                                            "classification": {"type": "integer"},
                                        },
                                    },
                                },
                            },
                        },
                    },
                }
            },
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}
REPOSITORY_BODY: dict[str, Any] = {
    "requestBody": {
        "required": False,
        "content": {"application/json": {"schema": {"type": "object"}}},
    }
}
AuthH = Header(None, description="'Bearer <token>' when the server has an admin token.")
TimeoutH = Header(None, description="Deadline of this request in milliseconds.")


def error(status: int, message: str) -> JSONResponse:
    headers = {"Retry-After": str(ServerBusy.retry_after_s)} if status == 503 else None
    return JSONResponse({"error": message}, status_code=status, headers=headers)


async def _answer(call: Callable[[], Awaitable[Response]]) -> Response:
    try:
        return await call()
    except CareServeError as exc:
        status = 503 if isinstance(exc, ServerBusy | ModelNotReady) else exc.status_code
        return error(status, client_message(exc, v2_rest_remedy))
    except Exception:
        log.exception("internal error in a v2 REST call")
        return error(500, "internal server error")


def _protocol(request: Request) -> V2Protocol:
    data_plane: DataPlane = request.app.state.data_plane
    return V2Protocol(data_plane)


async def _json_body(request: Request) -> dict[str, Any]:
    body = await read_limited(request, 1024 * 1024, "1 MiB for repository requests")
    if not body.strip():
        return {}
    try:
        doc = json.loads(body)
    except ValueError as exc:
        raise InvalidInput(f"the request's JSON cannot be parsed: {exc}") from None
    if not isinstance(doc, dict):
        raise InvalidInput("the request body must be a JSON object")
    return doc


# -- health and server metadata ---------------------------------------------------------
@router.get("", summary="Server metadata: name, version, extensions", responses=ERRORS)
async def server_metadata(request: Request) -> Response:
    async def call() -> Response:
        return JSONResponse(_protocol(request).server_metadata())

    return await _answer(call)


@router.get("/health/live", summary="200 while the server is live")
async def server_live() -> JSONResponse:
    return JSONResponse({"live": True})


@router.get("/health/ready", summary="200 when the server is ready (start-up loading done)")
async def server_ready(request: Request) -> JSONResponse:
    protocol = _protocol(request)
    ready = protocol.server_ready()
    body: dict[str, Any] = {"ready": ready}
    reason = None if ready else protocol.data_plane.not_ready_reason()
    if reason is not None:
        body["reason"] = reason
    return JSONResponse(body, status_code=200 if ready else 503)


# -- model metadata and readiness --------------------------------------------------------
async def _metadata(request: Request, name: str, version: str | None) -> Response:
    async def call() -> Response:
        return JSONResponse(_protocol(request).model_metadata(name, version))

    return await _answer(call)


@router.get(
    "/models/{name}",
    summary="Model (or pipeline) metadata: inputs, outputs, labels",
    responses=ERRORS,
)
async def model_metadata(request: Request, name: str) -> Response:
    return await _metadata(request, name, None)


@router.get("/models/{name}/versions/{version}", summary="Metadata of a version", responses=ERRORS)
async def model_version_metadata(request: Request, name: str, version: str) -> Response:
    return await _metadata(request, name, version)


async def _ready(request: Request, name: str, version: str | None) -> Response:
    async def call() -> Response:
        protocol = _protocol(request)
        protocol.check_known(name, version)  # 404 for an unknown model or version
        ready = protocol.model_ready(name, version)
        return JSONResponse({"name": name, "ready": ready}, status_code=200 if ready else 503)

    return await _answer(call)


@router.get("/models/{name}/ready", summary="200 when the model is ready", responses=ERRORS)
async def model_ready(request: Request, name: str) -> Response:
    return await _ready(request, name, None)


@router.get(
    "/models/{name}/versions/{version}/ready",
    summary="200 when the model version is ready",
    responses=ERRORS,
)
async def model_version_ready(request: Request, name: str, version: str) -> Response:
    return await _ready(request, name, version)


# -- inference ---------------------------------------------------------------------------
def _timeout_s(header: str | None) -> float | None:
    if header is None:
        return None
    try:
        return float(header) / 1000.0
    except ValueError:
        raise InvalidInput(f"x-request-timeout-ms must be a number, got {header!r}") from None


async def _infer(
    request: Request, name: str, version: str | None, timeout_ms: str | None
) -> Response:
    async def call() -> Response:
        protocol = _protocol(request)
        timeout_s = _timeout_s(timeout_ms)
        limit = protocol.data_plane.settings.max_request_bytes
        body = await read_limited(request, limit, "max_request_bytes")
        parsed = parse_request(body, request.headers.get(HEADER_LENGTH))
        served, served_version, outputs = await protocol.infer(
            name,
            version,
            parsed.inputs,
            parsed.requested,
            parsed.parameters,
            protocol="v2-rest",
            timeout_s=timeout_s,
        )
        body, json_length = encode_response(served, served_version, parsed, outputs)
        if json_length is None:
            return Response(body, media_type="application/json")
        return Response(
            body,
            media_type="application/octet-stream",
            headers={HEADER_LENGTH: str(json_length)},
        )

    return await _answer(call)


@router.post(
    "/models/{name}/infer",
    summary="Inference (JSON tensors or the binary tensor data extension)",
    responses=ERRORS,
    openapi_extra=INFER_BODY,
)
async def infer(
    request: Request, name: str, x_request_timeout_ms: str | None = TimeoutH
) -> Response:
    return await _infer(request, name, None, x_request_timeout_ms)


@router.post(
    "/models/{name}/versions/{version}/infer",
    summary="Inference on a model version",
    responses=ERRORS,
    openapi_extra=INFER_BODY,
)
async def infer_version(
    request: Request, name: str, version: str, x_request_timeout_ms: str | None = TimeoutH
) -> Response:
    return await _infer(request, name, version, x_request_timeout_ms)


# -- repository extension ----------------------------------------------------------------
@router.post(
    "/repository/index",
    summary="Models in the repository and their state",
    responses=ERRORS,
    openapi_extra=REPOSITORY_BODY,
)
async def repository_index(request: Request) -> Response:
    async def call() -> Response:
        doc = await _json_body(request)
        ready = doc.get("ready", False)
        if not isinstance(ready, bool):
            raise InvalidInput(f"'ready' must be true or false, got {ready!r}")
        return JSONResponse(_protocol(request).repository_index(ready))

    return await _answer(call)


@router.post(
    "/repository/models/{name}/load",
    summary="Load or reload a model (admin token)",
    responses=ERRORS,
    openapi_extra=REPOSITORY_BODY,
)
async def repository_load(
    request: Request, name: str, authorization: str | None = AuthH
) -> Response:
    async def call() -> Response:
        doc = await _json_body(request)
        parameters = doc.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise InvalidInput("'parameters' must be a JSON object")
        await _protocol(request).load(name, parameters, authorization)
        return Response(status_code=200)

    return await _answer(call)


@router.post(
    "/repository/models/{name}/unload",
    summary="Unload a model (admin token)",
    responses=ERRORS,
    openapi_extra=REPOSITORY_BODY,
)
async def repository_unload(
    request: Request, name: str, authorization: str | None = AuthH
) -> Response:
    async def call() -> Response:
        doc = await _json_body(request)
        parameters = doc.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise InvalidInput("'parameters' must be a JSON object")
        await _protocol(request).unload(name, parameters, authorization)
        return Response(status_code=200)

    return await _answer(call)
