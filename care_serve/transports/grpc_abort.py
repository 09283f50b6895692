"""How both gRPC services (care-serve's own and v2) end a call that failed.

A ``CareServeError`` ends the call with its gRPC status and its message; any other
exception is logged and ends it with ``INTERNAL``. The call is aborted *after* the
``except`` block: grpc's asyncio server keeps the state of the last call it started,
and an abort raised inside the block would chain (``__context__``) to the error, its
traceback and the frames that hold the request. Two refused 25 MB images stayed
resident that way until the next call arrived.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import NoReturn, TypeVar

import grpc

from care_serve.errors import CareServeError

__all__ = ["abort_with", "answer_or_abort"]

log = logging.getLogger(__name__)
T = TypeVar("T")


async def answer_or_abort(
    context: grpc.aio.ServicerContext,
    call: Callable[[], Awaitable[T]],
    status_of: Callable[[CareServeError], tuple[grpc.StatusCode, str]],
    service: str,
) -> T:
    """``await call()``, or abort the call: ``status_of(error)`` for a ``CareServeError``,
    ``INTERNAL`` (logged, naming ``service``) for anything else."""
    try:
        return await call()
    except CareServeError as exc:
        code, message = status_of(exc)
    except Exception:
        log.exception("internal error in a %s call", service)
        code, message = grpc.StatusCode.INTERNAL, "internal server error"
    await abort_with(context, code, message)


async def abort_with(
    context: grpc.aio.ServicerContext,
    code: grpc.StatusCode,
    message: str,
    trailers: Sequence[tuple[str, str]] = (),
) -> NoReturn:
    """``context.abort``; call it outside any ``except`` block (see the module doc)."""
    await context.abort(code, message, tuple(trailers))
    raise AssertionError("unreachable")  # context.abort raises
