"""The REST transport (FastAPI): ``create_app(settings, data_plane)``."""

from care_serve.transports.rest.app import create_app

__all__ = ["create_app"]
