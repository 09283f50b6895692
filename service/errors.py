"""The one error hierarchy of care-serve.

Every error a client or operator can cause is a ``CareServeError`` with an HTTP
status code; the transports map it once (REST: status + JSON body, gRPC: status
code + details). Anything else is an internal error and is reported without a
traceback.
"""

from __future__ import annotations


class CareServeError(Exception):
    """Base class: ``message`` is safe to show to a client."""

    status_code: int = 500
    grpc_code: str = "INTERNAL"

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status_code is not None:
            self.status_code = status_code


class InvalidInput(CareServeError, ValueError):
    """The request was malformed: bad image, bad parameter, bad size."""

    status_code = 400
    grpc_code = "INVALID_ARGUMENT"


class PayloadTooLarge(InvalidInput):
    """The request body or the decoded image exceeds a configured limit."""

    status_code = 413


class NotFound(CareServeError, LookupError):
    """An unknown model, version or resource."""

    status_code = 404
    grpc_code = "NOT_FOUND"


class CheckpointError(CareServeError, ValueError):
    """A checkpoint file is missing, unreadable, or does not fit the architecture."""

    status_code = 422
    grpc_code = "FAILED_PRECONDITION"
