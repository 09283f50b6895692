"""Readers of the three standard formats, and the letterboxed cache built from them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from care_serve.errors import DatasetError
from care_serve.offline.data.generate import generate_dataset
from care_serve.offline.data.readers import read_coco, read_image_folder, read_mask_pairs
from care_serve.offline.data.synthetic import CLASS_NAMES, scene_rng
from care_serve.offline.data.wide import make_wide_scene
from care_serve.offline.training.preprocess import (
    cache_classification,
    cache_detection,
    cache_segmentation,
)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("data")
    generate_dataset("classification", base / "cls", 6, seed=2)
    generate_dataset("detection", base / "det", 4, seed=2)
    generate_dataset("segmentation", base / "seg", 3, seed=2)
    return base


def test_image_folder(root: Path) -> None:
    data = read_image_folder(root / "cls", "train")
    assert data.classes == list(CLASS_NAMES) and len(data) == 6
    assert [p.parent.name for p in data.paths] == [CLASS_NAMES[i] for i in data.labels]
    cached = cache_classification(data, (64, 96), fill=(114, 114, 114))
    assert cached.images.shape == (6, 96, 64, 3) and cached.labels is not None
    meta = cached.metas[0]
    if meta.pad_top:  # the padding is the requested grey
        assert (cached.images[0, 0] == 114).all()


def test_coco(root: Path) -> None:
    data = read_coco(root / "det", "train")
    assert data.classes == list(CLASS_NAMES) and data.category_ids == [1, 2, 3]
    scene = make_wide_scene(scene_rng(2, "detection", 0))  # generate's default distribution
    first = data.samples[0]
    assert (first.width, first.height) == scene.mask.shape[::-1]
    assert first.boxes.tolist() == [list(map(float, s.box)) for s in scene.shapes]
    assert first.labels.tolist() == [s.class_id - 1 for s in scene.shapes]
    cached = cache_detection(data, (96, 96))
    assert cached.boxes is not None
    meta = cached.metas[0]
    mapped = cached.boxes[0]
    # Boxes land on the letterboxed shape: map back and compare with the originals.
    assert np.allclose(meta.boxes_to_original(mapped), first.boxes, atol=1e-3)


def test_mask_pairs(root: Path) -> None:
    data = read_mask_pairs(root / "seg", "train")
    assert data.classes == ["background", *CLASS_NAMES] and len(data) == 3
    assert [m.name for m in data.masks] == [i.name for i in data.images]
    cached = cache_segmentation(data, (64, 64))
    assert cached.masks is not None and cached.masks.shape == (3, 64, 64)
    values = set(np.unique(cached.masks))
    assert values <= {0, 1, 2, 3, 255} and values & {1, 2, 3}
    meta = cached.metas[0]
    if meta.pad_top:  # padding is ignored by the loss
        assert (cached.masks[0, 0] == 255).all()


def test_reader_errors(root: Path, tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"no split 'val'.*found folders: train"):
        read_image_folder(root / "cls", "val")
    with pytest.raises(DatasetError, match=r"not found"):
        read_image_folder(tmp_path / "nothing")
    (tmp_path / "one" / "train" / "cat").mkdir(parents=True)
    with pytest.raises(DatasetError, match=r"at least two class folders"):
        read_image_folder(tmp_path / "one")
    with pytest.raises(DatasetError, match=r"instances_val.json"):
        read_coco(root / "det", "val")
    bad = tmp_path / "bad"
    (bad / "annotations").mkdir(parents=True)
    (bad / "train").mkdir()
    (bad / "annotations" / "instances_train.json").write_text("{not json")
    with pytest.raises(DatasetError, match=r"not readable JSON"):
        read_coco(bad)
    (bad / "annotations" / "instances_train.json").write_text(
        json.dumps(
            {
                "categories": [{"id": 1, "name": "a"}],
                "images": [],
                "annotations": [{"id": 1, "image_id": 1, "category_id": 7, "bbox": [0, 0, 1, 1]}],
            }
        )
    )
    with pytest.raises(DatasetError, match=r"category_id among"):
        read_coco(bad)


def test_mask_errors(root: Path, tmp_path: Path) -> None:
    import shutil

    seg = tmp_path / "seg"
    shutil.copytree(root / "seg", seg)
    first = sorted((seg / "masks" / "train").glob("*.png"))[0]
    mask = np.asarray(Image.open(first)).copy()
    mask[0, 0] = 9
    Image.fromarray(mask).save(first)
    with pytest.raises(DatasetError, match=r"class indices \[9\]"):
        cache_segmentation(read_mask_pairs(seg), (64, 64))
    Image.fromarray(mask[:-1]).save(first)
    with pytest.raises(DatasetError, match=r"but its image is"):
        cache_segmentation(read_mask_pairs(seg), (64, 64))
    first.unlink()
    with pytest.raises(DatasetError, match=r"has no mask"):
        read_mask_pairs(seg)
    (seg / "classes.txt").unlink()
    with pytest.raises(DatasetError, match=r"classes.txt"):
        read_mask_pairs(seg)
