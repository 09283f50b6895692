"""The FastAPI application factory: no module-level app, tests build their own."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from service import __version__
from service.inference import DataPlane
from service.rest.errors import install_error_handlers
from service.rest.routers import health, inference, models
from service.settings import Settings
from service.web import install_web

__all__ = ["DOCS_ASSETS_URL", "create_app"]

#: Where the Swagger UI and ReDoc files (shipped by the fastapi-offline package) are served.
DOCS_ASSETS_URL = "/docs-assets"
#: No call to the online spec validator (Swagger UI's default off localhost).
SWAGGER_UI_PARAMETERS = {"validatorUrl": None}


def create_app(settings: Settings, data_plane: DataPlane) -> FastAPI:
    """The REST app serving ``data_plane`` (shared with the gRPC server)."""
    meta: dict[str, Any] = {
        "title": "care-serve",
        "version": __version__,
        "description": "CARE vision transformers on CPUs: classification, detection and "
        "segmentation. Errors are JSON "
        '`{"error": {"type", "message"}}`. The page for people is at [/](/).',
    }
    if settings.enable_docs:
        # Swagger UI at /docs and ReDoc at /redoc from local files: they work offline.
        app = FastAPIOffline(
            docs_url="/docs",
            redoc_url="/redoc",
            static_url=DOCS_ASSETS_URL,
            swagger_ui_parameters=SWAGGER_UI_PARAMETERS,
            **meta,
        )
    else:
        app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None, **meta)
    app.state.data_plane = data_plane
    app.state.settings = settings
    install_error_handlers(app)
    app.include_router(inference.router)
    app.include_router(models.router)
    app.include_router(health.router)
    install_web(app)
    return app
