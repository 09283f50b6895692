"""What every peer server shares with care-serve: the package's preprocessing and labels.

Peers decode with Pillow and preprocess with care-serve's own implementation
(``care_serve.imaging.preprocess``, the manifest of the imported package), so every
server does the same work per image and the table compares serving, not
preprocessing code.
"""

from __future__ import annotations

import io
import os
from typing import Any

import numpy as np
from PIL import Image

from care_serve.imaging.preprocess import preprocess_image
from care_serve.store import Manifest, read_labels, read_manifest

__all__ = ["Package", "top5"]


class Package:
    """The imported care-serve package a peer reads its manifest and labels from."""

    def __init__(self, package_dir: str | os.PathLike[str]) -> None:
        self.manifest: Manifest = read_manifest(package_dir)
        self.labels = read_labels(package_dir, self.manifest)

    def to_input(self, jpeg: bytes) -> np.ndarray:
        """JPEG bytes -> ``(3, H, W)`` float32 network input."""
        image = Image.open(io.BytesIO(jpeg)).convert("RGB")
        array, _ = preprocess_image(image, self.manifest)
        return array


def top5(logits: np.ndarray, labels: list[str]) -> dict[str, Any]:
    """Softmax top-5 as care-serve's /classify shape."""
    z = np.asarray(logits, np.float64).reshape(-1)
    p = np.exp(z - z.max())
    p /= p.sum()
    best = np.argsort(-p)[:5]
    return {
        "predictions": [
            {"label": labels[i], "class_id": int(i), "probability": float(p[i])} for i in best
        ]
    }
