"""The page at ``/`` in a real browser (Debian's chromium via Playwright) on the real server.

One server (the bundled model store, an admin token) and one browser per module.
Every test sends generated scenes through the page and checks what is drawn
against the API's own answer for the same image; every page's requests to any
host but the server are aborted and fail the test.
"""

from __future__ import annotations

import base64
import io
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import Page, sync_playwright

from care_serve.postprocess.drawing import detection_palette
from care_serve.postprocess.segmentation import make_palette
from care_serve.server import BackgroundStack
from tests.helpers.browser import ENDPOINTS, PHONE, RequestLog, launch, scene_png
from tests.helpers.paths import ROOT
from tests.helpers.stacks import serving_stack

TOKEN = "web-test-token"
# A fake camera, allowed without a prompt: the snapshot test takes a picture with it.
CAMERA_FLAGS = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]
# Another name for the loopback server: pages behave as on a box in the network (not localhost).
OTHER_NAME = "care-serve.test"


@pytest.fixture(scope="module")
def stack() -> Iterator[BackgroundStack]:
    with serving_stack(admin_token=TOKEN) as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_playwright() as playwright:
        chromium = launch(
            playwright, [*CAMERA_FLAGS, f"--host-resolver-rules=MAP {OTHER_NAME} 127.0.0.1"]
        )
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any, stack: BackgroundStack) -> Iterator[tuple[Page, RequestLog]]:
    """The page at ``/``, its models listed; no request may leave for another host."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    tab = context.new_page()
    log = RequestLog(stack.http_url).attach(tab)
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    tab.goto(stack.http_url + "/")
    tab.wait_for_selector("body[data-models='listed']")
    yield tab, log
    context.close()
    assert log.foreign == [], "the page asked another host"
    assert errors == [], "the page's scripts failed"


def api(stack: BackgroundStack, task: str, png: bytes, **params: Any) -> dict[str, Any]:
    response = httpx.post(stack.http_url + ENDPOINTS[task], params=params, content=png, timeout=30)
    assert response.status_code == 200, response.text
    return dict(response.json())


def choose(tab: Page, task: str, model: str = "") -> None:
    tab.select_option("#model-select", f"{task}|{model}")


def upload(tab: Page, png: bytes, name: str = "scene.png", mime: str = "image/png") -> str:
    """Choose ``png`` in the file input and wait for the page's answer (done or error)."""
    tab.evaluate("document.getElementById('result').dataset.state = ''")
    tab.set_input_files("#file-input", files=[{"name": name, "mimeType": mime, "buffer": png}])
    tab.wait_for_selector("#result[data-state='done'], #result[data-state='error']")
    return str(tab.get_attribute("#result", "data-state"))


def timings_shown(tab: Page) -> list[str]:
    return [
        str(s)
        for s in tab.eval_on_selector_all("#timings tbody tr", "r => r.map(x => x.dataset.stage)")
    ]


def test_classification_shows_the_top_k_as_labelled_bars(
    page: tuple[Page, RequestLog], stack: BackgroundStack
) -> None:
    tab, _ = page
    choose(tab, "classification")
    tab.fill("#top-k", "2")
    for index in (0, 1, 2):
        png = scene_png("classification", index)
        assert upload(tab, png) == "done"
        answer = api(stack, "classification", png, top_k=2)
        bars = tab.eval_on_selector_all(
            "#bars .bar",
            "bars => bars.map(b => [b.dataset.label, Number(b.dataset.probability),"
            " b.querySelector('.bar-label').textContent,"
            " b.querySelector('.bar-value').textContent])",
        )
        assert [b[0] for b in bars] == [p["label"] for p in answer["predictions"]]
        assert [b[2] for b in bars] == [p["label"] for p in answer["predictions"]]
        np.testing.assert_allclose(
            [b[1] for b in bars], [p["probability"] for p in answer["predictions"]], rtol=1e-5
        )
        assert bars[0][3] == f"{100 * answer['predictions'][0]['probability']:.1f} %"
        assert timings_shown(tab) == [
            "decode",
            "preprocess",
            "queue",
            "compute",
            "postprocess",
            "total",
        ]
        assert answer["model"] in tab.inner_text("#status")


def test_detection_draws_the_boxes_and_the_slider_filters_without_a_request(
    page: tuple[Page, RequestLog], stack: BackgroundStack
) -> None:
    tab, log = page
    choose(tab, "detection", "shapes-detector")
    png = scene_png("detection", 10)
    assert upload(tab, png) == "done"
    sent = len([p for p in log.own_paths() if p == "/detect"])
    for threshold in (0.3, 0.5, 0.7, 0.05):
        tab.eval_on_selector(
            "#score-slider",
            "(el, v) => { el.value = v; el.dispatchEvent(new Event('input')); }",
            str(threshold),
        )
        answer = api(stack, "detection", png, score_threshold=threshold, model="shapes-detector")
        drawn = tab.eval_on_selector_all(
            "#boxes .det-box:not([hidden])",
            "boxes => boxes.map(b => [b.dataset.label, b.querySelector('.det-tag').textContent,"
            " getComputedStyle(b).borderTopColor])",
        )
        labels = Counter(d["label"] for d in answer["detections"])
        assert len(drawn) == len(answer["detections"]), threshold
        assert Counter(d[0] for d in drawn) == labels
        tags = Counter(f"{d['label']} {d['score']:.2f}" for d in answer["detections"])
        assert Counter(d[1] for d in drawn) == tags
        colours = detection_palette(make_palette(4))
        for d in answer["detections"]:
            r, g, b = colours[d["class_id"]]
            assert [x[2] for x in drawn].count(f"rgb({r}, {g}, {b})") >= 1
        counts = tab.eval_on_selector_all(
            "#counts li", "items => items.map(i => [i.dataset.label, Number(i.dataset.count)])"
        )
        assert dict(counts) == dict(labels)
    assert len([p for p in log.own_paths() if p == "/detect"]) == sent, "the slider sent a request"

    # The box of the best detection covers the same fraction of the picture as its box.
    answer = api(stack, "detection", png, model="shapes-detector")
    best = max(answer["detections"], key=lambda d: d["score"])
    geometry = tab.evaluate(
        """() => {
            const stage = document.getElementById('stage').getBoundingClientRect();
            const boxes = [...document.querySelectorAll('#boxes .det-box')];
            const best = boxes[boxes.length - 1].getBoundingClientRect();
            return [stage.width, stage.height, best.left - stage.left, best.top - stage.top,
                    best.width, best.height];
        }"""
    )
    width, height, x, y, w, h = geometry
    x1, y1, x2, y2 = best["box"]
    iw, ih = answer["image_width"], answer["image_height"]
    np.testing.assert_allclose(
        [x / width, y / height, w / width, h / height],
        [x1 / iw, y1 / ih, (x2 - x1) / iw, (y2 - y1) / ih],
        atol=2 / min(width, height),
    )


def test_segmentation_draws_the_mask_with_a_legend_and_an_opacity_slider(
    page: tuple[Page, RequestLog], stack: BackgroundStack
) -> None:
    tab, _ = page
    choose(tab, "segmentation")
    palette = make_palette(4)
    for index in (2, 5):
        png = scene_png("segmentation", index)
        assert upload(tab, png) == "done"
        answer = api(stack, "segmentation", png)
        legend = tab.eval_on_selector_all(
            "#legend li",
            "items => items.map(i => [i.dataset.label, Number(i.dataset.share),"
            " i.querySelector('.legend-value').textContent,"
            " getComputedStyle(i.querySelector('.swatch')).backgroundColor])",
        )
        present = {s["label"]: s for s in answer["class_shares"] if s["share"] > 0}
        assert {row[0] for row in legend} == set(present)
        for label, share, text, colour in legend:
            assert share == pytest.approx(present[label]["share"])
            assert text == f"{100 * present[label]['share']:.1f} %"
            c = present[label]["class_id"]
            if c:
                assert colour == "rgb({}, {}, {})".format(*palette[c])

        # The mask drawn is the API's mask in the palette's colours (background transparent).
        mask = np.asarray(Image.open(io.BytesIO(base64.b64decode(answer["mask_png"]))))
        pixels = tab.evaluate(
            """() => {
                const c = document.getElementById('mask-canvas');
                const data = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                let text = '';
                for (let i = 0; i < data.length; i += 0x8000) {
                    text += String.fromCharCode(...data.subarray(i, i + 0x8000));
                }
                return [c.width, c.height, btoa(text)];
            }"""
        )
        width, height, encoded = pixels
        assert (width, height) == (answer["image_width"], answer["image_height"])
        data = np.frombuffer(base64.b64decode(encoded), np.uint8)
        rgba = np.asarray(data, np.uint8).reshape(height, width, 4)
        np.testing.assert_array_equal(rgba[..., 3], np.where(mask > 0, 255, 0))
        np.testing.assert_array_equal(rgba[..., :3][mask > 0], palette[mask[mask > 0]])

    tab.eval_on_selector(
        "#opacity-slider", "el => { el.value = '0.3'; el.dispatchEvent(new Event('input')); }"
    )
    assert tab.eval_on_selector("#mask-canvas", "c => getComputedStyle(c).opacity") == "0.3"
    assert tab.inner_text("#opacity-value") == "30 %"


def test_a_failed_request_shows_the_servers_own_error(
    page: tuple[Page, RequestLog], stack: BackgroundStack
) -> None:
    tab, _ = page
    choose(tab, "detection")
    not_an_image = b"this is not a picture"
    assert upload(tab, not_an_image, name="notes.txt", mime="text/plain") == "error"
    response = httpx.post(stack.http_url + "/detect", content=not_an_image, timeout=30)
    error = response.json()["error"]
    assert tab.inner_text("#error .error-message") == error["message"]
    assert (
        tab.inner_text("#error .error-title") == f"Error {response.status_code} · {error['type']}"
    )
    assert tab.is_hidden("#result-body")

    # A model that is gone (a stale option): the server says why.
    tab.evaluate(
        """() => { const s = document.getElementById('model-select');
                   s.add(new Option('gone', 'classification|no-such-model'));
                   s.value = 'classification|no-such-model';
                   s.dispatchEvent(new Event('change')); }"""
    )
    tab.wait_for_selector("#result[data-state='error']")
    message = httpx.post(
        stack.http_url + "/classify?model=no-such-model", content=not_an_image, timeout=30
    ).json()["error"]["message"]
    assert tab.inner_text("#error .error-message") == message


def test_the_models_panel_unloads_and_loads_with_the_admin_token(
    page: tuple[Page, RequestLog], stack: BackgroundStack
) -> None:
    tab, _ = page
    card = "#model-list [data-model='shapes-segmenter']"
    assert tab.get_attribute(card, "data-state") == "ready"
    facts = tab.inner_text(f"{card} .facts")
    assert "Default for" in facts and "version 1" in facts  # store.json names it, v1 serves
    links = tab.eval_on_selector_all("#models .links a", "a => a.map(x => x.getAttribute('href'))")
    assert {"/docs", "/redoc", "/metrics"} <= set(links)

    tab.click(f"{card} button[aria-label='Unload shapes-segmenter']")
    tab.wait_for_selector("#models-error:not([hidden])")
    refused = httpx.post(stack.http_url + "/models/shapes-segmenter/unload", timeout=30)
    assert refused.status_code == 401
    assert tab.inner_text("#models-error .error-message") == refused.json()["error"]["message"]

    tab.fill("#admin-token", TOKEN)
    try:
        tab.click(f"{card} button[aria-label='Unload shapes-segmenter']")
        tab.wait_for_selector(f"{card}[data-state='available']")
        state = httpx.get(stack.http_url + "/models/shapes-segmenter", timeout=30).json()
        assert state["state"] == "available" and state["loaded_version"] is None
        assert "not loaded" in tab.inner_text(card)
        said = tab.inner_text("#models-status")
        assert "shapes-segmenter v1 is unloaded; no version of it serves now." in said
        option = tab.inner_text("#model-select option[value='segmentation|shapes-segmenter']")
        assert "available" in option
    finally:
        tab.click(f"{card} button[aria-label='Load shapes-segmenter']")
        tab.wait_for_selector(f"{card}[data-state='ready']", timeout=60_000)
    state = httpx.get(stack.http_url + "/models/shapes-segmenter", timeout=30).json()
    assert state["state"] == "ready" and state["loaded_version"] == 1
    assert "shapes-segmenter v1 is ready" in tab.inner_text("#models-status")


def test_keyboard_alone_and_every_control_labelled(
    page: tuple[Page, RequestLog], stack: BackgroundStack
) -> None:
    tab, _ = page
    unlabelled = tab.evaluate(
        """() => [...document.querySelectorAll('input, select, button, textarea')]
            .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')
                          && !el.textContent.trim())
            .map(el => el.id || el.outerHTML)"""
    )
    assert unlabelled == []

    # Tab from the top: the skip link, the header links, then the model choice.
    choosers: list[Any] = []
    tab.on("filechooser", lambda chooser: choosers.append(chooser))  # intercept from now on
    tab.keyboard.press("Tab")
    assert tab.evaluate("document.activeElement.textContent") == "Skip to the demo"
    for _ in range(4):
        tab.keyboard.press("Tab")
    assert tab.evaluate("document.activeElement.id") == "model-select"
    while tab.eval_on_selector("#model-select", "s => s.value") != "detection|":
        tab.keyboard.press("ArrowDown")
    while tab.evaluate("document.activeElement.id") != "file-input":
        tab.keyboard.press("Tab")
    tab.keyboard.press("Enter")
    for _ in range(100):
        if choosers:
            break
        tab.wait_for_timeout(50)
    assert choosers, "Enter on the focused file input opened no file chooser"
    png = scene_png("detection", 6)
    tab.evaluate("document.getElementById('result').dataset.state = ''")
    choosers[0].set_files([{"name": "scene.png", "mimeType": "image/png", "buffer": png}])
    tab.wait_for_selector("#result[data-state='done']")
    answer = api(stack, "detection", png)
    assert tab.locator("#boxes .det-box:not([hidden])").count() == len(answer["detections"])
    start = float(tab.eval_on_selector("#score-slider", "s => s.value"))  # the served default
    tab.focus("#score-slider")
    tab.keyboard.press("ArrowRight")
    assert tab.eval_on_selector("#score-slider", "s => s.value") == f"{start + 0.01:.2f}"
    assert tab.inner_text("#score-value") == f"{start + 0.01:.2f}"


def test_a_phone_sized_screen_shows_everything_without_sideways_scrolling(
    browser: Any, stack: BackgroundStack
) -> None:
    context = browser.new_context(viewport=PHONE, device_scale_factor=2, is_mobile=True)
    tab = context.new_page()
    log = RequestLog(stack.http_url).attach(tab)
    tab.goto(stack.http_url + "/")
    tab.wait_for_selector("body[data-models='listed']")
    for task, index in (("classification", 0), ("detection", 10), ("segmentation", 2)):
        choose(tab, task)
        assert upload(tab, scene_png(task, index)) == "done"
        assert tab.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        stage = tab.locator("#stage").bounding_box()
        assert stage is not None and stage["width"] <= PHONE["width"]
    context.close()
    assert log.foreign == []


def test_a_camera_snapshot_is_sent(page: tuple[Page, RequestLog], stack: BackgroundStack) -> None:
    tab, _ = page
    choose(tab, "classification")
    tab.evaluate("document.getElementById('result').dataset.state = ''")
    tab.click("#camera-button")
    tab.wait_for_selector("#camera-dialog[open]")
    for _ in range(100):  # the page's CSP forbids wait_for_function's eval: poll instead
        if tab.evaluate("document.getElementById('camera-video').videoWidth") > 0:
            break
        tab.wait_for_timeout(100)
    tab.click("#snap-button")
    tab.wait_for_selector("#result[data-state='done']")
    assert tab.inner_text("#stage-caption").startswith("camera snapshot")
    assert tab.locator("#bars .bar").count() >= 1
    assert not tab.evaluate("document.getElementById('camera-dialog').open")


def test_the_palette_of_the_page_is_the_servers(page: tuple[Page, RequestLog]) -> None:
    tab, _ = page
    colours = tab.evaluate(
        "async () => { const p = await import('/ui/palette.js');"
        " return Array.from({length: 40}, (_, c) => p.classColour(c)); }"
    )
    np.testing.assert_array_equal(np.asarray(colours), make_palette(40))


@pytest.mark.parametrize("path", ["/", "/docs", "/redoc"])
def test_no_page_asks_another_host(browser: Any, stack: BackgroundStack, path: str) -> None:
    """Loaded by another name than localhost, as on a box in the network (Swagger UI's
    validator badge, for one, only appears off localhost)."""
    context = browser.new_context()
    tab = context.new_page()
    port = stack.http_url.rsplit(":", 1)[1]
    origin = f"http://{OTHER_NAME}:{port}"
    log = RequestLog(origin).attach(tab)
    tab.goto(origin + path)
    if path == "/docs":
        tab.wait_for_selector(".swagger-ui .info .title")
        assert "care-serve" in tab.inner_text(".swagger-ui .info .title")
        tab.wait_for_selector(".opblock-summary-path >> text=/detect")
        assert "/docs-assets/swagger-ui-bundle.js" in log.own_paths()
    elif path == "/redoc":
        tab.wait_for_selector("h1 >> text=care-serve")
        tab.wait_for_selector("text=/segment")
        assert "/docs-assets/redoc.standalone.js" in log.own_paths()
    else:
        tab.wait_for_selector("body[data-models='listed']")
        choose(tab, "detection")
        assert upload(tab, scene_png("detection", 3)) == "done"
        # Not localhost, not https: the browser has no camera for the page, which says why.
        assert tab.is_disabled("#camera-button")
        assert "https" in tab.inner_text("#camera-hint")
    tab.wait_for_load_state("networkidle")
    context.close()
    assert log.urls, "no request seen"
    assert log.foreign == []


def test_a_real_photo_shows_what_the_model_knows_and_that_it_is_unsure(
    page: tuple[Page, RequestLog],
) -> None:
    tab, _ = page
    choose(tab, "classification")
    photo = (ROOT / "examples" / "photos" / "cat.jpg").read_bytes()
    assert upload(tab, photo, "cat.jpg", "image/jpeg") == "done"
    assert tab.is_visible("#domain-notice")
    assert "synthetic shapes" in tab.inner_text("#domain-notice")
    assert tab.is_visible("#uncertain-notice")
    assert "do not trust these classes" in tab.inner_text("#uncertain-notice")
    shape = (ROOT / "examples" / "shape.png").read_bytes()
    assert upload(tab, shape, "shape.png") == "done"
    assert tab.is_hidden("#uncertain-notice") and tab.is_visible("#domain-notice")


def test_the_controls_start_at_what_the_models_serve(
    page: tuple[Page, RequestLog], stack: BackgroundStack
) -> None:
    tab, _ = page
    listing = httpx.get(f"{stack.http_url}/models").json()["models"]
    served = {m["name"]: m["parameters"] for m in listing}
    choose(tab, "detection")
    threshold = served["shapes-detector"]["score_threshold"]["default"]
    assert float(tab.input_value("#score-slider")) == pytest.approx(threshold)
    assert tab.inner_text("#score-value") == f"{threshold:.2f}"
    choose(tab, "classification")
    assert tab.input_value("#top-k") == str(served["shapes-classifier"]["top_k"]["default"])
