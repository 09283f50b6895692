"""POST /classify, /detect and /segment: read the image, call the data plane, convert."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Header, Query, Request, Response

from care_serve.serving.data_plane import BodyReader, DataPlane, InferenceResult
from care_serve.store.manifest import NAME_PATTERN
from care_serve.tasks.detection import DetectionResult
from care_serve.tasks.segmentation import SegmentationResult
from care_serve.transports.rest.body import read_image_bytes
from care_serve.transports.rest.deps import DataPlaneDep
from care_serve.transports.rest.schemas import (
    ClassifyResponse,
    DetectResponse,
    ErrorBody,
    SegmentResponse,
    classify_response,
    detect_response,
    segment_response,
)

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
    404: "Unknown model or version",
    409: "Load/unload refused: the server watches the store (model_control poll)",
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


@router.post(
    "/classify",
    response_model=ClassifyResponse,
    responses=INFER_ERRORS,
    openapi_extra=IMAGE_BODY,
    summary="Classify an image: top-k labels with probabilities",
)
async def classify(
    request: Request,
    data_plane: DataPlaneDep,
    model: str | None = ModelQ,
    version: int | None = VersionQ,
    top_k: int | None = Query(
        None, description="How many classes to return, 1..max_top_k (default 5).", ge=1
    ),
    x_request_timeout_ms: float | None = TimeoutH,
) -> ClassifyResponse:
    result = await data_plane.infer(
        "classification",
        _body(request, data_plane),
        model=model,
        version=version,
        params={"top_k": top_k},
        protocol="rest",
        timeout_s=_timeout_s(x_request_timeout_ms),
    )
    return classify_response(result)


PNG_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "JSON (format=json), or a PNG (the other formats).",
        "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}},
    }
}
DetectFormat = Literal["json", "overlay"]
DetectFormatQ = Query(
    "json",
    description="json: the detections as JSON; overlay: an RGB PNG for people, the image with "
    "each box, label and score drawn and the count per class in a strip below it.",
)


def _png(png: bytes, result: InferenceResult, **headers: str) -> Response:
    """A PNG answer; the headers name the model and version that made it."""
    return Response(
        content=png,
        media_type="image/png",
        headers={"X-Model": result.model, "X-Model-Version": str(result.version), **headers},
    )


@router.post(
    "/detect",
    response_model=DetectResponse,
    responses={**PNG_RESPONSE, **INFER_ERRORS},
    openapi_extra=IMAGE_BODY,
    summary="Detect objects: labelled boxes in pixels of the image sent, or a PNG of them",
)
async def detect(
    request: Request,
    data_plane: DataPlaneDep,
    model: str | None = ModelQ,
    version: int | None = VersionQ,
    score_threshold: float | None = Query(
        None,
        description="Minimum score to return, in [0, 1] (default: the model's manifest).",
    ),
    max_detections: int | None = Query(
        None,
        description="At most this many detections, best first (default: the model's "
        "manifest; at most its pre_nms_top_k, 1000 by default).",
    ),
    class_agnostic_nms: bool | None = Query(
        None,
        description="true: overlapping boxes suppress each other whatever their classes (one box "
        "per object); false: only boxes of the same class do (default: the model's manifest).",
    ),
    format: DetectFormat = DetectFormatQ,
    x_request_timeout_ms: float | None = TimeoutH,
) -> Any:
    params: dict[str, Any] = {
        "score_threshold": score_threshold,
        "max_detections": max_detections,
        "class_agnostic_nms": class_agnostic_nms,
    }
    result = await data_plane.infer(
        "detection",
        _body(request, data_plane),
        model=model,
        version=version,
        params={
            **{k: v for k, v in params.items() if v is not None},
            "return_overlay": format == "overlay",
        },
        protocol="rest",
        timeout_s=_timeout_s(x_request_timeout_ms),
    )
    if format == "json":
        return detect_response(result)
    assert isinstance(result.result, DetectionResult)
    assert result.result.overlay_png is not None
    return _png(result.result.overlay_png, result)


SegmentFormat = Literal["json", "png", "overlay"]
FormatQ = Query(
    "json",
    description="json: JSON with the base64 mask PNG and class shares; png: the mask PNG itself "
    "(class indices); overlay: an RGB PNG for people, the image blended with the mask colours and "
    "a legend below it (each class present, its colour and share of the pixels).",
)


@router.post(
    "/segment",
    response_model=SegmentResponse,
    responses={**PNG_RESPONSE, **INFER_ERRORS},
    openapi_extra=IMAGE_BODY,
    summary="Segment an image: class mask (PNG) and class shares, or the PNG itself",
)
async def segment(
    request: Request,
    data_plane: DataPlaneDep,
    model: str | None = ModelQ,
    version: int | None = VersionQ,
    format: SegmentFormat = FormatQ,
    x_request_timeout_ms: float | None = TimeoutH,
) -> Any:
    result = await data_plane.infer(
        "segmentation",
        _body(request, data_plane),
        model=model,
        version=version,
        params={"return_overlay": format == "overlay"},
        protocol="rest",
        timeout_s=_timeout_s(x_request_timeout_ms),
    )
    if format == "json":
        return segment_response(result)
    assert isinstance(result.result, SegmentationResult)
    png = result.result.overlay_png if format == "overlay" else result.result.mask_png
    assert png is not None
    return _png(png, result, **{"X-Class-Names": ",".join(result.result.class_names)})
