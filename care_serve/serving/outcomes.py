"""The ``outcome`` label of a request's metrics, from the error that ended it."""

from __future__ import annotations

from care_serve.errors import (
    DeadlineExceeded,
    InvalidInput,
    ModelNotReady,
    NotFound,
    ServerBusy,
)

__all__ = ["outcome_of"]


def outcome_of(exc: BaseException) -> str:
    """The ``outcome`` label of a failed request."""
    if isinstance(exc, ServerBusy):
        return "overloaded"
    if isinstance(exc, DeadlineExceeded):
        return "timeout"
    if isinstance(exc, NotFound):
        return "not_found"
    if isinstance(exc, InvalidInput):
        return "invalid_input"
    if isinstance(exc, ModelNotReady):
        return "unavailable"
    return "error"
