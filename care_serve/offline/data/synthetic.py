"""Synthetic shape scenes, written in the standard dataset formats.

This module draws the *classic* scenes described below; ``care_serve.offline.data.generate``
also writes the *wide* distribution of ``care_serve.offline.data.wide`` (its default), with
each scene's style in ``OUT/styles_SPLIT.json``.

A scene is an image 128-1024 px per side with an aspect ratio between 1:2 and
2:1, on a background that is a random solid colour, a linear gradient or
noise, holding filled shapes of three kinds -- ``circle``, ``square``
(axis-aligned) and ``triangle`` (any rotation). Each shape is one solid colour
that contrasts with the background under it; its bounding box is between 8%
and 40% of the shorter image side on both sides, and two boxes overlap by at
most 10% of the smaller one. Classification scenes hold exactly one shape,
detection and segmentation scenes one to six.

Class ids are the same in every task::

    0 background (segmentation masks only), 1 circle, 2 square, 3 triangle

Classification folders carry the class names, so the sorted folder order gives
the class indices 0, 1, 2 = id - 1. Everything is drawn from
``numpy.random.default_rng([seed, task, index])``, so scene ``index`` of a
seed is the same whatever ``count`` is, and any two seeds give different scenes.

Layouts written (``SPLIT`` defaults to ``train``):

- classification: ``OUT/SPLIT/<class>/SPLIT_000000.png`` (an image-folder tree);
- detection: ``OUT/SPLIT/000000.png`` and ``OUT/annotations/instances_SPLIT.json``
  (COCO: ``bbox`` is ``[x, y, width, height]`` in pixels, ``area`` the visible pixels);
- segmentation: ``OUT/images/SPLIT/000000.png`` and ``OUT/masks/SPLIT/000000.png``
  (a single-channel PNG of class ids), plus ``OUT/classes.txt`` (line i = class i).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "BACKGROUND",
    "CLASS_NAMES",
    "IMAGE_FORMATS",
    "SIZE_BUCKETS",
    "TASKS",
    "Scene",
    "SceneSpec",
    "Shape",
    "class_id",
    "make_scene",
    "scene_rng",
    "size_bucket",
]

CLASS_NAMES: tuple[str, ...] = ("circle", "square", "triangle")
BACKGROUND = "background"
TASKS: tuple[str, ...] = ("classification", "detection", "segmentation")
IMAGE_FORMATS: tuple[str, ...] = ("png", "jpg")
# (name, lower bound) of the shape-size buckets, size = box side / shorter image side.
SIZE_BUCKETS: tuple[tuple[str, float], ...] = (
    ("size<15%", 0.0),
    ("size15-40%", 0.15),
    ("size40-70%", 0.40),
    ("size>=70%", 0.70),
)


def size_bucket(size: float) -> str:
    """The size bucket name of a shape whose box side is ``size`` x the shorter image side."""
    name = SIZE_BUCKETS[0][0]
    for bucket, lower in SIZE_BUCKETS:
        if size >= lower:
            name = bucket
    return name


def class_id(name: str) -> int:
    """The class id of shape kind ``name`` (1 circle, 2 square, 3 triangle)."""
    if name not in CLASS_NAMES:
        raise ValueError(f"unknown shape {name!r}; known shapes: {', '.join(CLASS_NAMES)}")
    return CLASS_NAMES.index(name) + 1


@dataclass(frozen=True)
class SceneSpec:
    """The limits every generated scene respects (the issue's specification)."""

    min_side: int = 128
    max_side: int = 1024
    max_aspect: float = 2.0
    min_shape: float = 0.08  # box side, as a fraction of the shorter image side
    max_shape: float = 0.40
    max_overlap: float = 0.10  # box intersection, as a fraction of the smaller box
    min_contrast: float = 110.0  # RGB distance between a shape and the background under it
    min_shapes: int = 1
    max_shapes: int = 6


@dataclass(frozen=True)
class Shape:
    """One drawn shape; ``box`` is ``(x1, y1, x2, y2)`` in pixel edges (x2, y2 exclusive)."""

    kind: str
    box: tuple[int, int, int, int]
    colour: tuple[int, int, int]

    @property
    def class_id(self) -> int:
        return class_id(self.kind)


@dataclass
class Scene:
    """An image (H, W, 3) uint8, its class-id mask (H, W) uint8 and its shapes in drawing order.

    ``instances`` (H, W) uint8 holds ``i + 1`` where shape ``i`` is visible, 0 elsewhere.
    """

    image: np.ndarray
    mask: np.ndarray
    shapes: list[Shape] = field(default_factory=list)
    background: str = "solid"
    instances: np.ndarray | None = None
    style: dict[str, Any] = field(default_factory=dict)


def scene_rng(seed: int, task: str, index: int) -> np.random.Generator:
    """The random generator of scene ``index`` of ``task`` for ``seed``."""
    return np.random.default_rng([seed, TASKS.index(task), index])


# ---------------------------------------------------------------------------
# Drawing
# ---------------------------------------------------------------------------


def _image_size(rng: np.random.Generator, spec: SceneSpec) -> tuple[int, int]:
    """(width, height): log-uniform aspect ratio, then a uniform height that fits."""
    aspect = math.exp(rng.uniform(-math.log(spec.max_aspect), math.log(spec.max_aspect)))
    lo = max(spec.min_side, spec.min_side / aspect)
    hi = min(spec.max_side, spec.max_side / aspect)
    height = int(rng.integers(math.ceil(lo), math.floor(hi) + 1))
    width = round(height * aspect)
    width = min(max(width, spec.min_side, math.ceil(height / spec.max_aspect)), spec.max_side)
    width = min(width, math.floor(height * spec.max_aspect))
    return width, height


def _background(
    rng: np.random.Generator, width: int, height: int
) -> tuple[np.ndarray, np.ndarray, str]:
    """(image, noiseless image, kind) as float32 (H, W, 3) arrays in [0, 255]."""
    kind = ("solid", "gradient", "noise")[int(rng.integers(3))]
    if kind == "gradient":
        c0, c1 = rng.uniform(0, 255, size=(2, 3))
        angle = rng.uniform(0, 2 * math.pi)
        ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
        proj = xs * math.cos(angle) + ys * math.sin(angle)
        t = (proj - proj.min()) / max(float(proj.max() - proj.min()), 1.0)
        clean = c0 + (c1 - c0) * t[..., None]
        return clean.astype(np.float32), clean.astype(np.float32), kind
    base = rng.uniform(0, 255, size=3)
    clean = np.broadcast_to(base.astype(np.float32), (height, width, 3))
    if kind == "solid":
        return clean.copy(), clean, kind
    sigma = rng.uniform(6, 30)
    noisy = clean + rng.normal(0, sigma, size=(height, width, 3)).astype(np.float32)
    return np.clip(noisy, 0, 255), clean, kind


def triangle_vertices(rng: np.random.Generator, size: int) -> tuple[np.ndarray, int, int]:
    """A triangle of any rotation whose larger box side is about ``size`` pixels: its three
    vertices (x, y) from the box's corner, and the width and height of its pixel grid."""
    jitter = np.radians(rng.uniform(-20, 20, size=3))
    angles = rng.uniform(0, 2 * math.pi) + np.radians([0, 120, 240]) + jitter
    pts = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    pts -= pts.min(axis=0)
    pts *= size / pts.max()
    w, h = (math.ceil(v) + 1 for v in pts.max(axis=0))
    return pts, w, h


def _triangle(rng: np.random.Generator, size: int) -> np.ndarray:
    """A filled triangle, any rotation, whose larger box side is about ``size`` pixels."""
    pts, w, h = triangle_vertices(rng, size)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64) + 0.5
    inside_pos = np.ones((h, w), bool)
    inside_neg = np.ones((h, w), bool)
    for i in range(3):
        (x0, y0), (x1, y1) = pts[i], pts[(i + 1) % 3]
        edge = (x1 - x0) * (ys - y0) - (y1 - y0) * (xs - x0)
        inside_pos &= edge >= 0
        inside_neg &= edge <= 0
    inside = inside_pos | inside_neg
    rows, cols = np.flatnonzero(inside.any(axis=1)), np.flatnonzero(inside.any(axis=0))
    if not len(rows):
        return np.ones((1, 1), bool)
    return inside[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def _shape_mask(rng: np.random.Generator, kind: str, size: int) -> np.ndarray:
    """A boolean mask whose extent is exactly the shape's pixel bounding box."""
    if kind == "square":
        return np.ones((size, size), bool)
    if kind == "circle":
        c = (np.arange(size) + 0.5 - size / 2) ** 2
        return (c[:, None] + c[None, :]) <= (size / 2) ** 2
    return _triangle(rng, size)


def _box_overlap(a: Sequence[int], b: Sequence[int]) -> float:
    """Intersection of two boxes as a fraction of the smaller box's area."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return iw * ih / smaller


def _pick_colour(
    rng: np.random.Generator, references: np.ndarray, min_contrast: float
) -> tuple[int, int, int] | None:
    """A colour at least ``min_contrast`` (RGB distance) from every reference colour."""
    for _ in range(30):
        colour = rng.integers(0, 256, size=3)
        if np.linalg.norm(references - colour, axis=1).min() >= min_contrast:
            return (int(colour[0]), int(colour[1]), int(colour[2]))
    far = np.where(references.mean(axis=0) < 128, 255, 0)
    if np.linalg.norm(references - far, axis=1).min() >= min_contrast:
        return (int(far[0]), int(far[1]), int(far[2]))
    return None


def _place(
    rng: np.random.Generator,
    kind: str,
    clean: np.ndarray,
    shapes: list[Shape],
    spec: SceneSpec,
) -> tuple[Shape, np.ndarray] | None:
    """Try to place one shape; returns it with its local mask, or ``None``."""
    height, width = clean.shape[:2]
    short = min(width, height)
    lo, hi = math.ceil(spec.min_shape * short), math.floor(spec.max_shape * short)
    for _ in range(100):
        local = _shape_mask(rng, kind, int(rng.integers(lo, hi + 1)))
        h, w = local.shape
        if not (lo <= h <= hi and lo <= w <= hi):
            continue
        x1, y1 = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
        box = (x1, y1, x1 + w, y1 + h)
        touching = [s for s in shapes if _box_overlap(box, s.box) > 0]
        if any(_box_overlap(box, s.box) > spec.max_overlap for s in touching):
            continue
        region = clean[y1 : y1 + h, x1 : x1 + w]
        refs = [region.reshape(-1, 3).mean(axis=0)]
        refs += [region[0, 0], region[0, -1], region[-1, 0], region[-1, -1]]
        refs += [np.asarray(s.colour, np.float32) for s in touching]
        colour = _pick_colour(rng, np.stack(refs).astype(np.float32), spec.min_contrast)
        if colour is not None:
            return Shape(kind, box, colour), local
    return None


def _classic_style(shapes: Sequence[Shape], background: str, short: int) -> dict[str, Any]:
    """The ``style`` record of a classic scene (same keys as a wide scene's)."""
    records = []
    for shape in shapes:
        x1, y1, x2, y2 = shape.box
        size = max(x2 - x1, y2 - y1) / short
        records.append(
            {
                "size": round(size, 4),
                "size_bucket": size_bucket(size),
                "fill": "filled",
                "line_width": 0.0,
                "line_px": 0,
                "cut": False,
            }
        )
    return {"distribution": "classic", "background": background, "blur": 0.0, "noise": 0.0,
            "jpeg": 0, "shapes": records}  # fmt: skip


def make_scene(
    rng: np.random.Generator,
    kinds: Sequence[str] | None = None,
    spec: SceneSpec | None = None,
) -> Scene:
    """Draw one scene holding ``kinds`` (default: 1-6 random kinds) in that order.

    Later shapes are painted over earlier ones; the mask holds the class id of
    the visible shape at each pixel and each box is the whole shape's extent.
    """
    spec = spec or SceneSpec()
    if kinds is None:
        n = int(rng.integers(spec.min_shapes, spec.max_shapes + 1))
        kinds = [CLASS_NAMES[int(k)] for k in rng.integers(0, len(CLASS_NAMES), size=n)]
    for kind in kinds:
        class_id(kind)
    for _ in range(50):
        width, height = _image_size(rng, spec)
        image, clean, background = _background(rng, width, height)
        mask = np.zeros((height, width), np.uint8)
        instances = np.zeros((height, width), np.uint8)
        shapes: list[Shape] = []
        for kind in kinds:
            placed = _place(rng, kind, clean, shapes, spec)
            if placed is None:
                break
            shape, local = placed
            x1, y1, x2, y2 = shape.box
            image[y1:y2, x1:x2][local] = shape.colour
            mask[y1:y2, x1:x2][local] = shape.class_id
            shapes.append(shape)
            instances[y1:y2, x1:x2][local] = len(shapes)
        if len(shapes) == len(kinds):
            style = _classic_style(shapes, background, min(width, height))
            return Scene(
                np.round(image).astype(np.uint8), mask, shapes, background, instances, style
            )
    raise RuntimeError(f"could not place {len(kinds)} shapes in 50 scenes; relax the SceneSpec")


# ---------------------------------------------------------------------------
# Writing the standard formats
