"""The synthetic-scene generator keeps every promise of its specification."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image

from care_serve.offline.data.generate import generate_dataset
from care_serve.offline.data.synthetic import (
    CLASS_NAMES,
    SceneSpec,
    class_id,
    make_scene,
    scene_rng,
)

SPEC = SceneSpec()


def _scenes(task: str, n: int, seed: int = 7) -> list:
    scenes = []
    for i in range(n):
        rng = scene_rng(seed, task, i)
        kinds = [CLASS_NAMES[i % 3]] if task == "classification" else None
        scenes.append(make_scene(rng, kinds))
    return scenes


@pytest.fixture(scope="module")
def dense_scenes() -> list:
    return _scenes("detection", 40)


def test_class_ids_are_fixed() -> None:
    assert [class_id(n) for n in ("circle", "square", "triangle")] == [1, 2, 3]
    with pytest.raises(ValueError, match=r"known shapes"):
        class_id("hexagon")


def test_image_sizes_and_aspect_ratios(dense_scenes: list) -> None:
    for scene in dense_scenes + _scenes("classification", 20):
        h, w = scene.mask.shape
        assert scene.image.shape == (h, w, 3) and scene.image.dtype == np.uint8
        assert 128 <= w <= 1024 and 128 <= h <= 1024
        assert 0.5 <= w / h <= 2.0


def test_shape_counts(dense_scenes: list) -> None:
    counts = [len(s.shapes) for s in dense_scenes]
    assert min(counts) >= 1 and max(counts) <= 6
    assert len(set(counts)) >= 4  # the count varies
    assert all(len(s.shapes) == 1 for s in _scenes("classification", 12))
    kinds = [s.shapes[0].kind for s in _scenes("classification", 6)]
    assert kinds == ["circle", "square", "triangle"] * 2


def test_shape_sizes(dense_scenes: list) -> None:
    for scene in dense_scenes:
        short = min(scene.mask.shape)
        for shape in scene.shapes:
            x1, y1, x2, y2 = shape.box
            for side in (x2 - x1, y2 - y1):
                assert math.ceil(0.08 * short) <= side <= math.floor(0.40 * short)
            assert 0 <= x1 < x2 <= scene.mask.shape[1] and 0 <= y1 < y2 <= scene.mask.shape[0]
            if shape.kind in ("circle", "square"):
                assert x2 - x1 == y2 - y1


def test_overlap_is_at_most_slight(dense_scenes: list) -> None:
    for scene in dense_scenes:
        for i, a in enumerate(scene.shapes):
            for b in scene.shapes[i + 1 :]:
                iw = min(a.box[2], b.box[2]) - max(a.box[0], b.box[0])
                ih = min(a.box[3], b.box[3]) - max(a.box[1], b.box[1])
                inter = max(iw, 0) * max(ih, 0)
                smaller = min((s.box[2] - s.box[0]) * (s.box[3] - s.box[1]) for s in (a, b))
                assert inter <= SPEC.max_overlap * smaller


def test_mask_and_boxes_agree(dense_scenes: list) -> None:
    for scene in dense_scenes:
        inside_any = np.zeros(scene.mask.shape, bool)
        for shape in scene.shapes:
            x1, y1, x2, y2 = shape.box
            inside_any[y1:y2, x1:x2] = True
        assert (scene.mask[~inside_any] == 0).all()  # no label outside every box
        assert set(np.unique(scene.mask)) <= {0, 1, 2, 3}
        top = scene.shapes[-1]  # drawn last, fully visible: its pixels span its box exactly
        x1, y1, x2, y2 = top.box
        ys, xs = np.nonzero(scene.mask == top.class_id)
        sel = (xs >= x1) & (xs < x2) & (ys >= y1) & (ys < y2)
        assert (xs[sel].min(), ys[sel].min(), xs[sel].max() + 1, ys[sel].max() + 1) == top.box
        for shape in scene.shapes:
            x1, y1, x2, y2 = shape.box
            region = scene.mask[y1:y2, x1:x2] == shape.class_id
            # Slight overlap: most of the shape stays visible (its bbox is at least 40% filled).
            assert region.sum() >= 0.3 * (x2 - x1) * (y2 - y1)


def test_shapes_are_solid_and_contrast_with_background(dense_scenes: list) -> None:
    for scene in dense_scenes:
        assert set(np.unique(scene.instances)) == set(range(len(scene.shapes) + 1))
        for k, shape in enumerate(scene.shapes, start=1):
            visible = scene.instances == k
            assert (scene.mask[visible] == shape.class_id).all()
            assert (scene.image[visible] == np.asarray(shape.colour, np.uint8)).all()
            # The background around the shape (inside its box) is clearly another colour.
            x1, y1, x2, y2 = shape.box
            around = scene.image[y1:y2, x1:x2][scene.instances[y1:y2, x1:x2] == 0]
            if len(around) > 20:
                mean = around.astype(np.float64).mean(axis=0)
                assert np.linalg.norm(mean - np.asarray(shape.colour)) >= 0.9 * SPEC.min_contrast


def test_backgrounds_are_all_kinds(dense_scenes: list) -> None:
    assert {s.background for s in dense_scenes} == {"solid", "gradient", "noise"}


def test_seeded_and_reproducible() -> None:
    a = make_scene(scene_rng(3, "detection", 5))
    b = make_scene(scene_rng(3, "detection", 5))
    c = make_scene(scene_rng(4, "detection", 5))
    assert np.array_equal(a.image, b.image) and a.shapes == b.shapes
    assert a.image.shape != c.image.shape or not np.array_equal(a.image, c.image)


def test_written_formats(tmp_path) -> None:
    generate_dataset("classification", tmp_path / "cls", 6, seed=1, distribution="classic")
    for name in CLASS_NAMES:
        assert len(list((tmp_path / "cls" / "train" / name).glob("*.png"))) == 2
    generate_dataset(
        "detection", tmp_path / "det", 5, seed=1, split="val", image_format="jpg",
        distribution="classic",
    )  # fmt: skip
    coco = json.loads((tmp_path / "det" / "annotations" / "instances_val.json").read_text())
    assert [c["name"] for c in coco["categories"]] == list(CLASS_NAMES)
    assert [c["id"] for c in coco["categories"]] == [1, 2, 3]
    assert len(coco["images"]) == 5 and 5 <= len(coco["annotations"]) <= 30
    for image in coco["images"]:
        with Image.open(tmp_path / "det" / "val" / image["file_name"]) as im:
            assert im.size == (image["width"], image["height"]) and im.format == "JPEG"
    # The boxes are those of the scene drawn from the same seed.
    scene = make_scene(scene_rng(1, "detection", 0))
    boxes = [a["bbox"] for a in coco["annotations"] if a["image_id"] == 1]
    assert boxes == [
        [s.box[0], s.box[1], s.box[2] - s.box[0], s.box[3] - s.box[1]] for s in scene.shapes
    ]
    root = generate_dataset("segmentation", tmp_path / "seg", 4, seed=1, distribution="classic")
    assert (root / "classes.txt").read_text().split() == ["background", *CLASS_NAMES]
    for image_path in sorted((root / "images" / "train").glob("*.png")):
        mask = np.asarray(Image.open(root / "masks" / "train" / image_path.name))
        with Image.open(image_path) as im:
            assert mask.shape == (im.height, im.width)
        assert mask.ndim == 2 and set(np.unique(mask)) <= {0, 1, 2, 3} and mask.max() > 0


def test_bad_arguments(tmp_path) -> None:
    with pytest.raises(ValueError, match=r"unknown task"):
        generate_dataset("depth", tmp_path, 1)
    with pytest.raises(ValueError, match=r"at least 1"):
        generate_dataset("detection", tmp_path, 0)
    with pytest.raises(ValueError, match=r"plain folder name"):
        generate_dataset("detection", tmp_path, 1, split="../x")
