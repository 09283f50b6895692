"""HEIF/HEIC and AVIF photos are classified like any other image; a format that is not
allowed is a 400 that names it and lists the accepted ones."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import httpx
import pillow_heif
import pytest
from PIL import Image

from care_serve.server import BackgroundStack
from tests.helpers.stacks import BUNDLED_MODELS
from tests.helpers.v2 import rgb, scene_png

CLASSIFIER = BUNDLED_MODELS["classification"]


def _scene() -> Image.Image:
    return Image.fromarray(rgb(scene_png("classification", 3)))


def heic_bytes(image: Image.Image) -> bytes:
    """HEIC written by pillow-heif itself (without registering its opener in Pillow)."""
    buf = io.BytesIO()
    pillow_heif.from_pillow(image).save(buf, quality=90)
    return buf.getvalue()


def avif_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "AVIF", quality=90)
    return buf.getvalue()


@pytest.mark.parametrize(("fmt", "encode"), [("HEIF", heic_bytes), ("AVIF", avif_bytes)])
def test_heic_and_avif_are_classified_over_rest(
    served: BackgroundStack, fmt: str, encode: Any
) -> None:
    image = _scene()
    data = encode(image)
    assert data[4:8] == b"ftyp"  # an ISO base media file, not a PNG in disguise
    response = httpx.post(
        served.http_url + "/classify", content=data, params={"model": CLASSIFIER}, timeout=60
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["image_width"], body["image_height"]) == image.size
    reference = httpx.post(
        served.http_url + "/classify",
        content=scene_png("classification", 3),
        params={"model": CLASSIFIER},
        timeout=60,
    ).json()
    assert body["predictions"][0]["label"] == reference["predictions"][0]["label"]


def test_a_format_that_is_not_allowed_is_named(store: Path, start_stack: Any) -> None:
    stack = start_stack(store, allowed_image_formats="JPEG,PNG")
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (10, 200, 30)).save(buf, "GIF")
    response = httpx.post(stack.http_url + "/classify", content=buf.getvalue())
    assert response.status_code == 400
    message = response.json()["error"]["message"]
    assert message.startswith("GIF images are not accepted") and "accepted: JPEG, PNG" in message
