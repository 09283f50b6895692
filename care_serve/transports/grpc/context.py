"""What both gRPC transports read from a call's context: its deadline and its token."""

from __future__ import annotations

import grpc

__all__ = ["authorization_of", "timeout_of"]


def timeout_of(context: grpc.aio.ServicerContext) -> float | None:
    """Seconds left before the call's deadline (None: the call has no deadline)."""
    remaining = context.time_remaining()
    return remaining if remaining is not None and remaining < 1e8 else None


def authorization_of(context: grpc.aio.ServicerContext) -> str | None:
    """The call's ``authorization`` metadata (``Bearer <token>``), if it sent one."""
    for key, value in context.invocation_metadata() or ():
        if key.lower() == "authorization":
            return value if isinstance(value, str) else value.decode()
    return None
