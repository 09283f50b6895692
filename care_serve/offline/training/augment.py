"""Augmentation on letterboxed uint8 images, with the targets moved alongside.

Geometry: the eight flips/rotations of the square (horizontal flip, vertical
flip, transpose; the transpose only for square inputs). Colour: a random
channel order and a mild brightness/contrast change. All randomness comes from
the ``numpy.random.Generator`` passed in, so a step's batch depends only on the
seed and the step number (which makes ``--resume`` exact).
"""

from __future__ import annotations

import numpy as np
import torch

from care_serve.imaging.letterbox import IMAGENET_MEAN, IMAGENET_STD

__all__ = [
    "Dihedral",
    "colour_jitter",
    "crop_boxes",
    "normalize_batch",
    "random_crop",
    "random_dihedral",
]


class Dihedral:
    """One of the eight symmetries of the square: transpose, then flips."""

    def __init__(self, hflip: bool, vflip: bool, transpose: bool) -> None:
        self.hflip, self.vflip, self.transpose = hflip, vflip, transpose

    def image(self, image: np.ndarray) -> np.ndarray:
        """Apply to an ``H x W (x C)`` array."""
        if self.transpose:
            image = image.swapaxes(0, 1)
        if self.hflip:
            image = image[:, ::-1]
        if self.vflip:
            image = image[::-1]
        return image

    def boxes(self, boxes: np.ndarray, width: int, height: int) -> np.ndarray:
        """Apply to ``(n, 4)`` xyxy boxes of an image ``width x height`` (before the transform)."""
        b = boxes.astype(np.float32, copy=True)
        if self.transpose:
            b = b[:, [1, 0, 3, 2]]
            width, height = height, width
        if self.hflip:
            b[:, [0, 2]] = width - b[:, [2, 0]]
        if self.vflip:
            b[:, [1, 3]] = height - b[:, [3, 1]]
        return b


def random_dihedral(rng: np.random.Generator, square: bool) -> Dihedral:
    """A uniformly drawn symmetry (no transpose unless the input is square)."""
    flips = rng.integers(0, 2, size=3)
    return Dihedral(bool(flips[0]), bool(flips[1]), bool(flips[2]) and square)


def colour_jitter(image: np.ndarray, rng: np.random.Generator, strength: float = 0.2) -> np.ndarray:
    """Permute the channels and scale contrast/brightness by up to ``strength``."""
    out = image[..., rng.permutation(3)].astype(np.float32)
    contrast = 1.0 + rng.uniform(-strength, strength)
    brightness = 255.0 * rng.uniform(-strength, strength) / 2
    mean = out.mean()
    out = (out - mean) * contrast + mean + brightness
    return np.clip(out, 0, 255).astype(np.uint8)


def normalize_batch(images: np.ndarray) -> torch.Tensor:
    """``(B, H, W, 3)`` uint8 -> ``(B, 3, H, W)`` float32 with the ImageNet mean/std."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return ((x - mean) / std).contiguous()


def random_crop(rng: np.random.Generator, height: int, width: int, size: int) -> tuple[int, int]:
    """Top-left ``(y0, x0)`` of a uniformly placed ``size x size`` window in ``height x width``."""
    return int(rng.integers(0, height - size + 1)), int(rng.integers(0, width - size + 1))


def crop_boxes(
    boxes: np.ndarray,
    labels: np.ndarray,
    x0: int,
    y0: int,
    size: int,
    min_visible: float = 0.5,
) -> tuple[np.ndarray, np.ndarray]:
    """Boxes (and their labels) of a ``size x size`` crop at ``(x0, y0)``, clipped to it.

    A box keeps its place when at least ``min_visible`` of its area is inside the crop.
    """
    b = boxes.astype(np.float32).reshape(-1, 4) - np.asarray([x0, y0, x0, y0], np.float32)
    clipped = np.clip(b, 0, size)
    area = np.prod(b[:, 2:] - b[:, :2], axis=1)
    inside = np.prod(np.clip(clipped[:, 2:] - clipped[:, :2], 0, None), axis=1)
    keep = inside >= min_visible * np.maximum(area, 1e-6)
    return clipped[keep], labels[keep]
