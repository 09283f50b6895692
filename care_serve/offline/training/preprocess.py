"""Decoding a dataset once into letterboxed uint8 arrays at the network input size.

Training on two CPU cores cannot afford to decode and resize full-size images
every step, so each image is decoded (EXIF orientation applied, any mode to
RGB, as the server does) and letterboxed once with the serving geometry
(``care_serve.imaging.letterbox``); targets are mapped into the same frame.
Augmentation then works on these small arrays.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from care_serve.errors import DatasetError
from care_serve.imaging.decode import to_rgb
from care_serve.imaging.letterbox import LetterboxMeta, letterbox_image, letterbox_mask
from care_serve.offline.data.readers import (
    IGNORE_INDEX,
    ClassificationData,
    DetectionData,
    SegmentationData,
    load_mask,
)

__all__ = [
    "CachedDataset",
    "cache_classification",
    "cache_detection",
    "cache_segmentation",
    "load_rgb",
]


def load_rgb(path: str | os.PathLike[str]) -> np.ndarray:
    """Decode an image file into an ``H x W x 3`` uint8 RGB array (EXIF orientation applied)."""
    try:
        with Image.open(path) as image:
            image.load()
            rgb = to_rgb(ImageOps.exif_transpose(image) or image)
    except (OSError, ValueError, SyntaxError) as exc:
        raise DatasetError(f"cannot decode image {path}: {exc}") from None
    return np.asarray(rgb)


@dataclass
class CachedDataset:
    """Letterboxed images ``(N, H, W, 3)`` uint8 plus the targets in input pixels.

    ``labels`` (classification, ``(N,)``), ``boxes``/``box_labels`` (detection, per
    image ``(n, 4)`` xyxy and ``(n,)``) or ``masks`` (segmentation, ``(N, H, W)``
    uint8, 255 = ignore). ``metas`` maps input pixels back to each original image.
    """

    images: np.ndarray
    classes: list[str]
    metas: list[LetterboxMeta]
    labels: np.ndarray | None = None
    boxes: list[np.ndarray] | None = None
    box_labels: list[np.ndarray] | None = None
    masks: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.images.shape[0])


def _letterbox_all(
    paths: Sequence[Path],
    input_size: tuple[int, int],
    progress: bool,
    desc: str,
    fill: tuple[int, int, int] | None = None,
) -> tuple[np.ndarray, list[LetterboxMeta], list[tuple[int, int]]]:
    from tqdm import tqdm

    width, height = input_size
    images = np.empty((len(paths), height, width, 3), np.uint8)
    metas: list[LetterboxMeta] = []
    sizes: list[tuple[int, int]] = []
    iterator: Iterable[tuple[int, Path]] = enumerate(paths)
    for i, path in tqdm(iterator, total=len(paths), desc=desc, unit="img", disable=not progress):
        rgb = load_rgb(path)
        if fill is None:
            images[i], meta = letterbox_image(rgb, input_size)
        else:
            images[i], meta = letterbox_image(rgb, input_size, fill=fill)
        metas.append(meta)
        sizes.append((rgb.shape[1], rgb.shape[0]))
    return images, metas, sizes


def cache_classification(
    data: ClassificationData,
    input_size: tuple[int, int],
    progress: bool = False,
    fill: tuple[int, int, int] | None = None,
) -> CachedDataset:
    """Decode and letterbox an image-folder dataset (padding ``fill``, default the mean colour)."""
    images, metas, _ = _letterbox_all(data.paths, input_size, progress, "decode images", fill)
    return CachedDataset(images, list(data.classes), metas, labels=data.labels.copy())


def cache_detection(
    data: DetectionData, input_size: tuple[int, int], progress: bool = False
) -> CachedDataset:
    """Decode and letterbox a COCO dataset; boxes are mapped into input pixels."""
    paths = [s.path for s in data.samples]
    images, metas, sizes = _letterbox_all(paths, input_size, progress, "decode images")
    boxes, labels = [], []
    for sample, meta, size in zip(data.samples, metas, sizes, strict=True):
        if size != (sample.width, sample.height):
            raise DatasetError(
                f"{sample.path} is {size[0]}x{size[1]} but its COCO entry says "
                f"{sample.width}x{sample.height}"
            )
        boxes.append(meta.boxes_to_input(sample.boxes).astype(np.float32))
        labels.append(sample.labels.copy())
    return CachedDataset(images, list(data.classes), metas, boxes=boxes, box_labels=labels)


def cache_segmentation(
    data: SegmentationData, input_size: tuple[int, int], progress: bool = False
) -> CachedDataset:
    """Decode and letterbox image/mask pairs; the padding is ignored (255) in the masks."""
    images, metas, _ = _letterbox_all(data.images, input_size, progress, "decode images")
    width, height = input_size
    masks = np.empty((len(data), height, width), np.uint8)
    num_classes = len(data.classes)
    for i, (path, meta) in enumerate(zip(data.masks, metas, strict=True)):
        mask = load_mask(path)
        if mask.shape != (meta.orig_height, meta.orig_width):
            raise DatasetError(
                f"mask {path} is {mask.shape[1]}x{mask.shape[0]} but its image is "
                f"{meta.orig_width}x{meta.orig_height}"
            )
        bad = np.unique(mask[(mask >= num_classes) & (mask != IGNORE_INDEX)])
        if bad.size:
            raise DatasetError(
                f"mask {path} holds class indices {bad.tolist()} but classes.txt names only "
                f"{num_classes} classes (0..{num_classes - 1}; 255 = ignore)"
            )
        masks[i] = letterbox_mask(mask, meta, pad_value=IGNORE_INDEX)
    return CachedDataset(images, list(data.classes), metas, masks=masks)
