"""Swagger UI at ``/docs`` and ReDoc at ``/redoc`` from local files: they work offline.

The JavaScript and CSS come from the ``fastapi-offline`` package (MIT; it ships
Swagger UI 5 and ReDoc 2 as files), served under ``/docs-assets``. The pages are
FastAPI's own (``get_swagger_ui_html``, ``get_redoc_html`` without Google
fonts) with a Content-Security-Policy that lets them load nothing from another
host: ReDoc's sidebar shows a logo from its vendor's CDN, which the browser
then never asks for, and Swagger UI's online validator is switched off.
"""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import FastAPI
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

__all__ = ["DOCS_ASSETS", "DOCS_ASSETS_URL", "DOCS_POLICY", "install_docs"]

DOCS_ASSETS = Path(fastapi_offline.__file__).resolve().parent / "static"
DOCS_ASSETS_URL = "/docs-assets"
#: Inline scripts and styles are FastAPI's page templates; ReDoc runs a blob: worker.
DOCS_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; font-src 'self' data:; worker-src 'self' blob:; "
    "connect-src 'self'; base-uri 'none'; frame-ancestors 'none'"
)
_FILES = ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js", "favicon.png")


def _page(response: HTMLResponse) -> HTMLResponse:
    response.headers["Content-Security-Policy"] = DOCS_POLICY
    return response


def install_docs(app: FastAPI, docs_url: str = "/docs", redoc_url: str = "/redoc") -> None:
    """Add Swagger UI, ReDoc and their files to ``app`` (whose ``openapi_url`` is set)."""
    missing = [name for name in _FILES if not (DOCS_ASSETS / name).is_file()]
    if missing:
        raise RuntimeError(
            f"fastapi-offline at {DOCS_ASSETS} lacks {', '.join(missing)}; reinstall it "
            "(pip install --force-reinstall fastapi-offline) or serve with enable_docs=false"
        )
    openapi_url = app.openapi_url
    assert openapi_url is not None, "the docs need the OpenAPI schema"
    oauth2_redirect = app.swagger_ui_oauth2_redirect_url or f"{docs_url}/oauth2-redirect"
    app.mount(DOCS_ASSETS_URL, StaticFiles(directory=DOCS_ASSETS), name="docs-assets")
    favicon = f"{DOCS_ASSETS_URL}/favicon.png"

    @app.get(docs_url, include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return _page(
            get_swagger_ui_html(
                openapi_url=openapi_url,
                title=f"{app.title} - Swagger UI",
                oauth2_redirect_url=oauth2_redirect,
                swagger_js_url=f"{DOCS_ASSETS_URL}/swagger-ui-bundle.js",
                swagger_css_url=f"{DOCS_ASSETS_URL}/swagger-ui.css",
                swagger_favicon_url=favicon,
                # No call to the online spec validator (Swagger UI's default off localhost).
                swagger_ui_parameters={"validatorUrl": None},
            )
        )

    @app.get(oauth2_redirect, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return _page(get_swagger_ui_oauth2_redirect_html())

    @app.get(redoc_url, include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return _page(
            get_redoc_html(
                openapi_url=openapi_url,
                title=f"{app.title} - ReDoc",
                redoc_js_url=f"{DOCS_ASSETS_URL}/redoc.standalone.js",
                redoc_favicon_url=favicon,
                with_google_fonts=False,
            )
        )
