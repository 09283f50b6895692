"""Readers for the three standard dataset formats.

- Image folders (classification): ``DATA/SPLIT/<class>/*.png|jpg|jpeg``; classes
  are the sub-folder names in sorted order (torchvision's ``ImageFolder``).
- COCO (detection): ``DATA/annotations/instances_SPLIT.json`` with the images in
  ``DATA/SPLIT/`` (the COCO 2017 layout: ``--split train2017`` reads the real
  thing). Crowd annotations are skipped; categories are mapped to contiguous
  labels ``0..K-1`` in increasing category-id order.
- Image/mask pairs (segmentation): ``DATA/images/SPLIT/<stem>.png|jpg`` and
  ``DATA/masks/SPLIT/<stem>.png`` (or ``DATA/annotations/SPLIT``, the ADE20K
  layout), a single-channel PNG of class indices, 0 = background and 255 =
  ignore; class names from ``DATA/classes.txt`` (line i = class i).

Readers only list files and labels; images are decoded later
(``care_serve.offline.training.preprocess``). Every problem raises ``DatasetError`` with
the layout that was expected.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from care_serve.errors import DatasetError

__all__ = [
    "IGNORE_INDEX",
    "IMAGE_EXTENSIONS",
    "ClassificationData",
    "DetectionData",
    "DetectionSample",
    "SegmentationData",
    "load_mask",
    "read_coco",
    "read_image_folder",
    "read_mask_pairs",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
IGNORE_INDEX = 255


def _images_in(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
    )


def _split_dir(root: Path, split: str, layout: str) -> Path:
    if not root.is_dir():
        raise DatasetError(f"dataset directory not found: {root} (expected {layout})")
    path = root / split
    if not path.is_dir():
        found = sorted(p.name for p in root.iterdir() if p.is_dir())
        raise DatasetError(
            f"no split {split!r} in {root}: expected {layout}; found folders: "
            f"{', '.join(found) or 'none'}"
        )
    return path


@dataclass
class ClassificationData:
    """Image paths with class indices into ``classes``."""

    paths: list[Path]
    labels: np.ndarray
    classes: list[str]

    def __len__(self) -> int:
        return len(self.paths)


def read_image_folder(root: str | os.PathLike[str], split: str = "train") -> ClassificationData:
    """Read ``root/split/<class>/*`` (see the module docstring)."""
    layout = "DATA/SPLIT/<class>/*.png|jpg"
    folder = _split_dir(Path(root), split, layout)
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise DatasetError(
            f"{folder} needs at least two class folders ({layout}); found {classes or 'none'}"
        )
    paths: list[Path] = []
    labels: list[int] = []
    for index, name in enumerate(classes):
        files = _images_in(folder / name)
        if not files:
            raise DatasetError(f"class folder {folder / name} holds no .png/.jpg/.jpeg images")
        paths += files
        labels += [index] * len(files)
    return ClassificationData(paths, np.asarray(labels, np.int64), classes)


@dataclass
class DetectionSample:
    """One image: boxes ``(n, 4)`` xyxy in its pixels and contiguous labels ``(n,)``."""

    path: Path
    width: int
    height: int
    boxes: np.ndarray
    labels: np.ndarray


@dataclass
class DetectionData:
    """COCO images with their boxes; ``category_ids[label]`` is the COCO id of a label."""

    samples: list[DetectionSample]
    classes: list[str]
    category_ids: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.samples)


def _load_json(path: Path) -> dict[str, object]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise DatasetError(
            f"COCO annotation file not found: {path} (expected DATA/annotations/"
            f"instances_SPLIT.json with the images in DATA/SPLIT/)"
        ) from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{path}: not readable JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: expected a COCO JSON object, got {type(data).__name__}")
    return data


def _coco_list(data: dict[str, object], key: str, path: Path) -> list[dict[str, object]]:
    value = data.get(key)
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise DatasetError(f"{path}: COCO field {key!r} must be a list of objects")
    return value


def read_coco(root: str | os.PathLike[str], split: str = "train") -> DetectionData:
    """Read ``root/annotations/instances_<split>.json`` and ``root/<split>/`` images."""
    root = Path(root)
    ann_path = root / "annotations" / f"instances_{split}.json"
    data = _load_json(ann_path)
    image_dir = _split_dir(
        root, split, "DATA/SPLIT/*.png|jpg + DATA/annotations/instances_SPLIT.json"
    )
    categories = sorted(_coco_list(data, "categories", ann_path), key=lambda c: int(str(c["id"])))
    if not categories:
        raise DatasetError(f"{ann_path}: 'categories' is empty")
    category_ids = [int(str(c["id"])) for c in categories]
    label_of = {cid: i for i, cid in enumerate(category_ids)}
    per_image: dict[int, list[tuple[list[float], int]]] = {}
    for ann in _coco_list(data, "annotations", ann_path):
        if ann.get("iscrowd", 0):
            continue
        bbox, cid = ann.get("bbox"), ann.get("category_id")
        if not isinstance(bbox, list) or len(bbox) != 4 or cid not in label_of:
            raise DatasetError(
                f"{ann_path}: annotation {ann.get('id')} needs bbox [x, y, w, h] and a "
                f"category_id among {category_ids}"
            )
        x, y, w, h = (float(v) for v in bbox)
        if w <= 0 or h <= 0:
            continue
        per_image.setdefault(int(str(ann["image_id"])), []).append(
            ([x, y, x + w, y + h], label_of[int(str(cid))])
        )
    samples = []
    for image in _coco_list(data, "images", ann_path):
        path = image_dir / str(image["file_name"])
        if not path.is_file():
            raise DatasetError(f"{ann_path}: image {image['file_name']!r} not found in {image_dir}")
        anns = per_image.get(int(str(image["id"])), [])
        boxes = np.asarray([a[0] for a in anns], np.float32).reshape(-1, 4)
        labels = np.asarray([a[1] for a in anns], np.int64)
        samples.append(
            DetectionSample(
                path, int(str(image["width"])), int(str(image["height"])), boxes, labels
            )
        )
    if not samples:
        raise DatasetError(f"{ann_path}: 'images' is empty")
    names = [str(c.get("name", f"class_{c['id']}")) for c in categories]
    return DetectionData(samples, names, category_ids)


@dataclass
class SegmentationData:
    """Image paths with their mask paths; ``classes[0]`` is the background."""

    images: list[Path]
    masks: list[Path]
    classes: list[str]

    def __len__(self) -> int:
        return len(self.images)


def read_mask_pairs(root: str | os.PathLike[str], split: str = "train") -> SegmentationData:
    """Read ``root/images/<split>`` with ``root/masks/<split>`` (or ``annotations``)."""
    root = Path(root)
    layout = "DATA/images/SPLIT/*.png|jpg + DATA/masks/SPLIT/*.png + DATA/classes.txt"
    image_dir = _split_dir(root / "images", split, layout)
    mask_root = root / "masks" if (root / "masks").is_dir() else root / "annotations"
    mask_dir = _split_dir(mask_root, split, layout)
    classes_file = root / "classes.txt"
    if not classes_file.is_file():
        raise DatasetError(f"{classes_file} not found: one class name a line, line 1 = background")
    classes = [line.strip() for line in classes_file.read_text(encoding="utf-8").splitlines()]
    classes = [c for c in classes if c]
    if len(classes) < 2:
        raise DatasetError(f"{classes_file} must name the background and at least one class")
    images = _images_in(image_dir)
    if not images:
        raise DatasetError(f"{image_dir} holds no .png/.jpg/.jpeg images")
    masks = []
    for image in images:
        mask = mask_dir / f"{image.stem}.png"
        if not mask.is_file():
            raise DatasetError(
                f"image {image.name} has no mask {mask} (masks are PNGs named alike)"
            )
        masks.append(mask)
    return SegmentationData(images, masks, classes)


def load_mask(path: Path) -> np.ndarray:
    """A segmentation mask PNG as uint8 class indices; ``DatasetError`` if it is not one."""
    try:
        with Image.open(path) as image:
            mask = np.asarray(image)
    except (OSError, ValueError, SyntaxError) as exc:
        raise DatasetError(f"cannot decode mask {path}: {exc}") from None
    if mask.ndim != 2:
        raise DatasetError(
            f"mask {path} has shape {mask.shape}; masks must be single-channel PNGs of class "
            "indices (mode L or P)"
        )
    return mask.astype(np.uint8)
