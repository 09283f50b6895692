"""Write generated scenes to disk in the standard dataset formats (``care-serve generate``).

The scenes come from ``care_serve.offline.data.wide`` (the default) or the classic
distribution of ``care_serve.offline.data.synthetic``; the layouts written are
described in the latter's docstring.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from care_serve.offline.data.synthetic import (
    BACKGROUND,
    CLASS_NAMES,
    IMAGE_FORMATS,
    TASKS,
    Scene,
    class_id,
    make_scene,
    scene_rng,
)
from care_serve.offline.data.wide import make_wide_scene

__all__ = ["DISTRIBUTIONS", "coco_categories", "generate_dataset"]


def _save(array: np.ndarray, path: Path, image_format: str) -> None:
    if image_format == "png":
        Image.fromarray(array).save(path, compress_level=3)
    else:
        Image.fromarray(array).save(path, quality=95)


def _check_args(task: str, count: int, split: str, image_format: str) -> None:
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    if count < 1:
        raise ValueError(f"--count must be at least 1, got {count}")
    if not split or "/" in split or split.startswith("."):
        raise ValueError(
            f"split must be a plain folder name such as 'train' or 'val', got {split!r}"
        )
    if image_format not in IMAGE_FORMATS:
        raise ValueError(
            f"image format must be one of {', '.join(IMAGE_FORMATS)}, got {image_format!r}"
        )


DISTRIBUTIONS: tuple[str, ...] = ("wide", "classic")


def _scene_maker(distribution: str) -> Callable[[np.random.Generator, list[str] | None], Scene]:
    return make_scene if distribution == "classic" else make_wide_scene


def coco_categories() -> list[dict[str, object]]:
    """The COCO ``categories`` list of the shape classes."""
    return [{"id": class_id(n), "name": n, "supercategory": "shape"} for n in CLASS_NAMES]


def generate_dataset(
    task: str,
    output: str | Path,
    count: int,
    seed: int = 0,
    split: str = "train",
    image_format: str = "png",
    progress: bool = False,
    distribution: str = "wide",
) -> Path:
    """Write ``count`` scenes of ``task`` under ``output`` (see the module docstring).

    ``distribution`` is ``wide`` (``care_serve.offline.data.wide``) or ``classic`` (the
    scenes above, as earlier versions drew them from the same seed). Each
    scene's style (background, degradations, and per shape its size bucket,
    fill and line width, border cut) goes to ``OUT/styles_SPLIT.json``, keyed by
    the image path relative to ``OUT``; segmentation also writes instance maps
    (``OUT/instances/SPLIT/*.png``, shape ``i`` of the style list = value
    ``i + 1``). Returns the written split's image folder (classification,
    detection) or the dataset root (segmentation). Segmentation images are
    always PNG.
    """
    from tqdm import tqdm

    _check_args(task, count, split, image_format)
    if distribution not in DISTRIBUTIONS:
        raise ValueError(
            f"distribution must be one of {', '.join(DISTRIBUTIONS)}, got {distribution!r}"
        )
    draw = _scene_maker(distribution)
    styles: dict[str, Any] = {}
    root = Path(output)
    ext = "png" if task == "segmentation" else image_format
    coco: dict[str, list[dict[str, object]]] = {"images": [], "annotations": []}
    if task == "classification":
        for name in CLASS_NAMES:
            (root / split / name).mkdir(parents=True, exist_ok=True)
    elif task == "detection":
        (root / split).mkdir(parents=True, exist_ok=True)
        (root / "annotations").mkdir(parents=True, exist_ok=True)
    else:
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "masks" / split).mkdir(parents=True, exist_ok=True)
        (root / "instances" / split).mkdir(parents=True, exist_ok=True)
        (root / "classes.txt").write_text("\n".join((BACKGROUND, *CLASS_NAMES)) + "\n")
    for i in tqdm(range(count), desc=f"generate {task}", unit="img", disable=not progress):
        rng = scene_rng(seed, task, i)
        if task == "classification":
            kind = CLASS_NAMES[i % len(CLASS_NAMES)]
            scene = draw(rng, [kind])
            relative = f"{split}/{kind}/{split}_{i:06d}.{ext}"
            _save(scene.image, root / relative, ext)
        elif task == "detection":
            scene = draw(rng, None)
            name = f"{i:06d}.{ext}"
            relative = f"{split}/{name}"
            _save(scene.image, root / split / name, ext)
            height, width = scene.mask.shape
            coco["images"].append(
                {"id": i + 1, "file_name": name, "width": width, "height": height}
            )
            assert scene.instances is not None
            for k, shape in enumerate(scene.shapes, start=1):
                x1, y1, x2, y2 = shape.box
                visible = int((scene.instances[y1:y2, x1:x2] == k).sum())
                coco["annotations"].append(
                    {
                        "id": len(coco["annotations"]) + 1,
                        "image_id": i + 1,
                        "category_id": shape.class_id,
                        "bbox": [x1, y1, x2 - x1, y2 - y1],
                        "area": visible,
                        "iscrowd": 0,
                    }
                )
        else:
            scene = draw(rng, None)
            relative = f"images/{split}/{i:06d}.png"
            _save(scene.image, root / relative, "png")
            Image.fromarray(scene.mask).save(root / "masks" / split / f"{i:06d}.png")
            assert scene.instances is not None
            Image.fromarray(scene.instances).save(root / "instances" / split / f"{i:06d}.png")
        styles[relative] = scene.style
    marker: dict[str, Any] = {"tool": "care-serve generate", "task": task, "count": count}
    marker.update({"seed": seed, "split": split, "image_format": ext})
    marker["distribution"] = distribution
    (root / f"generator_{split}.json").write_text(json.dumps(marker) + "\n")
    (root / f"styles_{split}.json").write_text(
        json.dumps({"distribution": distribution, "images": styles})
    )
    if task == "detection":
        document = {
            "info": {"description": f"care-serve synthetic shapes, seed {seed}", "version": "1"},
            "licenses": [],
            "categories": coco_categories(),
            **coco,
        }
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(document))
        return root / split
    if task == "classification":
        return root / split
    return root
