"""Images, the own-API reference answers and client helpers of the v2 tests."""

from __future__ import annotations

import base64
import io
from typing import Any

import httpx
import numpy as np
from PIL import Image

from care_serve.imaging.decode import decode_image
from care_serve.offline.data.synthetic import SceneSpec, make_scene, scene_rng
from care_serve.server import BackgroundStack

ROUTES = {"classification": "/classify", "detection": "/detect", "segmentation": "/segment"}


def scene_png(task: str, index: int, side: int | None = None) -> bytes:
    """A synthetic shapes scene (what the bundled models were trained on) as PNG.

    With ``side``, the scene's ``side x side`` centre; otherwise its own size (160-480).
    """
    spec = SceneSpec(min_side=side or 160, max_side=2 * side if side else 480)
    image = make_scene(scene_rng(77, task, index), spec=spec).image
    if side is not None:
        top, left = (image.shape[0] - side) // 2, (image.shape[1] - side) // 2
        image = np.ascontiguousarray(image[top : top + side, left : left + side])
    return png_bytes(image)


def png_bytes(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    return buf.getvalue()


def rgb(png: bytes) -> np.ndarray:
    """The decoded (H, W, 3) uint8 pixels of a PNG."""
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def own_api(served: BackgroundStack, task: str, model: str, data: bytes) -> dict[str, Any]:
    """The answer of /classify, /detect or /segment (all classes / detections)."""
    params: dict[str, Any] = {"model": model}
    if task == "classification":
        params["top_k"] = 100
    if task == "detection":
        params["max_detections"] = 100
    r = httpx.post(served.http_url + ROUTES[task], content=data, params=params, timeout=60)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    if task == "segmentation":
        body["mask"] = np.asarray(Image.open(io.BytesIO(base64.b64decode(body["mask_png"]))))
    return body


def preprocessed(served: BackgroundStack, model: str, png: bytes) -> np.ndarray:
    """The model's own preprocessing of ``png``: the FP32 (3, H, W) network input."""
    handle = served.stack.manager.loaded()[model]
    image = decode_image(png, max_bytes=1 << 30, max_pixels=1 << 30)
    array, _ = handle.task.preprocess(image)
    return array


def rel(out: Any, ref: Any) -> float:
    a, b = np.asarray(out, np.float64), np.asarray(ref, np.float64)
    assert a.shape == b.shape, f"{a.shape} != {b.shape}"
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def probabilities(body: dict[str, Any], num_classes: int) -> np.ndarray:
    probs = np.zeros(num_classes)
    for p in body["predictions"]:
        probs[p["class_id"]] = p["probability"]
    return probs
