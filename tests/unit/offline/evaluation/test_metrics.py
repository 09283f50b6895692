"""Metrics against cases computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from care_serve.offline.evaluation.metrics import (
    ConfusionMatrix,
    ImageDetections,
    accuracy,
    average_precision,
    box_iou,
    detection_counts,
    mean_average_precision,
)


def _image(gt: list, gt_labels: list, boxes: list, scores: list, labels: list) -> ImageDetections:
    return ImageDetections(
        np.asarray(gt, np.float64).reshape(-1, 4),
        np.asarray(gt_labels, np.int64),
        np.asarray(boxes, np.float64).reshape(-1, 4),
        np.asarray(scores, np.float64),
        np.asarray(labels, np.int64),
    )


def test_accuracy() -> None:
    assert accuracy([0, 1, 2, 2], [0, 1, 1, 2]) == 0.75
    with pytest.raises(ValueError):
        accuracy([], [])


def test_box_iou() -> None:
    iou = box_iou(
        np.array([[0, 0, 10, 10]]), np.array([[1, 1, 11, 11], [0, 0, 10, 20], [20, 20, 30, 30]])
    )
    assert np.allclose(iou, [[81 / 119, 0.5, 0.0]])


def test_map_on_a_known_case() -> None:
    """Two images; the class-0 ranking is TP, FP, TP, TP, FP over 3 ground-truth boxes.

    recall 1/3, 1/3, 2/3, 1, 1; precision 1, 1/2, 2/3, 3/4, 3/5; envelope 1, .75,
    .75, .75, .6. 101-point sampling: 34 points (0..0.33) at 1, 33 points (0.34..0.66)
    and 34 points (0.67..1) at 0.75, so AP = (34 + 67 * 0.75) / 101.
    """
    a = _image(
        gt=[[0, 0, 10, 10], [20, 20, 30, 30]],
        gt_labels=[0, 0],
        boxes=[[0, 0, 10, 10], [50, 50, 60, 60], [20, 20, 30, 30], [0, 0, 10, 10]],
        scores=[0.9, 0.8, 0.7, 0.95],
        labels=[0, 0, 0, 1],  # the class-1 box on a class-0 object is a false positive
    )
    b = _image(
        gt=[[0, 0, 10, 10], [40, 40, 60, 60]],
        gt_labels=[0, 1],
        boxes=[[1, 1, 11, 11], [0, 0, 10, 10]],  # IoU 0.68 first, then a duplicate
        scores=[0.6, 0.5],
        labels=[0, 0],
    )
    expected0 = (34 + 67 * 0.75) / 101
    assert average_precision([a, b], 0) == pytest.approx(expected0, abs=1e-12)
    assert average_precision([a, b], 1) == 0.0
    assert average_precision([a, b], 2) is None  # no ground truth: not part of the mean
    map50, per_class = mean_average_precision([a, b], num_classes=3)
    assert per_class == {0: pytest.approx(expected0), 1: 0.0}
    assert map50 == pytest.approx(expected0 / 2)


def test_map_threshold_is_inclusive_and_perfect_is_one() -> None:
    half = _image([[0, 0, 10, 10]], [0], [[0, 0, 10, 20]], [0.5], [0])  # IoU exactly 0.5
    assert average_precision([half], 0) == 1.0
    assert average_precision([half], 0, iou_threshold=0.51) == 0.0
    missed = _image([[0, 0, 10, 10], [30, 30, 40, 40]], [0, 0], [[0, 0, 10, 10]], [0.9], [0])
    # Recall stops at 0.5: 51 of the 101 recall points are reached, at precision 1.
    assert average_precision([missed], 0) == pytest.approx(51 / 101)


def test_max_dets_keeps_the_best_scores() -> None:
    im = _image([[0, 0, 10, 10]], [0], [[50, 50, 60, 60], [0, 0, 10, 10]], [0.9, 0.1], [0, 0])
    assert average_precision([im], 0, max_dets=1) == 0.0
    assert average_precision([im], 0, max_dets=2) == pytest.approx(0.5)


def test_miou_on_known_masks() -> None:
    target = np.array([[0, 0, 1, 255], [1, 2, 2, 255]])
    pred = np.array([[0, 1, 1, 3], [1, 2, 0, 3]])
    cm = ConfusionMatrix(num_classes=4)
    cm.update(pred, target)
    # IoU: class 0 = 1/3, class 1 = 2/3, class 2 = 1/2, class 3 absent everywhere (ignored).
    iou = cm.iou()
    assert np.allclose(iou[:3], [1 / 3, 2 / 3, 1 / 2]) and math.isnan(iou[3])
    assert cm.mean_iou() == pytest.approx(0.5)
    assert cm.mean_iou(include_background=False) == pytest.approx(7 / 12)
    assert cm.pixel_accuracy() == pytest.approx(4 / 6)
    cm.update(target.clip(max=2), target)  # a perfect second image accumulates
    assert cm.counts.sum() == 12


def test_confusion_matrix_rejects_bad_masks() -> None:
    cm = ConfusionMatrix(num_classes=2)
    with pytest.raises(ValueError, match=r"shape"):
        cm.update(np.zeros((2, 2)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"0..1"):
        cm.update(np.full((2, 2), 5), np.zeros((2, 2)))


def _counts_case() -> list[ImageDetections]:
    """Three objects in image a, one in image b; the detections are commented one by one."""
    a = _image(
        gt=[[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]],
        gt_labels=[0, 1, 0],
        boxes=[
            [0, 0, 10, 10],  # 0.9: true positive (object 0)
            [0, 0, 10, 10],  # 0.8: another class on the found object 0: duplicate
            [1, 1, 11, 11],  # 0.7: IoU 0.68 with the found object 0: duplicate
            [20, 20, 30, 30],  # 0.6: wrong class on object 1, never found: not a duplicate
            [60, 60, 70, 70],  # 0.5: background
            [40, 40, 50, 50],  # 0.2: true positive (object 2)
        ],
        scores=[0.9, 0.8, 0.7, 0.6, 0.5, 0.2],
        labels=[0, 2, 0, 0, 1, 0],
    )
    b = _image(
        gt=[[0, 0, 20, 20]],
        gt_labels=[1],
        # A wrong-class box scoring above the right one is still a duplicate of the found object.
        boxes=[[0, 0, 20, 20], [0, 0, 20, 19]],
        scores=[0.95, 0.4],
        labels=[2, 1],
    )
    return [a, b]


def test_precision_recall_f1_and_duplicates_on_a_known_case() -> None:
    images = _counts_case()
    at_03 = detection_counts(images, 0.3)  # a: 5 boxes, 1 TP, 2 dup; b: 2 boxes, 1 TP, 1 dup
    assert (at_03.ground_truth, at_03.detections, at_03.true_positives, at_03.duplicates) == (
        4,
        7,
        2,
        3,
    )
    assert math.isclose(at_03.precision, 2 / 7) and math.isclose(at_03.recall, 0.5)
    assert math.isclose(at_03.f1, 2 * (2 / 7) * 0.5 / (2 / 7 + 0.5))
    assert math.isclose(at_03.duplicate_rate, 3 / 4)
    at_0 = detection_counts(images, 0.0)
    assert (at_0.detections, at_0.true_positives, at_0.duplicates) == (8, 3, 3)
    # Above 0.4 image b's right box is gone: its object is missed, the other box is background.
    at_05 = detection_counts(images, 0.5)
    assert (at_05.detections, at_05.true_positives, at_05.duplicates) == (6, 1, 2)
    assert math.isclose(at_05.f1, 2 * (1 / 6) * 0.25 / (1 / 6 + 0.25))
    # The threshold is inclusive; max_dets keeps each image's best boxes.
    at_09 = detection_counts(images, 0.9)
    assert (at_09.detections, at_09.true_positives, at_09.duplicates) == (2, 1, 0)
    top1 = detection_counts(images, 0.0, max_dets=1)
    assert (top1.detections, top1.true_positives) == (2, 1)


def test_counts_without_detections_or_objects_are_zero_not_nan() -> None:
    none = detection_counts([_image([[0, 0, 5, 5]], [0], [], [], [])], 0.3)
    assert (none.precision, none.recall, none.f1, none.duplicate_rate) == (0.0, 0.0, 0.0, 0.0)
    background = detection_counts([_image([], [], [[0, 0, 5, 5]], [0.9], [0])], 0.3)
    assert (background.detections, background.precision, background.recall) == (1, 0.0, 0.0)


def test_perfect_answers_score_one() -> None:
    gt = [[0, 0, 10, 10], [30, 30, 60, 50]]
    counts = detection_counts([_image(gt, [0, 1], gt, [0.8, 0.7], [0, 1])], 0.5)
    assert (counts.precision, counts.recall, counts.f1, counts.duplicate_rate) == (1, 1, 1, 0)
