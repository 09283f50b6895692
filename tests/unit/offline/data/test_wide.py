"""The wide scene distribution keeps the ranges it documents, and its styles reach the files."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image

from care_serve.offline.data.generate import generate_dataset
from care_serve.offline.data.synthetic import CLASS_NAMES, scene_rng
from care_serve.offline.data.wide import (
    BACKGROUNDS,
    LINE_WIDTHS,
    SIZE_BUCKETS,
    WideSpec,
    make_wide_scene,
)
from care_serve.offline.evaluation.buckets import image_buckets, load_styles, shape_buckets

SPEC = WideSpec()


@pytest.fixture(scope="module")
def scenes() -> list:
    return [make_wide_scene(scene_rng(11, "detection", i)) for i in range(36)]


def test_image_sides_and_aspect_ratios(scenes: list) -> None:
    sides = []
    for scene in scenes:
        h, w = scene.mask.shape
        assert scene.image.shape == (h, w, 3) and scene.image.dtype == np.uint8
        assert SPEC.min_side <= min(w, h) and max(w, h) <= SPEC.max_side
        assert max(w, h) >= SPEC.min_long
        assert 1 / 2.01 <= w / h <= 2.01
        sides.append(max(w, h))
    assert max(sides) > 1500 and min(sides) < 400  # large and small images both occur
    ratios = {round(max(s.mask.shape) / min(s.mask.shape), 2) for s in scenes}
    assert len(ratios) >= 8 and {1.0, 1.33, 1.78} & ratios  # common and free aspect ratios


def test_shape_sizes_cover_5_to_95_percent(scenes: list) -> None:
    sizes = []
    for scene in scenes:
        h, w = scene.mask.shape
        assert len(scene.style["shapes"]) == len(scene.shapes) >= 1
        for shape, attrs in zip(scene.shapes, scene.style["shapes"], strict=True):
            x1, y1, x2, y2 = shape.box
            assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h
            assert SPEC.min_shape - 0.01 <= attrs["size"] <= SPEC.max_shape
            if not attrs["cut"]:  # an uncut box is the whole shape: its larger side is the size
                assert max(x2 - x1, y2 - y1) == pytest.approx(attrs["size"] * min(h, w), abs=1)
            else:  # a cut shape's box touches the border
                assert x1 == 0 or y1 == 0 or x2 == w or y2 == h
            sizes.append(attrs["size"])
    assert min(sizes) < 0.1 and max(sizes) > 0.8
    found = {b for s in scenes for b in (a["size_bucket"] for a in s.style["shapes"])}
    assert found == {name for name, _ in SIZE_BUCKETS}


def test_every_style_occurs(scenes: list) -> None:
    assert {s.style["background"] for s in scenes} == set(BACKGROUNDS)
    attrs = [a for s in scenes for a in s.style["shapes"]]
    assert {a["fill"] for a in attrs} == {"filled", "outline"}
    assert {a["line_width"] for a in attrs if a["fill"] == "outline"} == set(LINE_WIDTHS)
    assert any(a["cut"] for a in attrs) and not all(a["cut"] for a in attrs)
    for key in ("blur", "noise", "jpeg"):
        flags = [bool(s.style[key]) for s in scenes]
        assert any(flags) and not all(flags), key
    assert {s.style["jpeg"] for s in scenes if s.style["jpeg"]} <= set(range(25, 86))
    kinds = {s.kind for s in scenes for s in s.shapes}
    assert kinds == set(CLASS_NAMES)


def test_masks_hold_the_painted_pixels(scenes: list) -> None:
    for scene in scenes:
        assert scene.instances is not None
        inside = np.zeros(scene.mask.shape, bool)
        pairs = zip(scene.shapes, scene.style["shapes"], strict=True)
        for k, (shape, attrs) in enumerate(pairs, start=1):
            x1, y1, x2, y2 = shape.box
            inside[y1:y2, x1:x2] = True
            own = scene.instances == k
            assert own.any() and (scene.mask[own] == shape.class_id).all()
            box_area = (x2 - x1) * (y2 - y1)
            if attrs["fill"] == "outline" and not attrs["cut"] and attrs["size"] > 0.3:
                assert own.sum() < 0.6 * box_area  # a stroke, not the inside
        assert (scene.mask[~inside] == 0).all()


def test_seeded_and_reproducible() -> None:
    a = make_wide_scene(scene_rng(3, "detection", 5))
    b = make_wide_scene(scene_rng(3, "detection", 5))
    c = make_wide_scene(scene_rng(4, "detection", 5))
    assert np.array_equal(a.image, b.image) and a.shapes == b.shapes and a.style == b.style
    assert a.image.shape != c.image.shape or not np.array_equal(a.image, c.image)


def test_classification_scenes_hold_one_given_shape() -> None:
    for i, kind in enumerate(CLASS_NAMES * 2):
        scene = make_wide_scene(scene_rng(2, "classification", i), [kind])
        assert [s.kind for s in scene.shapes] == [kind]


def test_written_styles_match_the_files(tmp_path) -> None:
    root = generate_dataset("segmentation", tmp_path / "seg", 3, seed=4, split="val")
    styles = load_styles(root, "val")
    assert styles is not None and sorted(styles) == [f"images/val/{i:06d}.png" for i in range(3)]
    marker = json.loads((root / "generator_val.json").read_text())
    assert marker["distribution"] == "wide"
    for key, style in styles.items():
        instances = np.asarray(Image.open(root / "instances" / "val" / key.split("/")[-1]))
        assert int(instances.max()) == len(style["shapes"])
        assert image_buckets(style) and all(shape_buckets(a) for a in style["shapes"])
    generate_dataset("detection", tmp_path / "det", 4, seed=4)
    coco = json.loads((tmp_path / "det" / "annotations" / "instances_train.json").read_text())
    det_styles = load_styles(tmp_path / "det", "train")
    assert det_styles is not None
    for image in coco["images"]:
        anns = [a for a in coco["annotations"] if a["image_id"] == image["id"]]
        assert len(det_styles[f"train/{image['file_name']}"]["shapes"]) == len(anns)
        for a in anns:
            assert a["area"] <= a["bbox"][2] * a["bbox"][3]
            assert a["bbox"][0] + a["bbox"][2] <= image["width"]
    with pytest.raises(ValueError, match=r"distribution must be one of wide, classic"):
        generate_dataset("detection", tmp_path / "x", 1, distribution="fancy")


def test_classic_distribution_is_unchanged() -> None:
    """Old seeds keep their scenes: the classic sizes stay in 8-40% of the shorter side."""
    from care_serve.offline.data.synthetic import make_scene

    scene = make_scene(scene_rng(1, "detection", 0))
    assert scene.style["distribution"] == "classic"
    short = min(scene.mask.shape)
    for shape in scene.shapes:
        side = max(shape.box[2] - shape.box[0], shape.box[3] - shape.box[1])
        assert math.ceil(0.08 * short) <= side <= math.floor(0.40 * short)
