"""The browser set-up shared by tests/acceptance/web and scripts/screenshots.py.

Debian's ``chromium`` driven by Playwright (``executable_path``; Playwright's own
browser download cannot work here) and synthetic scenes to send (the stack the page
talks to is ``tests.helpers.stacks.serving_stack``).
"""

from __future__ import annotations

import io
from typing import Any
from urllib.parse import urlsplit

from PIL import Image

from care_serve.offline.data.synthetic import CLASS_NAMES, make_scene, scene_rng
from tests.helpers.paths import ROOT

MODEL_STORE = ROOT / "model_store"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
ENDPOINTS = {"classification": "/classify", "detection": "/detect", "segmentation": "/segment"}


def launch(playwright: Any, extra_flags: list[str] | None = None) -> Any:
    """Chromium from Debian's package, headless, with no background traffic of its own."""
    return playwright.chromium.launch(
        executable_path=CHROMIUM, args=[*CHROMIUM_FLAGS, *(extra_flags or [])]
    )


def scene_png(task: str, index: int, seed: int = 7) -> bytes:
    """Scene ``index`` of ``task`` as PNG bytes (classification scenes hold one shape)."""
    rng = scene_rng(seed, task, index)
    kinds = [CLASS_NAMES[index % len(CLASS_NAMES)]] if task == "classification" else None
    buf = io.BytesIO()
    Image.fromarray(make_scene(rng, kinds).image).save(buf, format="PNG")
    return buf.getvalue()


class RequestLog:
    """Every request a page makes; requests to any other host are aborted, never sent."""

    def __init__(self, own_origin: str) -> None:
        self.own = urlsplit(own_origin).netloc
        self.urls: list[str] = []
        self.foreign: list[str] = []

    def attach(self, page: Any) -> RequestLog:
        page.route("**/*", self._route)
        return self

    def _route(self, route: Any) -> None:
        url = route.request.url
        self.urls.append(url)
        parts = urlsplit(url)
        if parts.scheme in ("http", "https", "ws", "wss") and parts.netloc != self.own:
            self.foreign.append(url)
            route.abort()
        else:
            route.continue_()

    def own_paths(self) -> list[str]:
        return [urlsplit(u).path for u in self.urls if urlsplit(u).netloc == self.own]
