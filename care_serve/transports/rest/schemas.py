"""The JSON error body of the REST API (each task declares its own response body)."""

from __future__ import annotations

from pydantic import BaseModel, Field

__all__ = ["ErrorBody", "ErrorDetail"]


class ErrorDetail(BaseModel):
    type: str = Field(description="The error class, e.g. InvalidInput, NotFound, ServerBusy.")
    message: str = Field(description="What was wrong and what is accepted.")
    request_id: str | None = Field(
        default=None, description="The request id (also the X-Request-Id response header)."
    )


class ErrorBody(BaseModel):
    error: ErrorDetail
