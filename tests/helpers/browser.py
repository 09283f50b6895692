"""The browser set-up shared by tests/acceptance/web and scripts/screenshots.py.

Debian's ``chromium`` driven by Playwright (``executable_path``; Playwright's own
browser download cannot work here) and synthetic scenes to send (the stack the page
talks to is ``tests.helpers.stacks.serving_stack``), and a short video for the streams panel.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
from PIL import Image, ImageDraw

from care_serve.offline.data.synthetic import CLASS_NAMES, make_scene, scene_rng
from tests.helpers.paths import ROOT
from tests.helpers.scenes import write_frames

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


def shapes_frame(width: int = 320, height: int = 240) -> np.ndarray:
    """A red circle, a blue square and a green triangle on grey: (height, width, 3) RGB.

    The bundled shapes-detector finds all three and shapes-classifier names each one.
    """
    image = Image.new("RGB", (width, height), (200, 200, 200))
    draw = ImageDraw.Draw(image)
    s = min(width / 320, height / 240)
    draw.ellipse((25 * s, 35 * s, 105 * s, 115 * s), fill=(220, 30, 30))
    draw.rectangle((200 * s, 35 * s, 272 * s, 107 * s), fill=(30, 50, 200))
    cx, cy, r = 160 * s, 175 * s, 45 * s
    corners = [math.radians(a) for a in (-80.0, 40.0, 160.0)]
    draw.polygon([(cx + r * math.cos(a), cy + r * math.sin(a)) for a in corners], (20, 150, 40))
    return np.asarray(image, np.uint8)


def shapes_png(width: int = 320, height: int = 240) -> bytes:
    """``shapes_frame`` as PNG bytes."""
    buf = io.BytesIO()
    Image.fromarray(shapes_frame(width, height)).save(buf, format="PNG")
    return buf.getvalue()


def shapes_video(path: Path, frames: int = 20, fps: int = 10) -> Path:
    """``frames`` frames of ``shapes_frame`` as H.264 at ``fps`` (PyAV); returns ``path``.

    The shapes drift one pixel a frame, so each frame of a stream differs from the last.
    """
    base = shapes_frame()
    drifting = (np.roll(base, n - frames // 2, axis=1) for n in range(frames))
    return write_frames(path, drifting, fps)


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
