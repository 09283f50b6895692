"""Metrics against cases computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from service.evaluation.metrics import (
    ConfusionMatrix,
    ImageDetections,
    accuracy,
    average_precision,
    box_iou,
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
