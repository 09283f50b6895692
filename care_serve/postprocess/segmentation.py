"""Segmentation post-processing in numpy/Pillow: logits -> class mask at the original size.

Shared by the torch and onnxruntime backends (no torch import). The network
(``care_serve.models.segmentation.CARESegmenter``) outputs ``seg_logits``
``(B, K, H/4, W/4)`` float32 for an input ``B x 3 x H x W``; class 0 is
background. ``logits_to_mask`` takes the part of the logit map covering the
letterboxed image (a fractional box at stride 4), resizes the logits
bilinearly (pixel-centre convention, as
``torch.nn.functional.interpolate(..., align_corners=False)``) and takes the
argmax over classes, interpolating only the pixels on class boundaries; the
result is a class-index mask of the original ``W0 x H0`` size.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from care_serve.errors import InvalidInput
from care_serve.imaging.letterbox import LetterboxMeta, fit_within, to_rgb_array
from care_serve.postprocess.drawing import LegendEntry, encode_png, with_legend

__all__ = [
    "IGNORE_INDEX",
    "SEGMENTATION_OUTPUT_NAMES",
    "SEGMENTATION_OUTPUT_STRIDE",
    "Segmentation",
    "class_shares",
    "colorize",
    "legend_entries",
    "logits_to_mask",
    "make_palette",
    "mask_to_png",
    "overlay",
    "overlay_png",
    "overlay_with_legend_png",
    "png_to_mask",
    "postprocess_segmentation",
]

SEGMENTATION_OUTPUT_NAMES = ("seg_logits",)
SEGMENTATION_OUTPUT_STRIDE = 4
IGNORE_INDEX = 255  # label of unlabelled pixels in training masks


@dataclass(frozen=True)
class Segmentation:
    """One image's result: ``mask`` (H0, W0) class indices, ``shares`` (K,) pixel fractions."""

    mask: np.ndarray
    shares: np.ndarray


def postprocess_segmentation(
    seg_logits: np.ndarray,
    meta: LetterboxMeta,
    *,
    exact: bool = False,
    stride: int = SEGMENTATION_OUTPUT_STRIDE,
    max_pixels: int | None = None,
) -> Segmentation:
    """One image's ``(K, H/4, W/4)`` logits -> mask + class shares.

    The mask has the original size, or with ``max_pixels`` at most that many
    pixels (same aspect ratio): what bounds the cost of very large images.
    """
    size = None
    if max_pixels is not None:
        size = fit_within(meta.orig_width, meta.orig_height, max_pixels)
    mask = logits_to_mask(seg_logits, meta, stride, exact=exact, size=size)
    return Segmentation(mask=mask, shares=class_shares(mask, seg_logits.shape[0]))


def logits_to_mask(
    seg_logits: np.ndarray,
    meta: LetterboxMeta,
    stride: int = SEGMENTATION_OUTPUT_STRIDE,
    *,
    exact: bool = False,
    size: tuple[int, int] | None = None,
) -> np.ndarray:
    """One image's ``(K, H/stride, W/stride)`` logits -> ``H0 x W0`` class-index mask.

    ``size = (W, H)`` makes the mask that size instead of the original's (the same
    region of the image, sampled more coarsely).

    The logits are resized bilinearly and the argmax taken at the original size
    when the image was enlarged for the network. When it was shrunk, that is done
    at the network's own resolution of the image (``Wr x Hr``, the finest detail
    the network saw) and the mask is then enlarged by nearest neighbour, which is
    several times faster; boundaries move by less than one network-input pixel.
    ``exact=True`` always works at the original size. The mask is uint8 when
    ``K <= 256``, else uint16.
    """
    if seg_logits.ndim != 3:
        raise ValueError(f"expected seg_logits (K, h, w), got shape {seg_logits.shape}")
    _, h, w = seg_logits.shape
    if (h * stride, w * stride) != (meta.input_height, meta.input_width):
        raise ValueError(
            f"seg_logits {h}x{w} at stride {stride} do not match the "
            f"{meta.input_height}x{meta.input_width} input"
        )
    orig = size or (meta.orig_width, meta.orig_height)
    resized = (meta.resized_width, meta.resized_height)
    shrunk = resized[0] * resized[1] < orig[0] * orig[1]
    work = resized if shrunk and not exact else orig
    mask = _argmax_resized(seg_logits, work, meta.content_box(stride))
    if work == orig:
        return mask
    cols = _nearest_indices(orig[0], work[0])
    rows = _nearest_indices(orig[1], work[1])
    return mask.take(rows, axis=0).take(cols, axis=1)


def _nearest_indices(out_size: int, in_size: int) -> np.ndarray:
    """Source index of each output pixel centre (pixel-centre convention)."""
    idx = np.floor((np.arange(out_size) + 0.5) * (in_size / out_size)).astype(np.intp)
    return np.minimum(idx, in_size - 1)


def _axis_taps(
    out_size: int, start: float, length: float, in_size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bilinear taps ``(i0, i1, w1)`` along one axis (half-pixel centres, edges clamped)."""
    src = start + (np.arange(out_size) + 0.5) * (length / out_size) - 0.5
    src = np.clip(src, 0.0, in_size - 1)
    i0 = np.floor(src).astype(np.intp)
    i1 = np.minimum(i0 + 1, in_size - 1)
    return i0, i1, (src - i0).astype(np.float32)


def _argmax_resized(
    seg_logits: np.ndarray,
    size: tuple[int, int],
    box: tuple[float, float, float, float],
    chunk: int = 65536,
) -> np.ndarray:
    """Argmax over classes of the logits' ``box`` resized bilinearly to ``size = (W, H)``.

    Exactly ``argmax(interpolate(logits, bilinear, align_corners=False))`` on the
    box, computed cheaply. The vertical pass runs at the logits' own width
    (``K x H x w``, small). In the horizontal pass a pixel whose two source
    columns share one argmax class takes that class (a convex combination of
    logit vectors that all favour one class favours it too), so only pixels
    on class boundaries are interpolated, in chunks of ``chunk`` pixels.
    """
    k, h, w = seg_logits.shape
    logits = np.asarray(seg_logits, np.float32)
    i0, i1, wy = _axis_taps(size[1], box[1], box[3] - box[1], h)
    j0, j1, wx = _axis_taps(size[0], box[0], box[2] - box[0], w)
    wy = wy[None, :, None]
    cols = logits[:, i0] * (1 - wy) + logits[:, i1] * wy  # (K, H, w)
    low = cols.argmax(axis=0).astype(np.uint8 if k <= 256 else np.uint16)  # (H, w)
    mask = low.take(j0, axis=1)
    ys, xs = np.nonzero(mask != low.take(j1, axis=1))
    flat = cols.reshape(k, -1)
    for s in range(0, len(ys), chunk):
        y, x = ys[s : s + chunk], xs[s : s + chunk]
        fx = wx[x]
        left = flat.take(y * w + j0[x], axis=1)
        right = flat.take(y * w + j1[x], axis=1)
        mask[y, x] = (left * (1 - fx) + right * fx).argmax(axis=0)
    return mask


def class_shares(mask: np.ndarray, num_classes: int) -> np.ndarray:
    """Fraction of the pixels of each class, ``(num_classes,)`` float64 summing to 1."""
    if num_classes <= 16:  # a few byte comparisons beat bincount's conversion to int64
        counts = np.array([np.count_nonzero(mask == c) for c in range(num_classes)], np.float64)
    else:
        counts = np.bincount(mask.ravel(), minlength=num_classes)[:num_classes].astype(np.float64)
    return counts / max(1, mask.size)


def make_palette(num_classes: int) -> np.ndarray:
    """``(num_classes, 3)`` uint8 colours: black background, then distinct bright colours.

    The PASCAL VOC bit-interleaving scheme, so colours are stable across models.
    """
    palette = np.zeros((num_classes, 3), np.uint8)
    for c in range(num_classes):
        r = g = b = 0
        label = c
        for shift in range(7, -1, -1):
            r |= (label & 1) << shift
            g |= ((label >> 1) & 1) << shift
            b |= ((label >> 2) & 1) << shift
            label >>= 3
        palette[c] = (r, g, b)
    return palette


def mask_to_png(mask: np.ndarray) -> bytes:
    """A single-channel PNG of class indices (8-bit, or 16-bit for more than 256 classes)."""
    if mask.ndim != 2:
        raise ValueError(f"expected an H x W mask, got shape {mask.shape}")
    if mask.dtype == np.uint8:
        image = Image.fromarray(mask)
    else:
        image = Image.fromarray(mask.astype(np.uint16))
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=False, compress_level=1)
    return buf.getvalue()


def png_to_mask(data: bytes) -> np.ndarray:
    """Read back a PNG written by ``mask_to_png`` (for clients and tests)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return np.asarray(image).copy()
    except Exception as exc:
        raise InvalidInput(f"not a readable PNG mask: {exc}") from exc


def colorize(mask: np.ndarray, palette: np.ndarray | None = None) -> np.ndarray:
    """``H x W x 3`` uint8 colour image of a class mask."""
    if palette is None:
        palette = make_palette(int(mask.max()) + 1 if mask.size else 1)
    if mask.size and int(mask.max()) >= len(palette):
        raise ValueError(
            f"mask has class {int(mask.max())} but the palette has {len(palette)} colours"
        )
    return palette[mask]


def overlay(
    image: Image.Image | np.ndarray,
    mask: np.ndarray,
    alpha: float = 0.5,
    palette: np.ndarray | None = None,
) -> np.ndarray:
    """Blend the colourised ``mask`` over ``image``; background pixels stay as is.

    An image larger than the mask (a capped mask) is first shrunk to the mask's size.
    """
    if not 0.0 <= alpha <= 1.0:
        raise InvalidInput(f"alpha must be in [0, 1], got {alpha}")
    if isinstance(image, Image.Image) and image.size != (mask.shape[1], mask.shape[0]):
        image = image.resize((mask.shape[1], mask.shape[0]), Image.Resampling.BILINEAR)
    rgb = to_rgb_array(image)
    if rgb.shape[:2] != mask.shape:
        raise ValueError(f"mask {mask.shape} and image {rgb.shape[:2]} differ in size")
    colours = colorize(mask, palette).astype(np.float32)
    blend = rgb.astype(np.float32) * (1.0 - alpha) + colours * alpha
    out = np.where((mask > 0)[..., None], blend, rgb.astype(np.float32))
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def overlay_png(
    image: Image.Image | np.ndarray,
    mask: np.ndarray,
    alpha: float = 0.5,
    palette: np.ndarray | None = None,
) -> bytes:
    """``overlay`` encoded as an RGB PNG."""
    buf = io.BytesIO()
    Image.fromarray(overlay(image, mask, alpha, palette)).save(buf, format="PNG")
    return buf.getvalue()


def legend_entries(
    shares: Sequence[float], labels: Sequence[str], palette: np.ndarray
) -> list[LegendEntry]:
    """The classes present (background excepted), largest share first, as legend lines."""
    present = [c for c in range(1, len(labels)) if shares[c] > 0]
    present.sort(key=lambda c: (-shares[c], c))
    return [
        LegendEntry(
            colour=(int(palette[c][0]), int(palette[c][1]), int(palette[c][2])),
            text=f"{labels[c]}: {100.0 * shares[c]:.1f} %",
        )
        for c in present
    ]


def overlay_with_legend_png(
    image: Image.Image | np.ndarray,
    mask: np.ndarray,
    shares: Sequence[float],
    labels: Sequence[str],
    alpha: float = 0.5,
    palette: np.ndarray | None = None,
) -> bytes:
    """The ``overlay`` (unchanged, top left) above a legend of the classes and their shares."""
    if palette is None:
        palette = make_palette(len(labels))
    blended = Image.fromarray(overlay(image, mask, alpha, palette))
    entries = legend_entries(shares, labels, palette)
    title = "share of the pixels" if entries else "no class found (all background)"
    return encode_png(with_legend(blended, entries, title))
