"""What one image of an inference request can be, before it reaches a task.

The data plane accepts three kinds, all served by the same batcher:

- ``EncodedImage``: encoded bytes (JPEG, PNG, ...), decoded and checked by
  ``care_serve.imaging.decode.decode_image`` exactly as ``/classify`` does;
- ``RgbFrame``: an already-decoded ``(H, W, 3)`` uint8 RGB frame of any size
  (the camera path: no codec), resized and normalised by the task's own
  ``preprocess``;
- ``InputTensor``: an already-preprocessed ``(3, H, W)`` float32 network input
  at the model's input size (no decode, no preprocessing).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from care_serve.errors import InvalidInput, PayloadTooLarge
from care_serve.imaging.decode import DecodedImage
from care_serve.store.manifest import Manifest

__all__ = [
    "EncodedImage",
    "ImageInput",
    "InputTensor",
    "RgbFrame",
    "check_input_tensor",
    "frame_to_image",
]


@dataclass(frozen=True)
class EncodedImage:
    """Encoded image bytes."""

    data: bytes


@dataclass(frozen=True)
class RgbFrame:
    """A decoded RGB frame, ``(height, width, 3)`` uint8."""

    pixels: np.ndarray


@dataclass(frozen=True)
class InputTensor:
    """A normalised network input, ``(3, height, width)`` float32 at the model's size."""

    array: np.ndarray


ImageInput = EncodedImage | RgbFrame | InputTensor


def frame_to_image(frame: RgbFrame, max_pixels: int) -> DecodedImage:
    """The frame as the ``DecodedImage`` a task preprocesses (checks shape and pixel limit)."""
    pixels = frame.pixels
    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != 3:
        raise InvalidInput(
            f"an RGB frame must be uint8 (height, width, 3), got {pixels.dtype} {pixels.shape}"
        )
    height, width = int(pixels.shape[0]), int(pixels.shape[1])
    if height <= 0 or width <= 0:
        raise InvalidInput(f"an RGB frame must not be empty, got {width}x{height}")
    if width * height > max_pixels:
        raise PayloadTooLarge(
            f"frame is {width}x{height} = {width * height} pixels; the limit is {max_pixels} "
            "pixels (max_image_pixels)"
        )
    image = Image.fromarray(np.ascontiguousarray(pixels), mode="RGB")
    return DecodedImage(image=image, format="RAW", original_mode="RGB", width=width, height=height)


def check_input_tensor(tensor: InputTensor, manifest: Manifest) -> np.ndarray:
    """The tensor as a contiguous float32 ``(3, H, W)`` array, or ``InvalidInput``."""
    array = tensor.array
    expected = (3, manifest.input.height, manifest.input.width)
    if array.dtype != np.float32 or array.shape != expected:
        raise InvalidInput(
            f"a preprocessed input of {manifest.name} must be float32 {expected} "
            f"(channels, height, width), got {array.dtype} {array.shape}"
        )
    if not np.isfinite(array).all():
        raise InvalidInput("a preprocessed input must not contain NaN or infinity")
    return np.ascontiguousarray(array)
