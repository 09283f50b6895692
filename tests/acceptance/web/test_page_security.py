"""The page over TLS on a server that needs API keys: it asks for a key, then works.

Chromium is told to accept the test CA's certificate (a throwaway one made here);
everything else is the real page against the real server.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import sync_playwright

from care_serve.security.keys import KeyFile
from tests.helpers.browser import RequestLog, launch, scene_png
from tests.helpers.stacks import serving_stack
from tests.helpers.tls import make_authority


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_playwright() as playwright:
        chromium = launch(playwright)
        yield chromium
        chromium.close()


def test_the_page_asks_for_a_key_and_then_classifies_over_tls(browser: Any, tmp_path: Path) -> None:
    server = make_authority(tmp_path).issue("server", server=True)
    keys = KeyFile()
    key = keys.add("browser", "infer")
    keys.write(tmp_path / "keys.json")
    with serving_stack(
        tls_cert=server.cert, tls_key=server.key, api_keys_file=tmp_path / "keys.json"
    ) as stack:
        assert stack.http_url.startswith("https://")
        context = browser.new_context(ignore_https_errors=True)
        tab = context.new_page()
        log = RequestLog(stack.http_url).attach(tab)
        errors: list[str] = []
        tab.on("pageerror", lambda exc: errors.append(str(exc)))
        tab.goto(stack.http_url + "/")
        tab.wait_for_selector("#api-key-field:not([hidden])")
        assert "Error 401" in tab.inner_text("#models-error .error-title")
        tab.wait_for_selector("body[data-streams='failed']")
        assert "Error 401" in tab.inner_text("#streams-error .error-title")
        tab.fill("#api-key", key)
        tab.dispatch_event("#api-key", "change")
        tab.wait_for_selector("body[data-models='listed']")
        assert tab.is_hidden("#models-error")
        # The streams panel, refused too without the key, lists the streams with it.
        tab.wait_for_selector("body[data-streams='listed']")
        assert tab.is_hidden("#streams-error")
        assert tab.inner_text("#stream-list") == "No stream runs. Add one with the form."
        tab.set_input_files(
            "#file-input",
            files=[
                {"name": "s.png", "mimeType": "image/png", "buffer": scene_png("classification", 0)}
            ],
        )
        tab.wait_for_selector("#result[data-state='done'], #result[data-state='error']")
        assert tab.get_attribute("#result", "data-state") == "done"
        assert tab.locator("#bars .bar").count() > 0
        context.close()
    assert log.foreign == [] and errors == []
