"""REST security in two pure ASGI middlewares: who may call a route, and response headers.

``AuthMiddleware`` maps each path to what it needs (``Access``) and asks the one
``Authorizer`` of the data plane; a refused request is answered here in the error
format of its protocol (own envelope, or ``{"error": ...}`` under ``/v2``) with
``WWW-Authenticate`` (401) or ``Retry-After`` (429). ``SecurityHeadersMiddleware``
adds ``X-Content-Type-Options``, ``Referrer-Policy`` and, over TLS,
``Strict-Transport-Security`` to every response.
"""

from __future__ import annotations

import re

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from care_serve.errors import CareServeError, RateLimited, Unauthorized
from care_serve.observability.request_context import note_key
from care_serve.serving.auth import Access, Authorizer
from care_serve.settings import Settings
from care_serve.transports.rest.errors import error_response

__all__ = ["AuthMiddleware", "SecurityHeadersMiddleware", "access_of"]

_OPEN_PATHS = frozenset(
    {"/", "/health/live", "/health/ready", "/v2/health/live", "/v2/health/ready", "/openapi.json"}
)
_OPEN_PREFIXES = ("/ui/", "/docs", "/redoc")
_ADMIN_PATH = re.compile(r"^/models/[^/]+/(load|unload)$|^/v2/repository(/|$)")
_STREAMS = re.compile(r"^/streams(/[^/]+)?$")  # adding and removing streams
_AUTHORIZATION = b"authorization"


def access_of(method: str, path: str, metrics_open: bool) -> Access:
    """What calling ``method path`` needs: nothing, an infer key or an admin credential."""
    if path in _OPEN_PATHS or path.startswith(_OPEN_PREFIXES):
        return "open"
    if path == "/metrics":
        return "open" if metrics_open else "infer"
    if _ADMIN_PATH.match(path) or (method in ("POST", "DELETE") and _STREAMS.match(path)):
        return "admin"
    return "infer"


def refusal(path: str, exc: CareServeError) -> JSONResponse:
    """The error response for ``exc`` in the protocol of ``path``."""
    headers: dict[str, str] = {}
    if isinstance(exc, Unauthorized):
        headers["WWW-Authenticate"] = 'Bearer realm="care-serve"'
    if isinstance(exc, RateLimited):
        headers["Retry-After"] = exc.retry_after_header
    if path == "/v2" or path.startswith("/v2/"):
        return JSONResponse({"error": exc.message}, status_code=exc.status_code, headers=headers)
    return error_response(exc.status_code, type(exc).__name__, exc.message, headers)


class AuthMiddleware:
    """Admits each HTTP request through the ``Authorizer`` before any route runs."""

    def __init__(self, app: ASGIApp, authorizer: Authorizer, settings: Settings) -> None:
        self.app = app
        self.authorizer = authorizer
        self.metrics_open = settings.metrics_open

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        access = access_of(scope["method"], path, self.metrics_open)
        if access != "open":
            authorization = next(
                (v for k, v in scope.get("headers", ()) if k == _AUTHORIZATION), None
            )
            client = scope.get("client")
            try:
                principal = self.authorizer.admit(
                    access,
                    authorization.decode("latin-1") if authorization is not None else None,
                    client[0] if client else None,
                )
            except CareServeError as exc:
                await refusal(path, exc)(scope, receive, send)
                return
            note_key(principal.name)
        await self.app(scope, receive, send)


class SecurityHeadersMiddleware:
    """Headers every response carries (HSTS only when the server speaks TLS)."""

    def __init__(self, app: ASGIApp, tls: bool) -> None:
        self.app = app
        self.headers = [
            (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"no-referrer"),
        ]
        if tls:
            self.headers.append((b"strict-transport-security", b"max-age=31536000"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), *self.headers]}
            await send(message)

        await self.app(scope, receive, send_with_headers)
