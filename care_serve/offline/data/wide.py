"""The *wide* scene distribution: shapes as people draw and photograph them.

Where the classic scenes (``care_serve.offline.data.synthetic``) hold mid-sized filled
shapes on plain backgrounds, a wide scene varies everything a client's image
may vary, each seeded and recorded in the scene's ``style``:

- **image**: the longer side log-uniform in 160-2048 px (so half the scenes are
  under about 570 px: large images are costly to write and decode), the aspect
  ratio a common one (1:1, 4:3, 3:2, 16:9, 2:1, either orientation) or any
  between 1:2 and 2:1, the shorter side at least 128 px;
- **shapes**: the larger side of a shape's (uncut) box uniform in 5-95 % of the
  shorter image side; ``circle``, axis-aligned ``square``, ``triangle`` of any
  rotation; filled (65 %) or outlined (35 %) with a stroke of 1.5, 2.5 or 4
  model-input pixels (the width scales with the image: ``k * longer side / 320``
  px, at least 2 px, at most a quarter of the shape); 20 % are cut by the image
  border (10-30 % of the box side hidden), their box is the visible extent;
- **backgrounds**: solid, linear gradient, Gaussian noise (as classic), a
  texture (stripes, checks or fine fractal noise) or a photo-like smooth
  fractal-noise image with a gradient;
- **degradations** (whole image, in this order): slight Gaussian blur (30 %,
  radius 0.4-1.0 model-input pixels), sensor noise (35 %, sigma 3-12) and a
  JPEG round trip (35 %, quality 25-85).

Every shape's colour is at least 100 (RGB distance) from the background under
it (its region's mean, corners and 16 sampled pixels) and from any shape it
touches; boxes overlap by at most 10 % of the smaller one. The mask (and the
instance map) holds the *painted* pixels: an outlined shape's stroke, not its
inside.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageFilter

from care_serve.offline.data.synthetic import (
    CLASS_NAMES,
    SIZE_BUCKETS,
    Scene,
    Shape,
    _box_overlap,
    _pick_colour,
    class_id,
    size_bucket,
    triangle_vertices,
)

__all__ = [
    "BACKGROUNDS",
    "COMMON_ASPECTS",
    "LINE_WIDTHS",
    "SIZE_BUCKETS",
    "WideSpec",
    "make_wide_scene",
    "size_bucket",
]

BACKGROUNDS: tuple[str, ...] = ("solid", "gradient", "noise", "texture", "photo")
COMMON_ASPECTS: tuple[float, ...] = (1.0, 4 / 3, 3 / 2, 16 / 9, 2.0)
LINE_WIDTHS: tuple[float, ...] = (1.5, 2.5, 4.0)  # in model-input pixels of a 320 input
REFERENCE_INPUT = 320


@dataclass(frozen=True)
class WideSpec:
    """The limits of the wide distribution (see the module docstring)."""

    min_side: int = 128
    min_long: int = 160
    max_side: int = 2048
    max_aspect: float = 2.0
    min_shape: float = 0.05
    max_shape: float = 0.95
    max_overlap: float = 0.10
    min_contrast: float = 100.0
    min_shapes: int = 1
    max_shapes: int = 6
    p_outline: float = 0.35
    p_cut: float = 0.20
    cut_range: tuple[float, float] = (0.10, 0.30)
    p_blur: float = 0.30
    blur_range: tuple[float, float] = (0.4, 1.0)  # radius in model-input pixels
    p_noise: float = 0.35
    noise_range: tuple[float, float] = (3.0, 12.0)
    p_jpeg: float = 0.35
    jpeg_range: tuple[int, int] = (25, 85)


def _image_size(rng: np.random.Generator, spec: WideSpec) -> tuple[int, int]:
    """(width, height): a common or free aspect ratio, log-uniform longer side."""
    if rng.random() < 0.5:
        aspect = float(COMMON_ASPECTS[int(rng.integers(len(COMMON_ASPECTS)))])
    else:
        aspect = math.exp(rng.uniform(0.0, math.log(spec.max_aspect)))
    long = round(math.exp(rng.uniform(math.log(spec.min_long), math.log(spec.max_side))))
    short = max(spec.min_side, round(long / aspect))
    long = max(long, short)
    return (long, short) if rng.random() < 0.5 else (short, long)


def _value_noise(
    rng: np.random.Generator, width: int, height: int, cells: int, octaves: int
) -> np.ndarray:
    """Fractal value noise (H, W) in about [-1, 1]: bicubic-upsampled random grids."""
    total = np.zeros((height, width), np.float32)
    amp, norm = 1.0, 0.0
    for o in range(octaves):
        n = cells * 2**o
        gw = max(2, round(n * width / max(width, height)))
        gh = max(2, round(n * height / max(width, height)))
        grid = rng.uniform(0, 255, size=(gh, gw)).astype(np.float32)
        up = Image.fromarray(grid, mode="F").resize((width, height), Image.Resampling.BICUBIC)
        total += amp * (np.asarray(up) / 127.5 - 1.0)
        norm += amp
        amp *= 0.5
    return total / norm


def _background(rng: np.random.Generator, width: int, height: int) -> tuple[np.ndarray, str]:
    """(float32 (H, W, 3) image in [0, 255], kind); shapes contrast with this image."""
    kind = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    if kind == "solid":
        return np.broadcast_to(rng.uniform(0, 255, 3).astype(np.float32), (height, width, 3)), kind
    if kind == "gradient" or kind == "photo":
        c0, c1 = rng.uniform(0, 255, size=(2, 3)).astype(np.float32)
        angle = rng.uniform(0, 2 * math.pi)
        proj = xs * math.cos(angle) + ys * math.sin(angle)
        t = (proj - proj.min()) / max(float(proj.max() - proj.min()), 1.0)
        image = c0 + (c1 - c0) * t[..., None]
        if kind == "photo":  # smooth colour clouds over the gradient
            for c in range(3):
                image[..., c] += rng.uniform(20, 50) * _value_noise(rng, width, height, 3, 4)
        return np.clip(image, 0, 255), kind
    base = rng.uniform(40, 215, 3).astype(np.float32)
    if kind == "noise":
        sigma = rng.uniform(6, 30)
        noise = rng.normal(0, sigma, size=(height, width, 3)).astype(np.float32)
        return np.clip(base + noise, 0, 255), kind
    # texture: stripes, checks or fine fractal noise, of moderate amplitude
    other = np.clip(base + rng.uniform(-60, 60, 3), 0, 255).astype(np.float32)
    pattern = int(rng.integers(3))
    period = rng.uniform(0.01, 0.06) * max(width, height)
    if pattern == 0:
        angle = rng.uniform(0, math.pi)
        proj = xs * math.cos(angle) + ys * math.sin(angle)
        t = 0.5 + 0.5 * np.sin(2 * math.pi * proj / period)
    elif pattern == 1:
        t = ((np.floor(xs / period) + np.floor(ys / period)) % 2).astype(np.float32)
    else:
        t = 0.5 + 0.5 * _value_noise(rng, width, height, int(rng.integers(12, 40)), 2)
    return base + (other - base) * t[..., None], kind


def _local_mask(rng: np.random.Generator, kind: str, size: int, outline: int) -> np.ndarray:
    """Boolean mask whose extent is the shape's box; ``outline`` > 0 keeps a stroke that wide."""
    if kind == "square":
        mask = np.ones((size, size), bool)
        if outline:
            mask[outline:-outline, outline:-outline] = False
        return mask
    if kind == "circle":
        c = np.arange(size) + 0.5 - size / 2
        d = np.sqrt(c[:, None] ** 2 + c[None, :] ** 2)
        mask = d <= size / 2
        return mask & (d > size / 2 - outline) if outline else mask
    pts, w, h = triangle_vertices(rng, size)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64) + 0.5
    # Signed distances to the three edges, positive inside (whatever the winding).
    area2 = (pts[1, 0] - pts[0, 0]) * (pts[2, 1] - pts[0, 1]) - (pts[1, 1] - pts[0, 1]) * (
        pts[2, 0] - pts[0, 0]
    )
    sign = 1.0 if area2 >= 0 else -1.0
    dist = np.full((h, w), np.inf)
    for i in range(3):
        (x0, y0), (x1, y1) = pts[i], pts[(i + 1) % 3]
        length = max(math.hypot(x1 - x0, y1 - y0), 1e-9)
        edge = sign * ((x1 - x0) * (ys - y0) - (y1 - y0) * (xs - x0)) / length
        dist = np.minimum(dist, edge)
    mask = dist >= 0
    if outline:
        mask &= dist < outline
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not len(rows):
        return np.ones((1, 1), bool)
    return mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def _line_width(rng: np.random.Generator, long_side: int, size: int) -> tuple[int, float]:
    """(stroke px, nominal width in model-input px) of an outline."""
    nominal = float(LINE_WIDTHS[int(rng.integers(len(LINE_WIDTHS)))])
    px = max(2, round(nominal * long_side / REFERENCE_INPUT))
    return min(px, max(1, size // 4)), nominal


def _cut_offset(
    rng: np.random.Generator, spec: WideSpec, w: int, h: int, width: int, height: int
) -> tuple[int, int]:
    """Top-left corner of a box that sticks out of the image on one or two sides."""
    x1 = int(rng.integers(0, max(width - w, 0) + 1))
    y1 = int(rng.integers(0, max(height - h, 0) + 1))
    sides = [int(rng.integers(4))]
    if rng.random() < 0.3:
        sides.append((sides[0] + 1) % 4)  # a corner
    for side in sides:
        frac = rng.uniform(*spec.cut_range)
        if side == 0:
            x1 = -round(frac * w)
        elif side == 1:
            x1 = width - w + round(frac * w)
        elif side == 2:
            y1 = -round(frac * h)
        else:
            y1 = height - h + round(frac * h)
    return x1, y1


@dataclass
class _Placed:
    kind: str
    box: tuple[int, int, int, int]  # clipped to the image
    origin: tuple[int, int]  # top-left of the uncut local mask
    local: np.ndarray
    colour: tuple[int, int, int]
    attrs: dict[str, Any]


def _place(
    rng: np.random.Generator,
    kind: str,
    clean: np.ndarray,
    placed: list[_Placed],
    spec: WideSpec,
) -> _Placed | None:
    height, width = clean.shape[:2]
    short, long = min(width, height), max(width, height)
    lo, hi = math.ceil(spec.min_shape * short), math.floor(spec.max_shape * short)
    for _ in range(60):
        size = int(rng.integers(lo, hi + 1))
        outline, nominal = 0, 0.0
        if rng.random() < spec.p_outline:
            outline, nominal = _line_width(rng, long, size)
        local = _local_mask(rng, kind, size, outline)
        h, w = local.shape
        if max(h, w) < lo or h > short or w > short:
            continue
        cut = rng.random() < spec.p_cut
        if cut:
            x0, y0 = _cut_offset(rng, spec, w, h, width, height)
        else:
            x0 = int(rng.integers(0, width - w + 1))
            y0 = int(rng.integers(0, height - h + 1))
        box = (max(x0, 0), max(y0, 0), min(x0 + w, width), min(y0 + h, height))
        if box[2] - box[0] < 2 or box[3] - box[1] < 2:
            continue
        visible = local[box[1] - y0 : box[3] - y0, box[0] - x0 : box[2] - x0]
        rows, cols = np.flatnonzero(visible.any(axis=1)), np.flatnonzero(visible.any(axis=0))
        if len(rows) < 2 or len(cols) < 2:
            continue
        # The box is the extent of the shape's part inside the image.
        box = (box[0] + int(cols[0]), box[1] + int(rows[0]), box[0] + int(cols[-1]) + 1,
               box[1] + int(rows[-1]) + 1)  # fmt: skip
        touching = [p for p in placed if _box_overlap(box, p.box) > 0]
        if any(_box_overlap(box, p.box) > spec.max_overlap for p in touching):
            continue
        region = clean[box[1] : box[3], box[0] : box[2]]
        flat = region.reshape(-1, 3)
        refs = [flat.mean(axis=0), region[0, 0], region[0, -1], region[-1, 0], region[-1, -1]]
        refs += list(flat[rng.integers(0, len(flat), size=16)])
        refs += [np.asarray(p.colour, np.float32) for p in touching]
        colour = _pick_colour(rng, np.stack(refs).astype(np.float32), spec.min_contrast)
        if colour is None:
            continue
        attrs: dict[str, Any] = {
            "size": round(max(h, w) / short, 4),
            "size_bucket": size_bucket(max(h, w) / short),
            "fill": "outline" if outline else "filled",
            "line_width": nominal,
            "line_px": outline,
            "cut": bool(cut and (box != (x0, y0, x0 + w, y0 + h))),
        }
        return _Placed(kind, box, (x0, y0), local, colour, attrs)
    return None


def _degrade(
    rng: np.random.Generator, image: np.ndarray, spec: WideSpec
) -> tuple[np.ndarray, dict[str, Any]]:
    """Blur, sensor noise and JPEG round trip, each with its probability; returns uint8."""
    height, width = image.shape[:2]
    scale = max(width, height) / REFERENCE_INPUT
    style: dict[str, Any] = {"blur": 0.0, "noise": 0.0, "jpeg": 0}
    out = np.clip(np.round(image), 0, 255).astype(np.uint8)
    if rng.random() < spec.p_blur:
        radius = rng.uniform(*spec.blur_range)
        style["blur"] = round(float(radius), 3)
        out = np.asarray(Image.fromarray(out).filter(ImageFilter.GaussianBlur(radius * scale)))
    if rng.random() < spec.p_noise:
        sigma = rng.uniform(*spec.noise_range)
        style["noise"] = round(float(sigma), 2)
        noisy = out.astype(np.float32) + rng.normal(0, sigma, out.shape).astype(np.float32)
        out = np.clip(np.round(noisy), 0, 255).astype(np.uint8)
    if rng.random() < spec.p_jpeg:
        quality = int(rng.integers(spec.jpeg_range[0], spec.jpeg_range[1] + 1))
        style["jpeg"] = quality
        buffer = io.BytesIO()
        Image.fromarray(out).save(buffer, format="JPEG", quality=quality)
        buffer.seek(0)
        with Image.open(buffer) as decoded:
            out = np.asarray(decoded.convert("RGB"))
    return np.ascontiguousarray(out), style


def make_wide_scene(
    rng: np.random.Generator,
    kinds: Sequence[str] | None = None,
    spec: WideSpec | None = None,
) -> Scene:
    """Draw one wide scene (see the module docstring).

    With ``kinds`` given, every kind is placed (the scene is redrawn until they
    fit); otherwise 1-6 random kinds are tried and those that do not fit next
    to the earlier (possibly large) ones are left out. ``scene.style`` holds
    the scene's background and degradations and, per shape, its size, size
    bucket, fill, line width and whether the border cuts it.
    """
    spec = spec or WideSpec()
    required = kinds is not None
    if kinds is None:
        n = int(rng.integers(spec.min_shapes, spec.max_shapes + 1))
        kinds = [CLASS_NAMES[int(k)] for k in rng.integers(0, len(CLASS_NAMES), size=n)]
    for kind in kinds:
        class_id(kind)
    for _ in range(50):
        width, height = _image_size(rng, spec)
        clean, background = _background(rng, width, height)
        image = np.array(clean, np.float32)
        mask = np.zeros((height, width), np.uint8)
        instances = np.zeros((height, width), np.uint8)
        placed: list[_Placed] = []
        for kind in kinds:
            p = _place(rng, kind, clean, placed, spec)
            if p is None:
                if required:
                    break
                continue
            x0, y0 = p.origin
            x1, y1, x2, y2 = p.box
            visible = p.local[y1 - y0 : y2 - y0, x1 - x0 : x2 - x0]
            image[y1:y2, x1:x2][visible] = p.colour
            mask[y1:y2, x1:x2][visible] = class_id(p.kind)
            placed.append(p)
            instances[y1:y2, x1:x2][visible] = len(placed)
        if (required and len(placed) < len(kinds)) or not placed:
            continue
        shapes = [Shape(p.kind, p.box, p.colour) for p in placed]
        final, degradations = _degrade(rng, image, spec)
        style = {
            "distribution": "wide",
            "background": background,
            **degradations,
            "shapes": [p.attrs for p in placed],
        }
        return Scene(final, mask, shapes, background, instances, style)
    raise RuntimeError(f"could not place {len(kinds)} shapes in 50 scenes; relax the WideSpec")
