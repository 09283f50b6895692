"""The FastAPI application factory: no module-level app, tests build their own."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from care_serve import __version__
from care_serve.serving.data_plane import DataPlane
from care_serve.settings import Settings
from care_serve.streams.manager import StreamManager
from care_serve.transports.rest.access import AccessLogMiddleware
from care_serve.transports.rest.errors import install_error_handlers
from care_serve.transports.rest.openapi import install_openapi
from care_serve.transports.rest.routers import (
    health,
    inference,
    models,
    pipelines,
    streams,
    tasks,
)
from care_serve.transports.rest.security import AuthMiddleware, SecurityHeadersMiddleware
from care_serve.transports.v2 import rest as v2_rest
from care_serve.transports.web import install_docs, install_web

__all__ = ["create_app"]


def create_app(
    settings: Settings, data_plane: DataPlane, stream_manager: StreamManager | None = None
) -> FastAPI:
    """The REST app serving ``data_plane`` (shared with the gRPC server)."""
    meta: dict[str, Any] = {
        "title": "care-serve",
        "version": __version__,
        "description": "CARE vision transformers on CPUs: classification, detection, "
        "segmentation and embeddings. Errors are JSON "
        '`{"error": {"type", "message", "request_id"}}`; under `/v2` (the Open Inference '
        'Protocol, KServe v2 / Triton) they are the protocol\'s `{"error": "message"}`. The '
        "page for people is at [/](/).",
    }
    # The docs routes are our own (transports.web.docs): Swagger UI and ReDoc from local files.
    app = FastAPI(
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json" if settings.enable_docs else None,
        **meta,
    )
    if settings.enable_docs:
        install_docs(app)
    app.state.data_plane = data_plane
    app.state.settings = settings
    app.state.streams = stream_manager or StreamManager(data_plane)
    install_error_handlers(app)
    app.include_router(inference.router)
    app.include_router(pipelines.router)
    app.include_router(streams.router)
    app.include_router(models.router)
    app.include_router(tasks.router)
    app.include_router(health.router)
    app.include_router(v2_rest.router)
    install_web(app)
    install_openapi(app, settings)
    # Outermost last: access log -> security headers -> CORS -> credentials -> routes.
    app.add_middleware(AuthMiddleware, authorizer=data_plane.auth, settings=settings)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "X-Request-Id"],
            expose_headers=["X-Request-Id", "Retry-After"],
        )
    app.add_middleware(SecurityHeadersMiddleware, tls=settings.tls)
    app.add_middleware(AccessLogMiddleware)
    return app
