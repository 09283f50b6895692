"""A gRPC server interceptor: request ids and one access-log line per unary call.

``x-request-id`` from the call's metadata is kept when it is safe, else a fresh
id is made; it is sent back in the initial metadata and in the trailing
metadata (so a failed call carries it too).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from care_serve.observability.request_context import begin_request, log_access, request_id_from

__all__ = ["AccessLogInterceptor"]


class AccessLogInterceptor(grpc.aio.ServerInterceptor):
    """Wraps every unary-unary handler (streams, e.g. health Watch, pass through)."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        behavior = handler.unary_unary
        rpc = handler_call_details.method
        metadata = handler_call_details.invocation_metadata or ()
        sent = next((v for k, v in metadata if k == "x-request-id"), None)

        async def logged(request: Any, context: grpc.aio.ServicerContext) -> Any:
            started = time.perf_counter()
            info = begin_request(request_id_from(sent), "grpc")
            pair = (("x-request-id", info.request_id),)
            await context.send_initial_metadata(pair)
            context.set_trailing_metadata(pair)
            status = "OK"
            try:
                return await behavior(request, context)
            except BaseException:
                code = context.code()
                status = code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"
                raise
            finally:
                latency = (time.perf_counter() - started) * 1000.0
                log_access(info, status, latency, rpc=rpc)

        return grpc.unary_unary_rpc_method_handler(
            logged,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
