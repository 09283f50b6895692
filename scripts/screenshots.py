"""Screenshots of the web page for each task, at desktop and phone size, into docs/screenshots/.

Run ``.venv/bin/python scripts/screenshots.py`` (needs Debian's ``chromium`` and the
``dev`` extra's Playwright, as the browser tests do). It starts the bundled model
store on ephemeral loopback ports, sends one synthetic scene per task through
the page and saves ``docs/screenshots/<task>-<desktop|phone>.png``; then a real photo
(``examples/photos/cat.jpg``) to the classifier, which knows only shapes, saved as
``photo-<desktop|phone>.png``: the domain notice and the "uncertain" warning; the
``shapes-detect-classify`` pipeline on a picture of three shapes, ``pipeline-<view>.png``;
and the streams panel with one stream (a looped video of the same shapes through that
pipeline, started with the server), ``streams-<view>.png``.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from playwright.sync_api import sync_playwright  # noqa: E402

from tests.helpers.browser import (  # noqa: E402
    DESKTOP,
    PHONE,
    launch,
    scene_png,
    shapes_png,
    shapes_video,
)
from tests.helpers.stacks import serving_stack  # noqa: E402

OUT = ROOT / "docs" / "screenshots"
#: (task, scene index) chosen to show each task's picture well.
SCENES = {"classification": 3, "detection": 10, "segmentation": 2}
PHOTO = ROOT / "examples" / "photos" / "cat.jpg"
#: The detection shot moves the score slider here (the page filters without a new request).
DETECTION_SCORE = "0.45"
#: The whole page on a desktop; on a phone, the page from the top to the end of the result.
VIEWS = {"desktop": DESKTOP, "phone": PHONE}
PIPELINE = "shapes-detect-classify"
#: The streams shot waits for this many preview frames (the preview is live).
STREAM_FRAMES = 3


def streams_file(folder: Path) -> Path:
    """A ``--streams`` file: one looped video of three shapes through the pipeline."""
    video = shapes_video(folder / "shapes.mp4")
    spec = {"name": "shapes-cam", "source": str(video), "pipeline": PIPELINE, "loop": True}
    path = folder / "streams.json"
    path.write_text(json.dumps({"streams": [spec]}))
    return path


def show_stream(page: Any) -> None:
    """Scroll to the streams panel until its stream runs and its preview has updated a few
    times (the page polls previews only while the panel is on screen; the last frame stays)."""
    card = "#stream-list [data-stream='shapes-cam']"
    page.locator("#streams").scroll_into_view_if_needed()
    page.wait_for_selector(f"{card}[data-state='running']", timeout=30_000)
    deadline = time.monotonic() + 30
    preview = f"{card} img.stream-preview"
    while int(page.get_attribute(preview, "data-frames") or 0) < STREAM_FRAMES:
        assert time.monotonic() < deadline, "no preview frame"
        page.wait_for_timeout(100)
    page.wait_for_timeout(1600)  # the rates of a full refresh


def shoot_streams(page: Any, path: Path) -> None:
    """The streams panel alone, its preview live."""
    show_stream(page)
    page.evaluate("document.activeElement.blur()")
    page.locator("#streams").screenshot(path=str(path))


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.TemporaryDirectory() as folder,
        serving_stack(streams=streams_file(Path(folder))) as stack,
        sync_playwright() as playwright,
    ):
        browser = launch(playwright)
        for view, viewport in VIEWS.items():
            scale = 2 if view == "phone" else 1
            page = browser.new_page(viewport=viewport, device_scale_factor=scale)
            page.goto(stack.http_url + "/")
            page.wait_for_selector("body[data-models='listed']")
            show_stream(page)  # the whole-page shots show a frame in the streams panel
            page.evaluate("window.scrollTo(0, 0)")
            shots = [
                (task, task, f"{task}-scene.png", "image/png", scene_png(task, index))
                for task, index in SCENES.items()
            ]
            shots.append(("photo", "classification", PHOTO.name, "image/jpeg", PHOTO.read_bytes()))
            shots.append(
                ("pipeline", f"pipeline|{PIPELINE}", "shapes.png", "image/png", shapes_png())
            )
            for shot, task, name, mime, data in shots:
                page.select_option("#model-select", task if "|" in task else f"{task}|")
                page.evaluate("document.getElementById('result').dataset.state = ''")
                page.set_input_files(
                    "#file-input", files=[{"name": name, "mimeType": mime, "buffer": data}]
                )
                page.wait_for_selector("#result[data-state='done']")
                if task == "detection":
                    page.eval_on_selector(
                        "#score-slider",
                        "(el, v) => { el.value = v; el.dispatchEvent(new Event('input')); }",
                        DETECTION_SCORE,
                    )
                page.evaluate("document.activeElement.blur()")
                path = OUT / f"{shot}-{view}.png"
                if view == "phone":
                    box = page.locator("#result").bounding_box()
                    assert box is not None
                    bottom = box["y"] + box["height"] + 12
                    clip = {"x": 0, "y": 0, "width": viewport["width"], "height": bottom}
                    page.screenshot(path=str(path), full_page=True, clip=clip)
                else:
                    page.screenshot(path=str(path), full_page=True)
                print(f"wrote {path.relative_to(ROOT)}")
            path = OUT / f"streams-{view}.png"
            shoot_streams(page, path)
            print(f"wrote {path.relative_to(ROOT)}")
            page.close()
        browser.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
