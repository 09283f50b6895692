"""The page's streams panel and pipelines in a real browser (Debian's chromium via Playwright).

One server per module: the bundled model store, an admin token, and one stream started
with it (``--streams``): a short H.264 video of a red circle, a blue square and a green
triangle on grey, looped, through the ``shapes-detect-classify`` pipeline. The panel must
list it running with a preview that updates (polled only while the panel is on screen),
add and remove streams with the admin credential only, and show the server's refusals.
A pipeline run on an uploaded image must draw each box with the classifier's label and score.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, sync_playwright

from care_serve.postprocess.drawing import detection_palette
from care_serve.postprocess.segmentation import make_palette
from care_serve.server import BackgroundStack
from tests.helpers.browser import PHONE, RequestLog, launch, shapes_png, shapes_video
from tests.helpers.stacks import serving_stack

TOKEN = "web-streams-token"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
PIPELINE = "shapes-detect-classify"
CARD = "#stream-list [data-stream='{}']"
#: cam1's cap: a pipeline run takes a few hundred ms of one core, which other tests share.
CAM1_FPS = 3


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shapes_video(tmp_path_factory.mktemp("page_streams") / "shapes.mp4")


@pytest.fixture(scope="module")
def stack(video: Path) -> Iterator[BackgroundStack]:
    streams = video.parent / "streams.json"
    spec = {"name": "cam1", "source": str(video), "pipeline": PIPELINE, "loop": True}
    spec["max_fps"] = CAM1_FPS
    streams.write_text(json.dumps({"streams": [spec]}))
    with serving_stack(admin_token=TOKEN, streams=streams) as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_playwright() as playwright:
        chromium = launch(playwright)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any, stack: BackgroundStack) -> Iterator[tuple[Page, RequestLog]]:
    """The page at ``/``, its models and streams listed; no request may leave for another host."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    tab = context.new_page()
    tab.set_default_timeout(60_000)  # streams and models share a small, maybe busy, machine
    log = RequestLog(stack.http_url).attach(tab)
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    tab.goto(stack.http_url + "/")
    tab.wait_for_selector("body[data-models='listed'][data-streams='listed']")
    yield tab, log
    context.close()
    assert log.foreign == [], "the page asked another host"
    assert errors == [], "the page's scripts failed"


def frames_shown(tab: Page, name: str) -> int:
    value = tab.get_attribute(f"{CARD.format(name)} img.stream-preview", "data-frames")
    return int(value or 0)


def wait_for_frames(tab: Page, name: str, count: int, timeout_s: float = 20) -> int:
    """Poll (the page's CSP forbids wait_for_function's eval) until ``count`` frames showed."""
    deadline = time.monotonic() + timeout_s
    while (shown := frames_shown(tab, name)) < count and time.monotonic() < deadline:
        tab.wait_for_timeout(100)
    return shown


def frame_requests(log: RequestLog, name: str) -> int:
    return log.own_paths().count(f"/streams/{name}/frame.jpg")


def test_the_panel_shows_a_running_stream_with_a_live_preview(
    page: tuple[Page, RequestLog], stack: BackgroundStack
) -> None:
    tab, log = page
    card = CARD.format("cam1")
    # Off screen (the panel is below the fold): no preview is fetched.
    top = tab.evaluate("document.getElementById('streams').getBoundingClientRect().top")
    assert top > 900
    tab.wait_for_timeout(600)
    assert frame_requests(log, "cam1") == 0

    tab.locator("#streams").scroll_into_view_if_needed()
    tab.wait_for_selector(f"{card}[data-state='running']")
    assert tab.inner_text(f"{card} .badge") == "running"
    assert tab.inner_text(f"{card} dd[data-fact='source']") == "shapes.mp4"
    assert tab.inner_text(f"{card} dd[data-fact='target']") == f"pipeline {PIPELINE}"
    assert tab.inner_text(f"{card} dd[data-fact='size']") == "320 \u00d7 240"

    first = wait_for_frames(tab, "cam1", 1)
    assert first >= 1, "no preview frame shown"
    assert tab.eval_on_selector(f"{card} img.stream-preview", "i => i.src").startswith("blob:")
    assert wait_for_frames(tab, "cam1", first + 3) >= first + 3, "the preview does not update"
    size = tab.eval_on_selector(
        f"{card} img.stream-preview", "i => [i.naturalWidth, i.naturalHeight]"
    )
    assert size == [320, 240]
    assert tab.is_hidden(f"{card} .stream-note")

    # The numbers are the server's (refreshed about every 1.5 s).
    status = httpx.get(f"{stack.http_url}/streams/cam1", timeout=10).json()
    assert status["state"] == "running" and status["fps_out"] > 0
    tab.wait_for_timeout(1600)
    fps = tab.inner_text(f"{card} dd[data-fact='fps']")
    assert fps.endswith(f"processed (at most {CAM1_FPS})") and " in · " in fps
    assert "skipped by the cap" in tab.inner_text(f"{card} dd[data-fact='dropped']")
    assert tab.inner_text(f"{card} dd[data-fact='lag']").endswith(" ms")

    # At most 5 previews a second (about as many as frames processed), none once scrolled away.
    before, start = frame_requests(log, "cam1"), time.monotonic()
    tab.wait_for_timeout(2000)
    rate = (frame_requests(log, "cam1") - before) / (time.monotonic() - start)
    assert 0.5 < rate <= 5.5
    tab.evaluate("window.scrollTo(0, 0)")
    tab.wait_for_timeout(400)  # one request may be under way
    stopped = frame_requests(log, "cam1")
    tab.wait_for_timeout(1500)
    assert frame_requests(log, "cam1") == stopped, "the preview polls while off screen"
    assert log.own_paths().count("/streams/cam1/preview.mjpeg") == 0


def test_adding_and_removing_a_stream_need_the_admin_credential(
    page: tuple[Page, RequestLog], stack: BackgroundStack, video: Path
) -> None:
    tab, _ = page
    tab.locator("#stream-form").scroll_into_view_if_needed()
    targets = tab.eval_on_selector_all("#stream-target option", "o => o.map(x => x.value)")
    assert f"pipeline|{PIPELINE}" in targets and "model|shapes-detector" in targets
    tab.fill("#stream-name", "cam2")
    tab.fill("#stream-source", str(video))
    tab.select_option("#stream-target", "model|shapes-detector")
    tab.fill("#stream-fps", "2")
    tab.check("#stream-loop")

    # No credential: the server refuses and the page shows its own message.
    tab.click("#stream-add")
    tab.wait_for_selector("#streams-error:not([hidden])")
    spec = {"name": "cam2", "source": str(video), "model": "shapes-detector", "loop": True}
    refused = httpx.post(f"{stack.http_url}/streams", json=spec, timeout=10)
    assert refused.status_code == 401
    assert tab.inner_text("#streams-error .error-message") == refused.json()["error"]["message"]
    assert tab.inner_text("#streams-error .error-title").startswith("Error 401")
    assert tab.locator(CARD.format("cam2")).count() == 0
    tab.wait_for_timeout(1700)  # the list is refreshed meanwhile: the refusal stays shown
    assert tab.is_visible("#streams-error")

    tab.fill("#admin-token", TOKEN)
    tab.click("#stream-add")
    card = CARD.format("cam2")
    tab.wait_for_selector(card)
    assert tab.is_hidden("#streams-error")
    assert "cam2 started" in tab.inner_text("#streams-status")
    tab.wait_for_selector(f"{card}[data-state='running']")
    assert tab.inner_text(f"{card} dd[data-fact='target']") == "model shapes-detector"
    assert tab.inner_text(f"{card} dd[data-fact='fps']").endswith("(at most 2)")
    assert wait_for_frames(tab, "cam2", 2) >= 2
    listed = httpx.get(f"{stack.http_url}/streams", timeout=10).json()["streams"]
    assert [s["name"] for s in listed] == ["cam1", "cam2"]
    assert listed[1]["spec"]["max_fps"] == 2 and listed[1]["spec"]["loop"] is True

    # The same name again: the server's conflict, as it says it.
    tab.fill("#stream-name", "cam2")
    tab.click("#stream-add")
    tab.wait_for_selector("#streams-error:not([hidden])")
    conflict = httpx.post(f"{stack.http_url}/streams", json=spec, headers=ADMIN, timeout=10)
    assert conflict.status_code == 409
    assert tab.inner_text("#streams-error .error-message") == conflict.json()["error"]["message"]

    # Removing: refused without the credential, done with it.
    tab.fill("#admin-token", "")
    tab.click(f"{card} button[aria-label='Remove stream cam2']")
    tab.wait_for_selector("#streams-error:not([hidden])")
    assert tab.inner_text("#streams-error .error-title").startswith("Error 401")
    assert tab.locator(card).count() == 1
    tab.fill("#admin-token", TOKEN)
    tab.click(f"{card} button[aria-label='Remove stream cam2']")
    tab.wait_for_selector(card, state="detached")
    assert "cam2 is removed" in tab.inner_text("#streams-status")
    listed = httpx.get(f"{stack.http_url}/streams", timeout=10).json()["streams"]
    assert [s["name"] for s in listed] == ["cam1"]


def test_a_pipeline_runs_on_an_uploaded_image(
    page: tuple[Page, RequestLog], stack: BackgroundStack
) -> None:
    tab, log = page
    option = f"#model-select option[value='pipeline|{PIPELINE}']"
    assert not tab.eval_on_selector(option, "o => o.disabled")
    tab.select_option("#model-select", f"pipeline|{PIPELINE}")
    png = shapes_png()
    tab.evaluate("document.getElementById('result').dataset.state = ''")
    tab.set_input_files(
        "#file-input", files=[{"name": "shapes.png", "mimeType": "image/png", "buffer": png}]
    )
    tab.wait_for_selector("#result[data-state='done'], #result[data-state='error']")
    assert tab.get_attribute("#result", "data-state") == "done"
    assert f"/pipelines/{PIPELINE}" in log.own_paths()

    answer = httpx.post(f"{stack.http_url}/pipelines/{PIPELINE}", content=png, timeout=30).json()
    classes = [d["classification"]["predictions"][0] for d in answer["detections"]]
    assert sorted(c["label"] for c in classes) == ["circle", "square", "triangle"]
    drawn = tab.eval_on_selector_all(
        "#boxes .det-box",
        "b => b.map(x => [x.dataset.label, x.querySelector('.det-tag').textContent])",
    )
    assert Counter(d[0] for d in drawn) == Counter(c["label"] for c in classes)
    assert Counter(d[1] for d in drawn) == Counter(
        f"{c['label']} {c['score']:.2f}" for c in classes
    )
    # Each class in the colour of its index among the classifier's classes, as detections are.
    metadata = httpx.get(f"{stack.http_url}/v2/models/shapes-classifier", timeout=10).json()
    labels = metadata["parameters"]["labels"]
    colours = detection_palette(make_palette(len(labels) + 1))
    borders = tab.eval_on_selector_all(
        "#boxes .det-box", "b => b.map(x => [x.dataset.label, getComputedStyle(x).borderTopColor])"
    )
    for label, colour in borders:
        assert colour == "rgb({}, {}, {})".format(*colours[labels.index(label)])
    listed = tab.eval_on_selector_all(
        "#objects li", "items => items.map(i => i.querySelector('.legend-label').textContent)"
    )
    assert listed == [c["label"] for c in classes]  # highest detection score first
    assert tab.is_visible("#objects-panel") and tab.is_hidden("#counts-panel")
    stages = tab.eval_on_selector_all("#timings tbody tr", "r => r.map(x => x.dataset.stage)")
    assert stages == ["decode", "detect", "crop", "classify", "total"]
    assert tab.inner_text("#status").startswith(f"Pipeline {PIPELINE}: 3 objects")
    assert tab.is_hidden("#domain-notice") and tab.is_hidden("#uncertain-notice")


def test_a_phone_sized_screen_shows_the_streams_without_sideways_scrolling(
    browser: Any, stack: BackgroundStack
) -> None:
    context = browser.new_context(viewport=PHONE, device_scale_factor=2, is_mobile=True)
    tab = context.new_page()
    log = RequestLog(stack.http_url).attach(tab)
    tab.goto(stack.http_url + "/")
    tab.wait_for_selector("body[data-streams='listed']")
    tab.locator(CARD.format("cam1")).scroll_into_view_if_needed()
    assert wait_for_frames(tab, "cam1", 1) >= 1
    assert tab.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    box = tab.locator(f"{CARD.format('cam1')} img.stream-preview").bounding_box()
    assert box is not None and box["width"] <= PHONE["width"]
    context.close()
    assert log.foreign == []
