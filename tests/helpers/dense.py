"""Small helpers of the dense-task end-to-end tests: a REST call and answer readers."""

from __future__ import annotations

import io
from typing import Any

import httpx
import numpy as np
from PIL import Image

from care_serve.server import BackgroundStack


def rest_dets(body: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    dets = body["detections"]
    boxes = np.asarray([d["box"] for d in dets], np.float64).reshape(-1, 4)
    return boxes, np.asarray([d["score"] for d in dets]), np.asarray([d["class_id"] for d in dets])


def decode_png(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return image.copy()


def post(stack: BackgroundStack, path: str, data: bytes, **params: Any) -> httpx.Response:
    return httpx.post(f"{stack.http_url}{path}", params=params, content=data, timeout=30)
