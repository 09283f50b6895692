"""Serve the web page: ``GET /`` is ``static/index.html``, ``/ui/*`` the files it loads."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

__all__ = ["CONTENT_SECURITY_POLICY", "STATIC_DIR", "STATIC_URL", "install_web", "router"]

STATIC_DIR = Path(__file__).resolve().parent / "static"
STATIC_URL = "/ui"
#: The page may load and call only this server; images may also be blob: URLs (the
#: picture chosen, dropped, pasted or taken with the camera) and the camera a media stream.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "media-src 'self' blob: mediastream:; connect-src 'self'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)

router = APIRouter(include_in_schema=False)


@router.get("/")
async def index() -> FileResponse:
    """The page for people: pick a model, send an image, see what the model found."""
    return FileResponse(
        STATIC_DIR / "index.html",
        media_type="text/html; charset=utf-8",
        headers={"Content-Security-Policy": CONTENT_SECURITY_POLICY, "Cache-Control": "no-cache"},
    )


def install_web(app: FastAPI) -> None:
    """Add the page at ``/`` and its files under ``/ui`` to ``app``."""
    app.include_router(router)
    app.mount(STATIC_URL, StaticFiles(directory=STATIC_DIR), name="web-static")
