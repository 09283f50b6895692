"""The bundled demo models answer correctly on fresh synthetic scenes, end to end."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from PIL import Image

from tests.helpers.dense import decode_png, post, rest_dets
from tests.helpers.packages import png_bytes
from tests.helpers.paths import ROOT
from tests.helpers.stacks import serving_stack

# ---------------------------------------------------------------------------
# End to end: the trained shapes models find the shapes in fresh synthetic scenes
# ---------------------------------------------------------------------------

MODEL_STORE = ROOT / "model_store"
TRAINED = ("shapes-classifier", "shapes-detector", "shapes-segmenter")
E2E_SCENES = 6
E2E_SEED = 2024  # training used seed 0, validation seed 1


def _box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    return np.asarray(inter / (area_a[:, None] + area_b[None, :] - inter))


def _matched(gt_boxes: np.ndarray, gt_labels: list[str], body: dict[str, Any]) -> int:
    """Ground-truth boxes matched one-to-one (best score first) at IoU >= 0.5, same class."""
    boxes, _, _ = rest_dets(body)
    labels = [d["label"] for d in body["detections"]]
    if not len(boxes):
        return 0
    iou = _box_iou(gt_boxes, boxes)
    taken: set[int] = set()
    for j in range(len(boxes)):  # detections come best first
        candidates = [
            i for i in range(len(gt_boxes)) if i not in taken and gt_labels[i] == labels[j]
        ]
        if candidates:
            best = max(candidates, key=lambda i: iou[i, j])
            if iou[best, j] >= 0.5:
                taken.add(best)
    return len(taken)


def _assert_one_box_per_shape(gt: np.ndarray, boxes: np.ndarray, where: str) -> None:
    """No two answered boxes on one place (IoU > 0.5), no shape covered by two (IoU >= 0.5)."""
    if len(boxes):
        pairs = _box_iou(boxes, boxes)[np.triu_indices(len(boxes), 1)]
        assert not np.any(pairs > 0.5), f"{where}: two boxes on one place"
        covering = (_box_iou(gt, boxes) >= 0.5).sum(axis=1)
        assert covering.max() <= 1, f"{where}: a shape answered twice"


def _class_miou(mask: np.ndarray, truth: np.ndarray) -> float:
    """Mean IoU over the classes present in either mask (background included)."""
    ious = []
    for c in np.union1d(np.unique(mask), np.unique(truth)):
        inter = np.sum((mask == c) & (truth == c))
        ious.append(inter / np.sum((mask == c) | (truth == c)))
    return float(np.mean(ious))


def test_bundled_demo_models_answer_correctly_on_fresh_scenes() -> None:
    """The shipped shapes-* packages, served end to end, on scenes no training run saw."""
    from care_serve.offline.data.synthetic import CLASS_NAMES, SceneSpec, make_scene, scene_rng

    spec = SceneSpec(min_side=160, max_side=640)
    det_full = boxes_found = boxes_total = cls_right = seg_good = 0
    confusion = np.zeros((len(CLASS_NAMES) + 1,) * 2, np.int64)  # truth x answer, 0 = background
    with serving_stack(MODEL_STORE, models=list(TRAINED)) as served:
        for index in range(E2E_SCENES):
            kind = CLASS_NAMES[index % len(CLASS_NAMES)]
            scene = make_scene(scene_rng(E2E_SEED, "classification", index), [kind], spec)
            data = png_bytes(Image.fromarray(scene.image))
            top = post(served, "/classify", data, model="shapes-classifier").json()
            cls_right += int(top["predictions"][0]["label"] == scene.shapes[0].kind)

            scene = make_scene(scene_rng(E2E_SEED, "detection", index), spec=spec)
            data = png_bytes(Image.fromarray(scene.image))
            body = post(served, "/detect", data, model="shapes-detector").json()
            gt = np.asarray([s.box for s in scene.shapes], np.float64)
            found = _matched(gt, [s.kind for s in scene.shapes], body)
            det_full += int(found == len(scene.shapes))
            boxes_found += found
            boxes_total += len(scene.shapes)

            scene = make_scene(scene_rng(E2E_SEED, "segmentation", index), spec=spec)
            data = png_bytes(Image.fromarray(scene.image))
            response = post(served, "/segment", data, model="shapes-segmenter", format="png")
            mask = np.asarray(decode_png(response.content))
            assert mask.shape == scene.mask.shape
            seg_good += int(_class_miou(mask, scene.mask) >= 0.75)
            pairs = scene.mask.astype(np.int64).ravel() * len(confusion) + mask.ravel()
            confusion += np.bincount(pairs, minlength=confusion.size).reshape(confusion.shape)
    # Most scenes have every shape found, and nearly every shape is found.
    assert det_full >= 2 * E2E_SCENES // 3, f"every shape found in only {det_full} scenes"
    assert boxes_found >= 0.85 * boxes_total, f"found {boxes_found} of {boxes_total} shapes"
    # Segmentation gets the classes right: per-scene mIoU (over the classes in either mask, so
    # a stray region of a wrong class counts) >= 0.75 in most scenes, and mIoU over all pixels
    # of the scenes (the model card's measure) at least 0.9.
    assert seg_good >= 2 * E2E_SCENES // 3, f"classes segmented well in only {seg_good} scenes"
    inter = np.diag(confusion)
    miou = float(np.mean(inter / (confusion.sum(0) + confusion.sum(1) - inter)))
    assert miou >= 0.9, f"mIoU {miou:.3f} on the classic scenes"
    assert cls_right >= E2E_SCENES - 1, f"classified {cls_right} of {E2E_SCENES} scenes"


ONCE_SCENES = 12
ONCE_SEED = 2025  # a seed no training or evaluation run used


def test_bundled_detector_finds_each_shape_once_at_the_served_default() -> None:
    """At the manifest's defaults (class-agnostic NMS, its score threshold), one box per shape.

    Over REST, with no request parameters: no two answered boxes overlap by IoU
    > 0.5 whatever their classes, no shape is covered (IoU >= 0.5) by two boxes,
    and nearly every shape is found with its class.
    """
    from care_serve.offline.data.synthetic import SceneSpec, make_scene, scene_rng

    manifest = json.loads((MODEL_STORE / "shapes-detector" / "1" / "manifest.json").read_text())
    assert manifest["postprocessing"]["class_agnostic_nms"] is True
    spec = SceneSpec(min_side=160, max_side=640)
    shapes = found = 0
    with serving_stack(MODEL_STORE, models=["shapes-detector"]) as served:
        for index in range(ONCE_SCENES):
            scene = make_scene(scene_rng(ONCE_SEED, "detection", index), spec=spec)
            data = png_bytes(Image.fromarray(scene.image))
            response = post(served, "/detect", data, model="shapes-detector")
            assert response.status_code == 200, response.text
            body = response.json()
            gt = np.asarray([s.box for s in scene.shapes], np.float64)
            _assert_one_box_per_shape(gt, rest_dets(body)[0], f"scene {index}")
            shapes += len(gt)
            found += _matched(gt, [s.kind for s in scene.shapes], body)
    assert found >= 0.9 * shapes, f"found {found} of {shapes} shapes"


WIDE_SEED = 2026  # a seed no training or evaluation run used


def _wide_cases() -> list[tuple[str, Any]]:
    """(case, WideSpec): large filled shapes, outlines only, and the whole wide distribution."""
    from care_serve.offline.data.wide import WideSpec

    return [
        ("large", WideSpec(max_side=1024, min_shape=0.7, p_outline=0.0, max_shapes=2)),
        ("outline", WideSpec(max_side=1024, min_shape=0.15, max_shape=0.6, p_outline=1.0)),
        ("wide", WideSpec(max_side=1024)),
    ]


def test_bundled_models_on_fresh_wide_scenes_find_each_shape_once() -> None:
    """Large shapes (>= 70% of the shorter side), outlines and mixed wide scenes, over REST.

    Everywhere: no two answered boxes on one place and no shape answered twice,
    and the classifier names the shape (at most one miss in nine). Large shapes:
    the detector finds every one with its class, and the segmenter reaches a
    per-scene mIoU of at least 0.9. (Outlines and small shapes are the measured
    weak spots, docs/training.md: their recall is reported, not promised here.)
    """
    from care_serve.offline.data.synthetic import CLASS_NAMES, scene_rng
    from care_serve.offline.data.wide import make_wide_scene

    cls_right = cls_total = 0
    with serving_stack(MODEL_STORE, models=list(TRAINED)) as served:
        for case_index, (case, spec) in enumerate(_wide_cases()):
            for i in range(3):
                index = 10 * case_index + i
                kind = CLASS_NAMES[i]
                scene = make_wide_scene(scene_rng(WIDE_SEED, "classification", index), [kind], spec)
                data = png_bytes(Image.fromarray(scene.image))
                top = post(served, "/classify", data, model="shapes-classifier").json()
                cls_right += int(top["predictions"][0]["label"] == kind)
                cls_total += 1

                scene = make_wide_scene(scene_rng(WIDE_SEED, "detection", index), spec=spec)
                response = post(
                    served, "/detect", png_bytes(Image.fromarray(scene.image)),
                    model="shapes-detector",
                )  # fmt: skip
                assert response.status_code == 200, response.text
                body = response.json()
                gt = np.asarray([s.box for s in scene.shapes], np.float64)
                _assert_one_box_per_shape(gt, rest_dets(body)[0], f"{case} scene {i}")
                if case == "large":
                    found = _matched(gt, [s.kind for s in scene.shapes], body)
                    assert found == len(gt), f"large scene {i}: found {found} of {len(gt)}"

                if case == "large":
                    scene = make_wide_scene(scene_rng(WIDE_SEED, "segmentation", index), spec=spec)
                    response = post(
                        served, "/segment", png_bytes(Image.fromarray(scene.image)),
                        model="shapes-segmenter", format="png",
                    )  # fmt: skip
                    mask = np.asarray(decode_png(response.content))
                    assert mask.shape == scene.mask.shape
                    present = np.unique(scene.mask)
                    for c in present:  # the shape and the background, each at IoU >= 0.9
                        both = np.sum((mask == c) & (scene.mask == c))
                        iou = both / np.sum((mask == c) | (scene.mask == c))
                        assert iou >= 0.9, f"large scene {i}: class {c} IoU {iou:.3f}"
                    stray = np.isin(mask, present, invert=True).mean()
                    assert stray <= 1e-3, f"large scene {i}: {stray:.2%} labelled absent classes"
    assert cls_right >= cls_total - 1, f"classified {cls_right} of {cls_total} scenes"
