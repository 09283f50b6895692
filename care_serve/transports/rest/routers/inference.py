"""POST /{route} of every task: read the image, call the data plane, convert.

The routes are made from the task registry: each task declares its route, its
query parameters (a ``RestQuery`` model), its response body and how a result
becomes the answer (``care_serve.tasks.base``). A query parameter that the route
does not take is a 400 naming it and the accepted ones.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any, get_args

from fastapi import APIRouter, Header, Query, Request, Response
from pydantic import BaseModel

from care_serve.errors import InvalidInput
from care_serve.serving.data_plane import BodyReader, DataPlane
from care_serve.store.manifest import NAME_PATTERN
from care_serve.tasks.base import BinaryAnswer, Task, task_classes
from care_serve.transports.rest.body import read_image_bytes
from care_serve.transports.rest.deps import get_data_plane
from care_serve.transports.rest.schemas import ErrorBody

__all__ = ["INFER_ERRORS", "MAX_VERSION", "errors", "router"]

router = APIRouter(tags=["inference"])

_BINARY = {"schema": {"type": "string", "format": "binary"}}
IMAGE_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "The image: a multipart file field 'file' (or 'image'), or the raw bytes.",
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "required": ["file"],
                }
            },
            "image/jpeg": _BINARY,
            "image/png": _BINARY,
            "application/octet-stream": _BINARY,
        },
    }
}
ERROR_TEXTS = {
    400: "Bad image or parameter",
    401: "Missing or wrong admin token (see WWW-Authenticate)",
    403: "The credential lacks the scope the call needs (admin)",
    404: "Unknown model or version",
    409: "Refused: the server watches the store (model_control poll), or the name is taken",
    413: "Image larger than the byte or pixel limit",
    422: "The model package is invalid (bad manifest, weights or labels)",
    503: "Queue full or model not ready (see Retry-After)",
    504: "Deadline passed before the answer",
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI ``responses`` of the error ``codes`` a route can give."""
    return {code: {"model": ErrorBody, "description": ERROR_TEXTS[code]} for code in codes}


INFER_ERRORS = errors(400, 404, 413, 503, 504)
MAX_VERSION = 999_999_999

ModelQ = Query(
    None,
    description="Model name; default: the task's default model.",
    pattern=NAME_PATTERN,
    max_length=64,
)
VersionQ = Query(
    None, description="Model version; default: the version being served.", ge=1, le=MAX_VERSION
)
TimeoutH = Header(None, description="Deadline of this request in milliseconds.", gt=0)


def _body(request: Request, data_plane: DataPlane) -> BodyReader:
    """The body reader the data plane awaits once the request is admitted."""
    return lambda: read_image_bytes(request, data_plane.settings.max_image_bytes)


def _timeout_s(timeout_ms: float | None) -> float | None:
    return None if timeout_ms is None else timeout_ms / 1000.0


PNG_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "JSON (format=json), or a PNG (the other formats).",
        "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}},
    }
}
COMMON_PARAMETERS = ("model", "version")


def _binary(answer: BinaryAnswer, model: str, version: int) -> Response:
    """A non-JSON answer; the headers name the model and version that made it."""
    headers = {"X-Model": model, "X-Model-Version": str(version), **answer.headers}
    return Response(content=answer.content, media_type=answer.media_type, headers=headers)


def _query_parameters(task: type[Task]) -> list[inspect.Parameter]:
    """One FastAPI query parameter per field of the task's ``rest_query`` model."""
    parameters = []
    for name, info in task.rest_query.model_fields.items():
        # Numeric bounds (ge=1, ...) go to FastAPI, which validates and documents them.
        bounds = {
            key: getattr(item, key)
            for item in info.metadata
            for key in ("ge", "gt", "le", "lt")
            if hasattr(item, key)
        }
        default = Query(info.default, description=info.description, **bounds)
        annotation = info.annotation
        parameters.append(
            inspect.Parameter(
                name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation
            )
        )
    return parameters


def _check_query_names(request: Request, task: type[Task]) -> None:
    """A 400 for a query parameter the route does not take, listing the accepted ones."""
    accepted = [*COMMON_PARAMETERS, *task.rest_query.model_fields]
    unknown = sorted(set(request.query_params) - set(accepted))
    if unknown:
        raise InvalidInput(
            f"/{task.route} does not take the query parameter"
            f"{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} "
            f"(accepted: {', '.join(accepted)})"
        )


def task_endpoint(task: type[Task]) -> Callable[..., Awaitable[Any]]:
    """The endpoint of ``POST /{task.route}``, its signature built from the task's query."""

    async def endpoint(
        request: Request,
        model: str | None,
        version: int | None,
        x_request_timeout_ms: float | None,
        **fields: Any,
    ) -> Any:
        _check_query_names(request, task)
        query = task.rest_query.model_construct(**fields)  # FastAPI has validated the fields
        data_plane: DataPlane = get_data_plane(request)
        result = await data_plane.infer(
            task.name,
            _body(request, data_plane),
            model=model,
            version=version,
            params=task.rest_params(query),
            protocol="rest",
            timeout_s=_timeout_s(x_request_timeout_ms),
        )
        answer = task.rest_answer(result, query)
        if isinstance(answer, BinaryAnswer):
            return _binary(answer, result.model, result.version)
        return answer

    common = [
        inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Request),
        inspect.Parameter(
            "model", inspect.Parameter.KEYWORD_ONLY, default=ModelQ, annotation=str | None
        ),
        inspect.Parameter(
            "version", inspect.Parameter.KEYWORD_ONLY, default=VersionQ, annotation=int | None
        ),
    ]
    timeout = inspect.Parameter(
        "x_request_timeout_ms",
        inspect.Parameter.KEYWORD_ONLY,
        default=TimeoutH,
        annotation=float | None,
    )
    endpoint.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [*common, *_query_parameters(task), timeout]
    )
    endpoint.__name__ = task.route
    return endpoint


def _has_binary_formats(query: type[BaseModel]) -> bool:
    field = query.model_fields.get("format")
    return field is not None and len(get_args(field.annotation)) > 1


def add_task_routes(target: APIRouter) -> None:
    """``POST /{route}`` for every registered task."""
    for task in task_classes():
        target.add_api_route(
            f"/{task.route}",
            task_endpoint(task),
            methods=["POST"],
            response_model=task.rest_response,
            responses=(
                {**PNG_RESPONSE, **INFER_ERRORS}
                if _has_binary_formats(task.rest_query)
                else INFER_ERRORS
            ),
            openapi_extra=IMAGE_BODY,
            summary=task.summary,
        )


add_task_routes(router)
