"""gRPC credentials check: one interceptor for both services on the port.

Each method needs an ``Access`` (health, reflection and v2 server liveness/readiness
are open; load, unload, adding and removing streams and the v2 repository extension need
admin; the rest infer).
The ``authorization`` metadata (``Bearer <key>``) goes to the data plane's
``Authorizer``; refusals are UNAUTHENTICATED, PERMISSION_DENIED or
RESOURCE_EXHAUSTED with a ``retry-after`` (seconds) trailer.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from care_serve.errors import CareServeError, RateLimited
from care_serve.observability.request_context import current_request_id, note_key
from care_serve.serving.auth import Access, Authorizer
from care_serve.transports.grpc_abort import abort_with

__all__ = ["AuthInterceptor", "access_of_method", "client_address"]

_OWN = "/care_serve.v1.InferenceService/"
_V2 = "/inference.GRPCInferenceService/"
_ADMIN = frozenset(
    {
        _OWN + "LoadModel",
        _OWN + "UnloadModel",
        _OWN + "AddStream",
        _OWN + "RemoveStream",
        _V2 + "RepositoryIndex",
        _V2 + "RepositoryModelLoad",
        _V2 + "RepositoryModelUnload",
    }
)
_OPEN = frozenset({_V2 + "ServerLive", _V2 + "ServerReady"})
_OPEN_SERVICES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


def access_of_method(method: str) -> Access:
    """What calling the full method name ``/package.Service/Method`` needs."""
    if method in _OPEN or method.startswith(_OPEN_SERVICES):
        return "open"
    if method in _ADMIN:
        return "admin"
    return "infer"


def client_address(peer: str) -> str:
    """``ipv4:10.0.0.5:41234`` -> ``10.0.0.5`` (``ipv6:[::1]:5`` -> ``::1``)."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv6" and rest.startswith("["):
        return rest[1 : rest.find("]")]
    if kind == "ipv4":
        return rest.rpartition(":")[0]
    return peer


def _authorization(metadata: Any) -> str | None:
    for key, value in metadata or ():
        if key == "authorization":
            return value if isinstance(value, str) else value.decode("latin-1")
    return None


def _refusal(exc: CareServeError) -> tuple[grpc.StatusCode, str, list[tuple[str, str]]]:
    """The status, message and trailers (request id, Retry-After) of a refused call."""
    trailers: list[tuple[str, str]] = []
    rid = current_request_id()
    if rid is not None:
        trailers.append(("x-request-id", rid))
    if isinstance(exc, RateLimited):
        trailers.append(("retry-after", exc.retry_after_header))
    return getattr(grpc.StatusCode, exc.grpc_code), exc.message, trailers


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Admits every call through the ``Authorizer`` before the servicer runs."""

    def __init__(self, authorizer: Authorizer) -> None:
        self.authorizer = authorizer

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        access = access_of_method(handler_call_details.method)
        if handler is None or access == "open":
            return handler
        authorization = _authorization(handler_call_details.invocation_metadata)
        authorizer = self.authorizer

        async def admit(context: grpc.aio.ServicerContext) -> None:
            try:
                principal = authorizer.admit(access, authorization, client_address(context.peer()))
            except CareServeError as exc:
                code, message, trailers = _refusal(exc)
            else:
                note_key(principal.name)
                return
            await abort_with(context, code, message, trailers)  # outside the except block

        for kind, make, streams_out in _HANDLER_KINDS:
            behavior = getattr(handler, kind)
            if behavior is not None:
                return make(
                    _guarded(behavior, admit, streams_out),
                    request_deserializer=handler.request_deserializer,
                    response_serializer=handler.response_serializer,
                )
        raise RuntimeError(f"{handler_call_details.method}: a handler of no known kind")


# (attribute of the handler, its constructor, whether the behavior yields responses)
_HANDLER_KINDS = (
    ("unary_unary", grpc.unary_unary_rpc_method_handler, False),
    ("unary_stream", grpc.unary_stream_rpc_method_handler, True),
    ("stream_unary", grpc.stream_unary_rpc_method_handler, False),
    ("stream_stream", grpc.stream_stream_rpc_method_handler, True),
)


def _guarded(
    behavior: Callable[..., Any],
    admit: Callable[[grpc.aio.ServicerContext], Awaitable[None]],
    streams_out: bool,
) -> Callable[..., Any]:
    """``behavior`` run only after ``admit`` let the call in (same shape: a coroutine, or an
    async generator for calls that stream responses)."""
    if streams_out:

        async def stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await admit(context)
            async for item in behavior(request, context):
                yield item

        return stream

    async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await admit(context)
        return await behavior(request, context)

    return call
