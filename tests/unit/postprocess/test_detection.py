"""Detection post-processing: decode, NMS against brute force, end to end on known boxes."""

from __future__ import annotations

import numpy as np
import pytest

from care_serve.errors import InvalidInput
from care_serve.imaging.letterbox import make_letterbox_meta
from care_serve.postprocess.detection import (
    DETECTION_STRIDES,
    batched_nms,
    box_iou,
    decode_boxes,
    make_points,
    nms,
    postprocess_detections,
)

# Tiny tensors: one torch thread (see the fixture in tests/conftest.py).
pytestmark = pytest.mark.usefixtures("single_thread_torch")


def _iou_loop(a: np.ndarray, b: np.ndarray) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _nms_brute_force(
    boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, thr: float
) -> list[int]:
    """Per class, best first, keep a box unless it overlaps a kept one by more than ``thr``."""
    kept: list[int] = []
    for c in sorted(set(classes.tolist())):
        idx = sorted(np.nonzero(classes == c)[0].tolist(), key=lambda i: -scores[i])
        mine: list[int] = []
        for i in idx:
            if all(_iou_loop(boxes[i], boxes[j]) <= thr for j in mine):
                mine.append(i)
        kept += mine
    return sorted(kept, key=lambda i: -scores[i])


def _clustered_boxes(rng: np.random.Generator, n: int) -> np.ndarray:
    centres = rng.uniform(0, 200, (max(1, n // 8), 2))
    c = centres[rng.integers(0, len(centres), n)] + rng.normal(0, 6, (n, 2))
    wh = rng.uniform(5, 60, (n, 2))
    return np.concatenate([c - wh / 2, c + wh / 2], axis=1)


def test_make_points_and_decode_match_a_loop_reference() -> None:
    h, w = 64, 96
    points, strides = make_points(h, w)
    rng = np.random.default_rng(0)
    ltrb = rng.uniform(0, 5, (points.shape[0], 4)).astype(np.float32)
    boxes = decode_boxes(ltrb, points, strides)
    n = 0
    for s in DETECTION_STRIDES:
        for i in range(h // s):
            for j in range(w // s):
                cx, cy = j * s + s / 2, i * s + s / 2
                assert (points[n, 0], points[n, 1], strides[n]) == (cx, cy, s)
                ref = [
                    cx - ltrb[n, 0] * s,
                    cy - ltrb[n, 1] * s,
                    cx + ltrb[n, 2] * s,
                    cy + ltrb[n, 3] * s,
                ]
                np.testing.assert_allclose(boxes[n], ref, rtol=1e-6, atol=1e-4)
                n += 1
    assert n == points.shape[0]


def test_box_iou_matches_loop() -> None:
    rng = np.random.default_rng(1)
    a, b = _clustered_boxes(rng, 30), _clustered_boxes(rng, 20)
    iou = box_iou(a, b)
    ref = np.array([[_iou_loop(x, y) for y in b] for x in a])
    np.testing.assert_allclose(iou, ref, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("thr", [0.3, 0.5, 0.7])
def test_class_aware_nms_matches_brute_force(seed: int, thr: float) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 160))
    boxes = _clustered_boxes(rng, n)
    scores = rng.random(n)
    classes = rng.integers(0, 4, n)
    keep = batched_nms(boxes, scores, classes, thr)
    assert keep.tolist() == _nms_brute_force(boxes, scores, classes, thr)
    # Single-class NMS is the same with all classes equal.
    single = nms(boxes, scores, thr)
    assert single.tolist() == _nms_brute_force(boxes, scores, np.zeros(n, int), thr)
    # max_keep returns the first boxes of the full result.
    assert batched_nms(boxes, scores, classes, thr, max_keep=3).tolist() == keep[:3].tolist()


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("thr", [0.3, 0.5, 0.7])
def test_class_agnostic_nms_matches_brute_force(seed: int, thr: float) -> None:
    """Over all classes at once, best first: the classes play no part."""
    rng = np.random.default_rng(100 + seed)
    n = int(rng.integers(1, 160))
    boxes = _clustered_boxes(rng, n)
    scores = rng.random(n)
    keep = nms(boxes, scores, thr)
    ref: list[int] = []
    for i in sorted(range(n), key=lambda i: -scores[i]):
        if all(_iou_loop(boxes[i], boxes[j]) <= thr for j in ref):
            ref.append(i)
    assert keep.tolist() == ref
    assert nms(boxes, scores, thr, max_keep=2).tolist() == ref[:2]


def test_class_agnostic_postprocess_keeps_one_box_per_object() -> None:
    """One object scored for two classes at its points: one box, of the better class."""
    meta_size = (200, 160, 128, 128)
    meta = make_letterbox_meta(*meta_size)
    rng = np.random.default_rng(7)
    boxes = np.array([[20.0, 20.0, 80.0, 90.0], [120.0, 100.0, 190.0, 150.0]])
    cls_logits, box_ltrb, _ = _synthetic_outputs(rng, meta_size, boxes, np.array([0, 2]), 3)
    # The same points also score class 1, a little lower than their own class.
    cls_logits[:, 1] = np.maximum(cls_logits[:, 0], cls_logits[:, 2]) - 0.5
    aware = postprocess_detections(cls_logits, box_ltrb, meta, score_threshold=0.5)
    agnostic = postprocess_detections(
        cls_logits, box_ltrb, meta, score_threshold=0.5, class_agnostic=True
    )
    assert sorted(aware.class_ids.tolist()) == [0, 1, 1, 2]  # each object twice
    assert agnostic.class_ids.tolist() == [0, 2]
    np.testing.assert_allclose(agnostic.boxes, boxes, atol=0.5)
    np.testing.assert_array_equal(agnostic.scores, aware.scores[np.isin(aware.class_ids, [0, 2])])


def test_nms_of_nothing_is_empty() -> None:
    empty = np.zeros((0, 4))
    assert batched_nms(empty, np.zeros(0), np.zeros(0, int), 0.5).shape == (0,)
    assert nms(empty, np.zeros(0), 0.5).shape == (0,)


def _synthetic_outputs(
    rng: np.random.Generator,
    meta_size: tuple[int, int, int, int],
    boxes: np.ndarray,
    classes: np.ndarray,
    num_classes: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Raw network outputs that predict ``boxes`` (original pixels) from several points each.

    The best point of each box predicts it exactly; a few neighbours predict
    jittered copies with lower scores, which NMS must remove. Returns the
    outputs and each box's top score.
    """
    meta = make_letterbox_meta(*meta_size)
    points, strides = make_points(meta.input_height, meta.input_width)
    cls_logits = np.full((points.shape[0], num_classes), -12.0, np.float32)
    box_ltrb = np.ones((points.shape[0], 4), np.float32)
    in_boxes = meta.boxes_to_input(boxes)
    top_scores = np.empty(len(boxes))
    used: set[int] = set()
    for k, (b, c) in enumerate(zip(in_boxes, classes, strict=True)):
        centre = np.array([(b[0] + b[2]) / 2, (b[1] + b[3]) / 2])
        near = np.argsort(np.abs(points - centre).sum(axis=1) + 1e3 * (strides != 8))[:4]
        near = [i for i in near if i not in used]
        assert near, "test boxes too close together"
        for rank, i in enumerate(near):
            used.add(int(i))
            jitter = b + (rng.normal(0, 0.5, 4) if rank else 0.0)
            p, s = points[i], strides[i]
            box_ltrb[i] = [(p[0] - jitter[0]) / s, (p[1] - jitter[1]) / s,
                           (jitter[2] - p[0]) / s, (jitter[3] - p[1]) / s]  # fmt: skip
            cls_logits[i, c] = 4.0 - rank - 0.1 * k
        top_scores[k] = 1 / (1 + np.exp(-(4.0 - 0.1 * k)))
    return cls_logits, box_ltrb, top_scores


@pytest.mark.parametrize(
    "meta_size",
    [(37, 291, 320, 320), (291, 37, 320, 320), (640, 480, 320, 256), (150, 299, 256, 320)],
)
def test_end_to_end_recovers_known_boxes(meta_size: tuple[int, int, int, int]) -> None:
    rng = np.random.default_rng(sum(meta_size))
    w, h = meta_size[:2]
    # Three boxes far apart in the image: left-top, centre, right-bottom.
    boxes = np.array(
        [
            [0.05 * w, 0.05 * h, 0.30 * w, 0.30 * h],
            [0.40 * w, 0.40 * h, 0.60 * w, 0.62 * h],
            [0.70 * w, 0.72 * h, 0.95 * w, 0.97 * h],
        ]
    )
    classes = np.array([2, 0, 1])
    cls_logits, box_ltrb, top = _synthetic_outputs(rng, meta_size, boxes, classes, 3)
    meta = make_letterbox_meta(*meta_size)
    dets = postprocess_detections(
        cls_logits, box_ltrb, meta, score_threshold=0.5, iou_threshold=0.5
    )
    assert len(dets) == 3
    np.testing.assert_allclose(dets.boxes, boxes, rtol=0, atol=1e-3 * max(w, h))
    np.testing.assert_array_equal(dets.class_ids, classes)
    np.testing.assert_allclose(dets.scores, top, rtol=1e-5)
    # Thresholds and limits.
    assert len(postprocess_detections(cls_logits, box_ltrb, meta, max_detections=2)) == 2
    high = postprocess_detections(cls_logits, box_ltrb, meta, score_threshold=float(top[1]) + 1e-4)
    assert len(high) == 1
    loose = postprocess_detections(
        cls_logits, box_ltrb, meta, score_threshold=0.5, iou_threshold=1.0
    )
    assert len(loose) > 3  # without suppression the jittered copies survive


def test_nothing_above_threshold_gives_no_detections() -> None:
    meta = make_letterbox_meta(100, 100, 64, 64)
    n = make_points(64, 64)[0].shape[0]
    dets = postprocess_detections(np.full((n, 2), -9.0), np.ones((n, 4)), meta)
    assert len(dets) == 0 and dets.boxes.shape == (0, 4)


def test_bad_parameters_and_shapes_are_rejected() -> None:
    meta = make_letterbox_meta(100, 100, 64, 64)
    n = make_points(64, 64)[0].shape[0]
    logits, ltrb = np.zeros((n, 2)), np.ones((n, 4))
    with pytest.raises(InvalidInput, match="score_threshold"):
        postprocess_detections(logits, ltrb, meta, score_threshold=1.5)
    with pytest.raises(InvalidInput, match="iou_threshold"):
        postprocess_detections(logits, ltrb, meta, iou_threshold=-0.1)
    with pytest.raises(InvalidInput, match="max_detections"):
        postprocess_detections(logits, ltrb, meta, max_detections=0)
    with pytest.raises(InvalidInput, match="pre_nms_top_k"):
        postprocess_detections(logits, ltrb, meta, pre_nms_top_k=0)
    with pytest.raises(ValueError, match="expected cls_logits"):
        postprocess_detections(logits[:-1], ltrb[:-1], meta)


def test_boxes_are_clipped_to_the_image_and_padding_boxes_dropped() -> None:
    meta = make_letterbox_meta(100, 50, 128, 128)  # content rows 32..96 of the input
    assert (meta.pad_top, meta.resized_height) == (32, 64)
    points, strides = make_points(128, 128)
    cls_logits = np.full((points.shape[0], 1), -10.0, np.float32)
    box_ltrb = np.zeros((points.shape[0], 4), np.float32)

    def predict(i: int, box: list[float], logit: float) -> None:
        p, s = points[i], strides[i]
        box_ltrb[i] = [(p[0] - box[0]) / s, (p[1] - box[1]) / s, (box[2] - p[0]) / s,
                       (box[3] - p[1]) / s]  # fmt: skip
        cls_logits[i, 0] = logit

    predict(0, [0.0, 0.0, 8.0, 8.0], 5.0)  # entirely in the top padding: dropped
    inside = int(np.argmin(np.abs(points - [60.0, 60.0]).sum(axis=1)))
    predict(inside, [40.0, 20.0, 140.0, 80.0], 4.0)  # crosses the top and right edges
    dets = postprocess_detections(cls_logits, box_ltrb, meta, score_threshold=0.5)
    assert len(dets) == 1
    np.testing.assert_allclose(dets.boxes[0], [40 / 1.28, 0.0, 100.0, 48 / 1.28], atol=1e-4)
