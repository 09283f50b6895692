"""Letterbox preprocessing for the dense tasks, with its exact inverse (numpy + Pillow only).

The image the client sent (``W0 x H0``, RGB) is resized with its aspect ratio kept
to ``Wr x Hr`` and placed, centred, on a canvas of the network input size
``W x H``; the rest is padding with the normalisation mean (0 after
normalising). ``LetterboxMeta`` records what was done, and maps coordinates both
ways with the *exact* per-axis scales ``Wr / W0`` and ``Hr / H0`` (not the
nominal scale, which rounding makes slightly different), so a point mapped to
the input and back lands where it started up to float rounding.

Coordinates are continuous pixel coordinates: pixel ``(i, j)`` covers
``[j, j + 1) x [i, i + 1)``, a box ``[x1, y1, x2, y2]`` covering whole pixels has
integer corners, and a full image box is ``[0, 0, W0, H0]``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from PIL import Image

from care_serve.errors import InvalidInput

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "INPUT_MULTIPLE",
    "LetterboxMeta",
    "dynamic_input_size",
    "fit_within",
    "letterbox_image",
    "letterbox_mask",
    "make_letterbox_meta",
    "preprocess",
    "to_rgb_array",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INPUT_MULTIPLE = 32  # CARE needs H and W to be multiples of 32


@dataclass(frozen=True)
class LetterboxMeta:
    """How one image was letterboxed into the network input; inverts the mapping."""

    orig_width: int
    orig_height: int
    input_width: int
    input_height: int
    resized_width: int
    resized_height: int
    pad_left: int
    pad_top: int

    @property
    def scale_x(self) -> float:
        """Exact horizontal scale from original to input pixels."""
        return self.resized_width / self.orig_width

    @property
    def scale_y(self) -> float:
        """Exact vertical scale from original to input pixels."""
        return self.resized_height / self.orig_height

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able fields."""
        return asdict(self)

    def boxes_to_input(self, boxes: np.ndarray) -> np.ndarray:
        """Map ``(n, 4)`` xyxy boxes from original-image pixels to network-input pixels."""
        b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        out = np.empty_like(b)
        out[:, 0::2] = b[:, 0::2] * self.scale_x + self.pad_left
        out[:, 1::2] = b[:, 1::2] * self.scale_y + self.pad_top
        return out

    def boxes_to_original(self, boxes: np.ndarray, clip: bool = True) -> np.ndarray:
        """Map ``(n, 4)`` xyxy boxes from network-input pixels back to original pixels.

        With ``clip`` the result is clipped to ``[0, W0] x [0, H0]``.
        """
        b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        out = np.empty_like(b)
        out[:, 0::2] = (b[:, 0::2] - self.pad_left) / self.scale_x
        out[:, 1::2] = (b[:, 1::2] - self.pad_top) / self.scale_y
        if clip:
            np.clip(out[:, 0::2], 0.0, self.orig_width, out=out[:, 0::2])
            np.clip(out[:, 1::2], 0.0, self.orig_height, out=out[:, 1::2])
        return out

    def content_box(self, stride: float = 1.0) -> tuple[float, float, float, float]:
        """The resized image's region ``(x0, y0, x1, y1)`` in input pixels divided by ``stride``."""
        return (
            self.pad_left / stride,
            self.pad_top / stride,
            (self.pad_left + self.resized_width) / stride,
            (self.pad_top + self.resized_height) / stride,
        )


def _check_size(name: str, value: int) -> None:
    if not isinstance(value, (int, np.integer)) or value <= 0:
        raise InvalidInput(f"{name} must be a positive integer, got {value!r}")


def make_letterbox_meta(
    orig_width: int, orig_height: int, input_width: int, input_height: int
) -> LetterboxMeta:
    """The letterbox of a ``W0 x H0`` image into a ``W x H`` input (aspect kept, centred)."""
    for name, value in (
        ("image width", orig_width),
        ("image height", orig_height),
        ("input width", input_width),
        ("input height", input_height),
    ):
        _check_size(name, value)
    scale = min(input_width / orig_width, input_height / orig_height)
    resized_w = min(input_width, max(1, round(orig_width * scale)))
    resized_h = min(input_height, max(1, round(orig_height * scale)))
    return LetterboxMeta(
        orig_width=int(orig_width),
        orig_height=int(orig_height),
        input_width=int(input_width),
        input_height=int(input_height),
        resized_width=resized_w,
        resized_height=resized_h,
        pad_left=(input_width - resized_w) // 2,
        pad_top=(input_height - resized_h) // 2,
    )


def dynamic_input_size(
    orig_width: int, orig_height: int, max_side: int, multiple: int = INPUT_MULTIPLE
) -> tuple[int, int]:
    """An input ``(width, height)`` keeping the image's aspect: long side ``max_side``.

    Each side is rounded up to ``multiple`` (so padding is under ``multiple``
    pixels); ``max_side`` itself must be a multiple.
    """
    _check_size("image width", orig_width)
    _check_size("image height", orig_height)
    if max_side <= 0 or max_side % multiple:
        raise InvalidInput(f"max_side must be a positive multiple of {multiple}, got {max_side}")
    scale = max_side / max(orig_width, orig_height)
    w = max(multiple, math.ceil(round(orig_width * scale, 6) / multiple) * multiple)
    h = max(multiple, math.ceil(round(orig_height * scale, 6) / multiple) * multiple)
    return min(w, max_side), min(h, max_side)


def fit_within(width: int, height: int, max_pixels: int) -> tuple[int, int]:
    """``(width, height)``, or the largest size of that aspect ratio within ``max_pixels``."""
    if width * height <= max_pixels:
        return width, height
    scale = (max_pixels / (width * height)) ** 0.5
    return max(1, int(width * scale)), max(1, int(height * scale))


def to_rgb_array(image: Image.Image | np.ndarray) -> np.ndarray:
    """An ``H x W x 3`` uint8 RGB array from a PIL image or an array (validated)."""
    if isinstance(image, Image.Image):
        arr = np.asarray(image if image.mode == "RGB" else image.convert("RGB"))
    elif isinstance(image, np.ndarray):
        arr = image
    else:
        raise InvalidInput(
            "expected an RGB image (PIL.Image or H x W x 3 uint8 array), "
            f"got {type(image).__name__}"
        )
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        raise InvalidInput(
            f"expected an H x W x 3 uint8 RGB array, got shape {arr.shape} dtype {arr.dtype}"
        )
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InvalidInput(f"image is empty (shape {arr.shape})")
    return arr


# Pillow first shrinks by an integer factor (box filter) when the image is at least
# this many times larger than the target, then resamples: about 3x faster on a
# 4000x3000 photo; Pillow documents 3.0 as indistinguishable from a full resample in
# most cases. Images under 3x the target size are not affected.
REDUCING_GAP = 3.0


def _resize(
    src: Image.Image | np.ndarray, meta: LetterboxMeta, resample: Image.Resampling
) -> np.ndarray:
    """``src`` (an RGB PIL image or ``H x W x 3`` uint8 array) at the letterboxed size."""
    size = (meta.resized_width, meta.resized_height)
    current = src.size if isinstance(src, Image.Image) else (src.shape[1], src.shape[0])
    if current == size:
        return np.asarray(src)
    image = src if isinstance(src, Image.Image) else Image.fromarray(src)
    return np.asarray(image.resize(size, resample, reducing_gap=REDUCING_GAP))


def letterbox_image(
    image: Image.Image | np.ndarray,
    input_size: tuple[int, int],
    *,
    fill: tuple[int, int, int] = (124, 116, 104),
    resample: Image.Resampling = Image.Resampling.BILINEAR,
) -> tuple[np.ndarray, LetterboxMeta]:
    """Letterbox ``image`` into ``input_size = (width, height)``: uint8 canvas + meta.

    For training pipelines that augment in uint8; ``fill`` defaults to the
    ImageNet mean colour, which is what ``preprocess`` pads with.
    """
    arr = to_rgb_array(image)
    meta = make_letterbox_meta(arr.shape[1], arr.shape[0], input_size[0], input_size[1])
    canvas = np.empty((meta.input_height, meta.input_width, 3), np.uint8)
    canvas[:] = np.asarray(fill, np.uint8)
    canvas[
        meta.pad_top : meta.pad_top + meta.resized_height,
        meta.pad_left : meta.pad_left + meta.resized_width,
    ] = _resize(arr, meta, resample)
    return canvas, meta


def preprocess(
    image: Image.Image | np.ndarray,
    input_size: tuple[int, int] | None = None,
    *,
    max_side: int | None = None,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    resample: Image.Resampling = Image.Resampling.BILINEAR,
    orig_size: tuple[int, int] | None = None,
) -> tuple[np.ndarray, LetterboxMeta]:
    """RGB uint8 image -> normalised float32 ``3 x H x W`` network input + ``LetterboxMeta``.

    Give either a fixed ``input_size = (width, height)`` (multiples of 32), or
    ``max_side`` for an aspect-keeping size from ``dynamic_input_size``. The
    padding is the mean colour, i.e. exactly 0 after normalisation. An RGB PIL
    image is resized as it is, without a full-size array copy first.
    ``orig_size`` is the ``(width, height)`` the client sent when ``image`` is a
    smaller, reduced-scale decode of it: the geometry and the meta are those of
    ``orig_size``, only the pixels come from ``image``.
    """
    rgb_pil = isinstance(image, Image.Image) and image.mode == "RGB" and min(image.size) > 0
    src: Image.Image | np.ndarray = image if rgb_pil else to_rgb_array(image)
    src_w, src_h = src.size if isinstance(src, Image.Image) else (src.shape[1], src.shape[0])
    if orig_size is not None:
        src_w, src_h = orig_size
    if (input_size is None) == (max_side is None):
        raise InvalidInput("give exactly one of input_size=(width, height) or max_side")
    if input_size is None:
        assert max_side is not None
        input_size = dynamic_input_size(src_w, src_h, max_side)
    w, h = input_size
    if w <= 0 or h <= 0 or w % INPUT_MULTIPLE or h % INPUT_MULTIPLE:
        raise InvalidInput(
            f"network input size must be positive multiples of {INPUT_MULTIPLE}, got {w}x{h}"
        )
    meta = make_letterbox_meta(src_w, src_h, w, h)
    resized = _resize(src, meta, resample)
    scale = np.asarray([1.0 / (255.0 * s) for s in std], np.float32)[:, None, None]
    shift = np.asarray([m / s for m, s in zip(mean, std, strict=True)], np.float32)[:, None, None]
    out = np.zeros((3, h, w), np.float32)
    region = out[
        :,
        meta.pad_top : meta.pad_top + meta.resized_height,
        meta.pad_left : meta.pad_left + meta.resized_width,
    ]
    np.multiply(resized.transpose(2, 0, 1), scale, out=region, casting="unsafe")
    region -= shift
    return out, meta


def letterbox_mask(mask: np.ndarray, meta: LetterboxMeta, pad_value: int = 255) -> np.ndarray:
    """Map an ``H0 x W0`` class-index mask into the network input frame (nearest).

    For training targets: the padding gets ``pad_value`` (255 = ignored by the
    segmentation loss). Returns an ``H x W`` array of the mask's dtype.
    """
    m = np.asarray(mask)
    if m.shape != (meta.orig_height, meta.orig_width):
        raise InvalidInput(
            f"mask shape {m.shape} does not match the image ({meta.orig_height}, {meta.orig_width})"
        )
    # Nearest neighbour at pixel centres, the same convention as the inverse mapping.
    xs = (np.arange(meta.resized_width) + 0.5) / meta.scale_x
    ys = (np.arange(meta.resized_height) + 0.5) / meta.scale_y
    cols = np.minimum(np.floor(xs).astype(np.int64), meta.orig_width - 1)
    rows = np.minimum(np.floor(ys).astype(np.int64), meta.orig_height - 1)
    out = np.full((meta.input_height, meta.input_width), pad_value, dtype=m.dtype)
    out[
        meta.pad_top : meta.pad_top + meta.resized_height,
        meta.pad_left : meta.pad_left + meta.resized_width,
    ] = m[rows[:, None], cols[None, :]]
    return out
