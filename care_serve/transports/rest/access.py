"""A pure ASGI middleware: request ids and one access-log line per REST request.

``X-Request-Id`` from the client is kept when it is safe (see
``care_serve.observability.request_context.request_id_from``), else replaced by a fresh id; the
id is returned on every response. Pure ASGI (no ``BaseHTTPMiddleware``): it is
on the hot path and costs one header scan, a context variable and a log call.
"""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from care_serve.observability.request_context import begin_request, log_access, request_id_from

__all__ = ["AccessLogMiddleware"]

_HEADER = b"x-request-id"


class AccessLogMiddleware:
    """Wraps the REST app: request id in, request id out, one log line."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        sent = next((v for k, v in scope.get("headers", ()) if k == _HEADER), None)
        info = begin_request(request_id_from(sent), "rest")
        rid = info.request_id.encode("ascii")
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", ()))
                if not any(k.lower() == _HEADER for k, _ in headers):
                    headers.append((_HEADER, rid))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            log_access(
                info,
                status,
                (time.perf_counter() - started) * 1000.0,
                method=scope.get("method"),
                path=scope.get("path"),
            )
