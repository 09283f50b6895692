"""Quality metrics in numpy: accuracy, COCO-style AP at one IoU threshold, detection
precision / recall / F1 and duplicate rate at a score threshold, mIoU.

- ``average_precision`` follows pycocotools: per class, detections of all images
  sorted by score (at most ``max_dets`` per image), each matched greedily to the
  unmatched ground-truth box of highest IoU >= the threshold; the precision
  envelope is sampled at 101 recall points ``0, 0.01, ..., 1`` (0 where that
  recall is never reached). ``mean_average_precision`` averages over the classes
  that have ground truth.
- ``detection_counts`` scores the answers a client gets at one score threshold:
  per image, the detections at or above it (at most ``max_dets``, best first)
  are matched like AP's (same class, unmatched ground truth of highest IoU >=
  the IoU threshold); a detection that matches nothing is a false positive, and
  a *duplicate* when it overlaps (IoU >= the threshold) a ground-truth object
  that some detection did match, whatever the classes: an extra box on an
  object already found. ``duplicate_rate`` is duplicates per ground-truth
  object.
- ``ConfusionMatrix`` accumulates pixels over a whole dataset (ignore label
  255); IoU per class is ``TP / (TP + FP + FN)``; classes absent from both the
  ground truth and the predictions are left out of the means.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from care_serve.postprocess.detection import box_iou

__all__ = [
    "ConfusionMatrix",
    "DetectionCounts",
    "ImageDetections",
    "accuracy",
    "average_precision",
    "box_iou",
    "detection_counts",
    "match_detections",
    "mean_average_precision",
]

RECALL_POINTS = np.linspace(0.0, 1.0, 101)


def accuracy(predicted: Sequence[int] | np.ndarray, target: Sequence[int] | np.ndarray) -> float:
    """Fraction of equal entries."""
    p, t = np.asarray(predicted), np.asarray(target)
    if p.shape != t.shape or p.size == 0:
        raise ValueError(
            f"need two equal-length non-empty label lists, got {p.shape} and {t.shape}"
        )
    return float((p == t).mean())


@dataclass
class ImageDetections:
    """Ground truth and predictions of one image (xyxy boxes, integer class ids)."""

    gt_boxes: np.ndarray
    gt_labels: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray


def _interpolated_ap(tp: np.ndarray, num_gt: int) -> float:
    """101-point interpolated AP of detections already sorted by score."""
    if tp.size == 0:
        return 0.0
    ctp = np.cumsum(tp)
    recall = ctp / num_gt
    precision = ctp / np.arange(1, tp.size + 1)
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    idx = np.searchsorted(recall, RECALL_POINTS, side="left")
    sampled = np.where(idx < tp.size, envelope[np.minimum(idx, tp.size - 1)], 0.0)
    return float(sampled.mean())


def _greedy_match(ious: np.ndarray, iou_threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Rows (detections, best first) matched greedily to columns (ground truth).

    Each row takes the unmatched column of highest IoU >= ``iou_threshold``.
    Returns (row hit, column matched) boolean arrays.
    """
    n, m = ious.shape
    hit, matched = np.zeros(n, bool), np.zeros(m, bool)
    if m == 0:
        return hit, matched
    for row in range(n):
        cand = np.where(~matched & (ious[row] >= iou_threshold), ious[row], -1.0)
        best = int(np.argmax(cand))
        if cand[best] >= 0:
            matched[best] = hit[row] = True
    return hit, matched


def match_detections(
    im: ImageDetections, iou_threshold: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """Class-aware greedy matching of one image, detections taken best first.

    Returns ``(hit, gt_matched)``: whether each detection (indexed like
    ``im.scores``) matched a ground-truth box of its class, and whether each
    ground-truth box was matched.
    """
    boxes = np.asarray(im.boxes, np.float64).reshape(-1, 4)
    labels = np.asarray(im.labels)
    gt = np.asarray(im.gt_boxes, np.float64).reshape(-1, 4)
    gt_labels = np.asarray(im.gt_labels)
    hit, gt_matched = np.zeros(len(boxes), bool), np.zeros(len(gt), bool)
    order = np.argsort(-np.asarray(im.scores, np.float64), kind="stable")
    for c in np.unique(labels):
        rows = order[labels[order] == c]
        cols = np.nonzero(gt_labels == c)[0]
        row_hit, col_matched = _greedy_match(box_iou(boxes[rows], gt[cols]), iou_threshold)
        hit[rows], gt_matched[cols] = row_hit, col_matched
    return hit, gt_matched


@dataclass(frozen=True)
class DetectionCounts:
    """Counts of a detection evaluation at one score threshold (see the module docstring)."""

    ground_truth: int
    detections: int
    true_positives: int
    duplicates: int

    @property
    def precision(self) -> float:
        """True positives / detections (0 without detections)."""
        return self.true_positives / self.detections if self.detections else 0.0

    @property
    def recall(self) -> float:
        """True positives / ground-truth objects (0 without ground truth)."""
        return self.true_positives / self.ground_truth if self.ground_truth else 0.0

    @property
    def f1(self) -> float:
        """Harmonic mean of precision and recall (0 when both are 0)."""
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r > 0 else 0.0

    @property
    def duplicate_rate(self) -> float:
        """Duplicates per ground-truth object (0 without ground truth)."""
        return self.duplicates / self.ground_truth if self.ground_truth else 0.0


def detection_counts(
    images: Sequence[ImageDetections],
    score_threshold: float,
    iou_threshold: float = 0.5,
    max_dets: int = 100,
) -> DetectionCounts:
    """Matches, false positives and duplicates of the detections scoring >= ``score_threshold``."""
    gt_total = dets_total = tp_total = dup_total = 0
    for im in images:
        scores = np.asarray(im.scores, np.float64)
        top = np.argsort(-scores, kind="stable")[:max_dets]
        keep = np.sort(top[scores[top] >= score_threshold])
        kept = ImageDetections(
            gt_boxes=im.gt_boxes,
            gt_labels=im.gt_labels,
            boxes=np.asarray(im.boxes, np.float64).reshape(-1, 4)[keep],
            scores=scores[keep],
            labels=np.asarray(im.labels)[keep],
        )
        hit, gt_matched = match_detections(kept, iou_threshold)
        overlaps_found = box_iou(kept.boxes, np.asarray(im.gt_boxes).reshape(-1, 4)[gt_matched])
        on_found = (overlaps_found >= iou_threshold).any(axis=1)
        gt_total += len(gt_matched)
        dets_total += len(keep)
        tp_total += int(hit.sum())
        dup_total += int((~hit & on_found).sum())
    return DetectionCounts(gt_total, dets_total, tp_total, dup_total)


def average_precision(
    images: Sequence[ImageDetections],
    class_id: int,
    iou_threshold: float = 0.5,
    max_dets: int = 100,
) -> float | None:
    """AP of one class over ``images``; ``None`` when the class has no ground truth."""
    scores, hits = [], []
    num_gt = 0
    for im in images:
        gt = np.asarray(im.gt_boxes).reshape(-1, 4)[np.asarray(im.gt_labels) == class_id]
        num_gt += len(gt)
        top = np.argsort(-np.asarray(im.scores), kind="stable")[:max_dets]
        keep = top[np.asarray(im.labels)[top] == class_id]
        boxes = np.asarray(im.boxes).reshape(-1, 4)[keep]
        hit, _ = _greedy_match(box_iou(boxes, gt), iou_threshold)
        hits.extend(hit.tolist())
        scores.extend(np.asarray(im.scores, np.float64)[keep].tolist())
    if num_gt == 0:
        return None
    order = np.argsort(-np.asarray(scores), kind="stable")
    return _interpolated_ap(np.asarray(hits, np.float64)[order], num_gt)


def mean_average_precision(
    images: Sequence[ImageDetections],
    num_classes: int,
    iou_threshold: float = 0.5,
    max_dets: int = 100,
) -> tuple[float, dict[int, float]]:
    """(mAP over classes with ground truth, AP per such class)."""
    per_class = {}
    for c in range(num_classes):
        ap = average_precision(images, c, iou_threshold, max_dets)
        if ap is not None:
            per_class[c] = ap
    if not per_class:
        raise ValueError("no ground-truth boxes in the evaluation set")
    return float(np.mean(list(per_class.values()))), per_class


class ConfusionMatrix:
    """Pixel confusion counts ``[target, predicted]`` over ``num_classes`` classes."""

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.counts = np.zeros((num_classes, num_classes), np.int64)

    def update(self, predicted: np.ndarray, target: np.ndarray) -> None:
        """Add one image (two equal-shape integer masks)."""
        p, t = np.asarray(predicted).astype(np.int64), np.asarray(target).astype(np.int64)
        if p.shape != t.shape:
            raise ValueError(f"predicted mask {p.shape} and target mask {t.shape} differ in shape")
        valid = t != self.ignore_index
        p, t = p[valid], t[valid]
        if t.size and (t.max() >= self.num_classes or p.min() < 0 or p.max() >= self.num_classes):
            raise ValueError(f"mask values must lie in 0..{self.num_classes - 1} (or be ignored)")
        self.counts += np.bincount(t * self.num_classes + p, minlength=self.num_classes**2).reshape(
            self.num_classes, self.num_classes
        )

    def iou(self) -> np.ndarray:
        """IoU per class; NaN for a class in neither the targets nor the predictions."""
        tp = np.diag(self.counts).astype(np.float64)
        union = self.counts.sum(axis=0) + self.counts.sum(axis=1) - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(union > 0, tp / union, np.nan)

    def mean_iou(self, include_background: bool = True) -> float:
        """Mean IoU over the present classes (class 0 left out unless ``include_background``)."""
        ious = self.iou() if include_background else self.iou()[1:]
        return float(np.nanmean(ious)) if np.isfinite(ious).any() else float("nan")

    def pixel_accuracy(self) -> float:
        """Correct pixels / counted pixels."""
        total = self.counts.sum()
        return float(np.trace(self.counts) / total) if total else float("nan")
