"""The one error hierarchy of care-serve.

Every error a client or operator can cause is a ``CareServeError`` with an HTTP
status code; the transports map it once (REST: status + JSON body, gRPC: status
code + details). Anything else is an internal error and is reported without a
traceback.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from pydantic import ValidationError


@dataclass(frozen=True)
class Remedy:
    """What the client can do about an error, said by each transport in its own words.

    ``load``: load ``model`` (any model when None; ``any_version``: another version of it);
    ``use_task``: send the request to the route or method of ``task``.
    """

    action: Literal["load", "use_task"]
    model: str | None = None
    any_version: bool = False
    task: str | None = None


class CareServeError(Exception):
    """Base class: ``message`` is safe to show to a client; ``remedy`` is what to do."""

    status_code: int = 500
    grpc_code: str = "INTERNAL"

    def __init__(
        self, message: str, status_code: int | None = None, *, remedy: Remedy | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.remedy = remedy
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


class Unauthorized(CareServeError):
    """No credential, or one the server does not know (an API key or the admin token)."""

    status_code = 401
    grpc_code = "UNAUTHENTICATED"


class Forbidden(CareServeError):
    """The credential is valid but lacks the scope, or the operation is switched off."""

    status_code = 403
    grpc_code = "PERMISSION_DENIED"


class RateLimited(CareServeError):
    """The client sent more requests than its rate limit allows; retry after a while."""

    status_code = 429
    grpc_code = "RESOURCE_EXHAUSTED"

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    @property
    def retry_after_header(self) -> str:
        """Whole seconds, rounded up, at least 1 (the ``Retry-After`` header's form)."""
        return str(max(1, math.ceil(self.retry_after_s)))


class Conflict(CareServeError):
    """The request conflicts with the server's configuration (e.g. load/unload while the
    store is watched)."""

    status_code = 409
    grpc_code = "FAILED_PRECONDITION"


class ModelNotReady(CareServeError):
    """The model exists but is loading, unloading or failed to load."""

    status_code = 503
    grpc_code = "UNAVAILABLE"


class ShuttingDown(ModelNotReady):
    """The server is draining for shutdown; the client should retry on another replica."""


class ServerBusy(CareServeError):
    """A model's request queue is full; the client should retry later."""

    status_code = 503
    grpc_code = "RESOURCE_EXHAUSTED"
    retry_after_s: int = 1


class DeadlineExceeded(CareServeError):
    """The request's deadline passed before it could be answered."""

    status_code = 504
    grpc_code = "DEADLINE_EXCEEDED"


class InferenceError(CareServeError):
    """The backend failed on a batch (the request itself was valid)."""

    status_code = 500
    grpc_code = "INTERNAL"


class NotSupported(CareServeError):
    """A task or operation this build or model does not provide."""

    status_code = 501
    grpc_code = "UNIMPLEMENTED"


class ModelStoreError(CareServeError, ValueError):
    """A model package or the store layout is invalid (bad manifest, missing weights)."""

    status_code = 422
    grpc_code = "FAILED_PRECONDITION"


class DatasetError(CareServeError, ValueError):
    """A training or evaluation dataset is missing, malformed or not in the expected layout."""

    status_code = 422
    grpc_code = "FAILED_PRECONDITION"


class ExportError(CareServeError):
    """An ONNX export failed: the exporter or checker refused it, or outputs disagree with torch."""

    status_code = 500
    grpc_code = "INTERNAL"


class ConfigurationError(CareServeError, ValueError):
    """A setting points at something unusable (a TLS file, an API key file); refuses start."""

    status_code = 500
    grpc_code = "INTERNAL"


class PortInUse(CareServeError):
    """A port the server must listen on is taken (refused at start, before models load)."""

    status_code = 500
    grpc_code = "INTERNAL"


def validation_problems(exc: ValidationError, prefix: str = "") -> str:
    """Every problem of a pydantic ``ValidationError``, as ``where: what; ...`` in one line."""
    return "; ".join(
        f"{prefix}{'.'.join(map(str, e['loc'])) or '(top level)'}: {e['msg']}" for e in exc.errors()
    )
