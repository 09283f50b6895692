"""JSON response bodies of the REST API (documented in the OpenAPI schema)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from service.inference import InferenceResult
from service.tasks.classification import ClassificationResult, Prediction

__all__ = ["ClassifyResponse", "ErrorBody", "Timings", "generic_response"]


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


class ErrorDetail(BaseModel):
    type: str
    message: str


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


def generic_response(result: InferenceResult) -> dict[str, Any]:
    """Any task's result: common fields plus the task result's own fields."""
    return {
        "model": result.model,
        "version": result.version,
        "image_width": result.image_width,
        "image_height": result.image_height,
        **result.result.model_dump(mode="json"),
        "batch_size": result.batch_size,
        "timings_ms": result.timings_ms,
    }
