"""Helpers shared by the serving tests (images)."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image

from care_serve.store import BatchingConfig, InputSpec, Manifest

SIZE = 64
NUM_CLASSES = 5
LABELS = ["circle", "square", "triangle", "star", "hexagon"]


def make_manifest(name: str = "tiny", version: int = 1, **overrides: Any) -> Manifest:
    fields: dict[str, Any] = {
        "name": name,
        "version": version,
        "task": "classification",
        "architecture": "care_tiny",
        "format": "onnx",
        "weights": "model.onnx",
        "num_classes": NUM_CLASSES,
        "input": InputSpec(height=SIZE, width=SIZE),
        "batching": BatchingConfig(max_batch_size=4, max_queue_delay_ms=2.0, max_queue_size=16),
    }
    fields.update(overrides)
    return Manifest(**fields)


def jpeg_bytes(width: int = 96, height: int = 80, seed: int = 0, quality: int = 90) -> bytes:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
    img = Image.fromarray(base).resize((width, height), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()
