"""The page with an embedding model: the first values and norm of the vector, and the cosine
similarity of two images, each checked against the API's own answer for the same image."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from playwright.sync_api import sync_playwright

from care_serve.offline.importer import ImportOptions, import_checkpoint
from care_serve.server import BackgroundStack
from tests.helpers.browser import RequestLog, launch, scene_png
from tests.helpers.stacks import serving_stack


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, tiny_models: dict[int, tuple[Any, Path, Path]]
) -> Iterator[BackgroundStack]:
    store = tmp_path_factory.mktemp("page_embedding_store")
    options = ImportOptions(
        checkpoint=tiny_models[1][2],
        arch="care_tiny",
        name="tiny-embed",
        task="embedding",
        model_store=store,
        input_size=(64, 64),
    )
    import_checkpoint(options)
    with serving_stack(store) as running:
        yield running


def embed(stack: BackgroundStack, png: bytes) -> np.ndarray:
    response = httpx.post(f"{stack.http_url}/embed", content=png, timeout=30)
    assert response.status_code == 200, response.text
    return np.asarray(response.json()["embedding"], np.float64)


def test_the_page_shows_the_vector_and_compares_two_images(stack: BackgroundStack) -> None:
    with sync_playwright() as playwright:
        browser = launch(playwright)
        tab = browser.new_page(viewport={"width": 1280, "height": 900})
        log = RequestLog(stack.http_url).attach(tab)
        errors: list[str] = []
        tab.on("pageerror", lambda exc: errors.append(str(exc)))
        tab.goto(stack.http_url + "/")
        tab.wait_for_selector("body[data-models='listed']")
        labels = tab.eval_on_selector_all("#model-select optgroup", "g => g.map(x => x.label)")
        assert "Embedding" in labels  # the task list comes from GET /tasks
        tab.select_option("#model-select", "embedding|tiny-embed")
        pngs = [scene_png("classification", 0), scene_png("classification", 1)]
        for i, png in enumerate(pngs):
            tab.evaluate("document.getElementById('result').dataset.state = ''")
            tab.set_input_files(
                "#file-input",
                files=[{"name": f"shape{i}.png", "mimeType": "image/png", "buffer": png}],
            )
            tab.wait_for_selector("#result[data-state='done']")
        first, second = embed(stack, pngs[0]), embed(stack, pngs[1])
        shown = tab.inner_text("#embedding-values")
        assert shown.startswith(f"[{second[0]:.4f}, {second[1]:.4f}")
        assert f"{len(second)} values, norm 1.0000" in tab.inner_text("#embedding-norm")
        cosine = float(str(tab.get_attribute("#embedding-compare", "data-cosine")))
        expected = float(first @ second / (np.linalg.norm(first) * np.linalg.norm(second)))
        assert abs(cosine - expected) < 1e-5
        assert "shape0.png" in tab.inner_text("#embedding-compare")
        browser.close()
    assert "/embed" in log.own_paths()
    assert log.foreign == [] and errors == []
