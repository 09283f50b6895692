"""JSON response bodies of the REST API (documented in the OpenAPI schema)."""

from __future__ import annotations

import base64

from pydantic import BaseModel, Field

from care_serve.serving.data_plane import InferenceResult
from care_serve.tasks.classification import ClassificationResult, Prediction
from care_serve.tasks.detection import Detection, DetectionResult
from care_serve.tasks.segmentation import ClassShare, SegmentationResult

__all__ = [
    "ClassifyResponse",
    "DetectResponse",
    "ErrorBody",
    "SegmentResponse",
    "Timings",
    "detect_response",
    "segment_response",
]


class Timings(BaseModel):
    """Milliseconds spent in each stage inside the server."""

    decode: float
    preprocess: float
    queue: float
    compute: float
    postprocess: float
    total: float


class ClassifyResponse(BaseModel):
    model: str = Field(description="The model that answered.")
    version: int = Field(description="Its version.")
    predictions: list[Prediction] = Field(description="Top-k classes, most probable first.")
    image_width: int
    image_height: int
    batch_size: int = Field(description="How many requests shared the batch.")
    timings_ms: Timings


class DetectResponse(BaseModel):
    model: str = Field(description="The model that answered.")
    version: int = Field(description="Its version.")
    image_width: int = Field(description="Width of the image sent, after EXIF orientation.")
    image_height: int = Field(description="Height of the image sent, after EXIF orientation.")
    detections: list[Detection] = Field(description="Detections, highest score first.")
    batch_size: int = Field(description="How many requests shared the batch.")
    timings_ms: Timings


class SegmentResponse(BaseModel):
    model: str = Field(description="The model that answered.")
    version: int = Field(description="Its version.")
    image_width: int = Field(description="Width of the image sent, after EXIF orientation.")
    image_height: int = Field(description="Height of the image sent, after EXIF orientation.")
    class_names: list[str] = Field(description="Class names; index = value in the mask.")
    mask_png: str = Field(
        description="Base64 single-channel PNG of class indices, mask_width x mask_height "
        "(8-bit; 16-bit above 256 classes)."
    )
    mask_width: int = Field(
        description="Width of the mask: image_width, or less when the image has more than "
        "max_output_pixels pixels (same aspect ratio)."
    )
    mask_height: int = Field(description="Height of the mask (see mask_width).")
    class_shares: list[ClassShare] = Field(description="Each class's fraction of the pixels.")
    batch_size: int = Field(description="How many requests shared the batch.")
    timings_ms: Timings


class ErrorDetail(BaseModel):
    type: str = Field(description="The error class, e.g. InvalidInput, NotFound, ServerBusy.")
    message: str = Field(description="What was wrong and what is accepted.")
    request_id: str | None = Field(
        default=None, description="The request id (also the X-Request-Id response header)."
    )


class ErrorBody(BaseModel):
    error: ErrorDetail


def classify_response(result: InferenceResult) -> ClassifyResponse:
    assert isinstance(result.result, ClassificationResult)
    return ClassifyResponse(
        model=result.model,
        version=result.version,
        predictions=result.result.predictions,
        image_width=result.image_width,
        image_height=result.image_height,
        batch_size=result.batch_size,
        timings_ms=Timings(**result.timings_ms),
    )


def detect_response(result: InferenceResult) -> DetectResponse:
    assert isinstance(result.result, DetectionResult)
    return DetectResponse(
        model=result.model,
        version=result.version,
        image_width=result.image_width,
        image_height=result.image_height,
        detections=result.result.detections,
        batch_size=result.batch_size,
        timings_ms=Timings(**result.timings_ms),
    )


def segment_response(result: InferenceResult) -> SegmentResponse:
    assert isinstance(result.result, SegmentationResult)
    return SegmentResponse(
        model=result.model,
        version=result.version,
        image_width=result.image_width,
        image_height=result.image_height,
        class_names=result.result.class_names,
        mask_png=base64.b64encode(result.result.mask_png).decode("ascii"),
        mask_width=int(result.result.mask.shape[1]),
        mask_height=int(result.result.mask.shape[0]),
        class_shares=result.result.class_shares,
        batch_size=result.batch_size,
        timings_ms=Timings(**result.timings_ms),
    )
