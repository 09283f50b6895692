"""The page for people at ``/``: plain HTML, CSS and JavaScript modules served from the package.

No build step and no request to another host: ``static/`` holds every file the
page uses and ``router`` serves them (see ``docs/user-guide.md``, "The web page").
``docs`` serves Swagger UI and ReDoc from local files too.
"""

from care_serve.transports.web.docs import install_docs
from care_serve.transports.web.router import STATIC_DIR, install_web

__all__ = ["STATIC_DIR", "install_docs", "install_web"]
