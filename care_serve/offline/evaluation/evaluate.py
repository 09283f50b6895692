"""Evaluating a model package on a dataset in its task's standard format.

- classification: top-1 ``accuracy`` (dataset class folders are matched to the
  package labels by name);
- detection: ``map50``, COCO-style mAP at IoU 0.5 (101-point interpolated AP
  per class, averaged over the classes), plus ``ap50_<class>``; and, at the
  served default ``score_threshold`` of the manifest, ``precision``,
  ``recall``, ``f1`` and ``duplicate_rate`` (extra boxes on an already-found
  object per object, any class; see ``metrics.detection_counts``), optionally
  also at other thresholds (``f1@0.4`` ...). The NMS is the manifest's
  (``class_agnostic_nms``) unless overridden, reported as
  ``class_agnostic_nms`` (1 or 0). One inference pass answers every threshold:
  the detections of a greedy NMS at a low threshold that score at least ``t``
  are exactly those of the same NMS at ``t`` (a box is only suppressed by a
  better one);
- segmentation: ``miou``, the mean IoU over all classes *including* the
  background, ``miou_fg`` over the foreground classes only, ``pixel_accuracy``
  and ``iou_<class>``; pixels are counted over the whole dataset at each
  image's original size.

When the split was written by ``care-serve generate`` (it has a
``styles_SPLIT.json``), the same metrics are also reported per bucket of shape
size, fill, line width, border cut, background and degradation
(``care_serve.offline.evaluation.buckets``): accuracy per bucket (classification); per
shape bucket the recall at the served default, per image bucket precision,
recall and F1, and per size bucket also the precision of the answered boxes of
that size (detection); per image bucket mIoU and per shape bucket the share of
the shape's pixels given its class, ``pixel_recall`` (segmentation). A
report's ``failures`` lists the commonest errors (confusions, missed or extra
boxes, confused pixels).

Predictions come from :class:`~care_serve.offline.evaluation.runner.PackageRunner`, the
server's own inference path.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from care_serve.errors import DatasetError
from care_serve.offline.evaluation.buckets import (
    BucketCounter,
    image_buckets,
    load_styles,
    shape_buckets,
    style_of,
)
from care_serve.offline.evaluation.metrics import (
    ConfusionMatrix,
    ImageDetections,
    accuracy,
    detection_counts,
    match_detections,
    mean_average_precision,
)
from care_serve.offline.evaluation.runner import PackageRunner

__all__ = ["DetectionOptions", "Evaluation", "evaluate", "label_mapping"]


@dataclass
class Evaluation:
    """Metrics of a package on a split, per bucket when the data has styles, and its errors.

    ``buckets`` maps a bucket name to its metrics and ``count`` (images for image
    buckets in classification and segmentation, shapes for shape buckets);
    ``failures`` holds human-readable lines, commonest error first.
    """

    metrics: dict[str, float]
    buckets: dict[str, dict[str, float]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class DetectionOptions:
    """How a detection package is evaluated: NMS override and extra score thresholds."""

    class_agnostic_nms: bool | None = None  # None: the manifest's
    score_thresholds: tuple[float, ...] = ()


def label_mapping(dataset_classes: Sequence[str], package_labels: Sequence[str]) -> list[int]:
    """Package index of each dataset class, matched by name."""
    missing = [c for c in dataset_classes if c not in package_labels]
    if missing:
        raise DatasetError(
            f"dataset classes {missing} are not among the model's labels {list(package_labels)}; "
            "evaluate a dataset of the classes the model was trained on"
        )
    return [list(package_labels).index(c) for c in dataset_classes]


def _progress(items: Iterable[Any], total: int, enabled: bool, desc: str) -> Iterable[Any]:
    from tqdm import tqdm

    return tqdm(items, total=total, desc=desc, unit="img", disable=not enabled)


def _classification(
    runner: PackageRunner, data_dir: str | os.PathLike[str], split: str, progress: bool
) -> Evaluation:
    from care_serve.offline.data.readers import read_image_folder

    data = read_image_folder(data_dir, split)
    to_package = np.asarray(label_mapping(data.classes, runner.labels))
    answers = list(
        _progress(runner.predict_files(data.paths, {"top_k": 1}), len(data), progress, "evaluate")
    )
    predicted = np.asarray([r.predictions[0].class_id for r in answers])
    scores = np.asarray([r.logsumexp for r in answers])
    target = to_package[data.labels]
    styles = load_styles(data_dir, split)
    counter = BucketCounter()
    for path, p, t in zip(data.paths, predicted, target, strict=True):
        style = style_of(styles, data_dir, path)
        if style is None:
            continue
        names = image_buckets(style) + [
            b for a in style.get("shapes", []) for b in shape_buckets(a)
        ]
        counter.add(names, "count")
        counter.add(names, "correct", float(p == t))
    buckets = {
        name: {"accuracy": c.get("correct", 0.0) / c["count"], "count": c["count"]}
        for name, c in counter.ordered()
    }
    failures = []
    pairs: dict[tuple[int, int], int] = {}
    for p, t in zip(predicted.tolist(), target.tolist(), strict=True):
        if p != t:
            pairs[(t, p)] = pairs.get((t, p), 0) + 1
    for (t, p), n in sorted(pairs.items(), key=lambda kv: -kv[1])[:5]:
        total = int((target == t).sum())
        failures.append(
            f"{runner.labels[t]} answered as {runner.labels[p]}: {n} of {total} {runner.labels[t]}s"
        )
    metrics = {
        "accuracy": accuracy(predicted, target),
        "images": float(len(data)),
        # The calibration of postprocessing.min_logsumexp: 95 % of these images score above.
        "logsumexp_p05": float(np.percentile(scores, 5)) if len(scores) else float("nan"),
        "uncertain_share": float(np.mean([r.uncertain for r in answers])) if answers else 0.0,
    }
    return Evaluation(metrics, buckets, failures)


def _threshold_metrics(
    images: Sequence[ImageDetections], threshold: float, max_dets: int, suffix: str
) -> dict[str, float]:
    counts = detection_counts(images, threshold, 0.5, max_dets)
    return {
        f"precision{suffix}": counts.precision,
        f"recall{suffix}": counts.recall,
        f"f1{suffix}": counts.f1,
        f"duplicate_rate{suffix}": counts.duplicate_rate,
    }


def _detection(
    runner: PackageRunner,
    data_dir: str | os.PathLike[str],
    split: str,
    progress: bool,
    options: DetectionOptions,
) -> Evaluation:
    from care_serve.offline.data.readers import read_coco
    from care_serve.tasks.detection import DetectionTask

    assert isinstance(runner.task, DetectionTask)
    config = runner.task.config
    agnostic = (
        config.class_agnostic_nms
        if options.class_agnostic_nms is None
        else options.class_agnostic_nms
    )
    data = read_coco(data_dir, split)
    to_package = np.asarray(label_mapping(data.classes, runner.labels))
    paths = [s.path for s in data.samples]
    max_dets = max(100, config.max_detections)
    params = {
        "score_threshold": 0.001,
        "max_detections": min(max_dets, config.pre_nms_top_k),
        "class_agnostic_nms": agnostic,
    }
    images = []
    results = runner.predict_files(paths, params)
    for sample, result in zip(
        data.samples, _progress(results, len(paths), progress, "evaluate"), strict=True
    ):
        dets = result.detections
        images.append(
            ImageDetections(
                gt_boxes=sample.boxes,
                gt_labels=to_package[sample.labels],
                boxes=np.asarray([d.box for d in dets], np.float64).reshape(-1, 4),
                scores=np.asarray([d.score for d in dets], np.float64),
                labels=np.asarray([d.class_id for d in dets], np.int64),
            )
        )
    map50, per_class = mean_average_precision(images, len(runner.labels), 0.5)
    metrics = {"map50": map50, "images": float(len(images))}
    metrics.update({f"ap50_{runner.labels[c]}": ap for c, ap in per_class.items()})
    metrics["score_threshold"] = config.score_threshold
    metrics["class_agnostic_nms"] = float(agnostic)
    metrics.update(_threshold_metrics(images, config.score_threshold, config.max_detections, ""))
    for t in options.score_thresholds:
        metrics.update(_threshold_metrics(images, t, config.max_detections, f"@{t:g}"))
    styles = load_styles(data_dir, split)
    sizes = [(s.width, s.height) for s in data.samples]
    styled = [style_of(styles, data_dir, s.path) for s in data.samples]
    buckets, failures = _detection_buckets(
        images, styled, sizes, config.score_threshold, config.max_detections, runner.labels
    )
    return Evaluation(metrics, buckets, failures)


def _served(im: ImageDetections, threshold: float, max_dets: int) -> ImageDetections:
    """The detections a client gets at ``threshold`` (at most ``max_dets``, best first)."""
    scores = np.asarray(im.scores, np.float64)
    top = np.argsort(-scores, kind="stable")[:max_dets]
    keep = np.sort(top[scores[top] >= threshold])
    return ImageDetections(
        im.gt_boxes, im.gt_labels, np.asarray(im.boxes).reshape(-1, 4)[keep], scores[keep],
        np.asarray(im.labels)[keep],
    )  # fmt: skip


def _detection_buckets(
    images: Sequence[ImageDetections],
    styles: Sequence[dict[str, Any] | None],
    sizes: Sequence[tuple[int, int]],
    threshold: float,
    max_dets: int,
    labels: Sequence[str],
) -> tuple[dict[str, dict[str, float]], list[str]]:
    """Per-bucket recall / precision at the served default, and the commonest errors."""
    from care_serve.offline.data.wide import size_bucket
    from care_serve.offline.evaluation.metrics import box_iou

    shapes, scenes = BucketCounter(), BucketCounter()
    missed: dict[str, int] = {}
    wrong_class = extra = 0
    for im, style, (width, height) in zip(images, styles, sizes, strict=True):
        served = _served(im, threshold, max_dets)
        hit, gt_matched = match_detections(served, 0.5)
        gt = np.asarray(im.gt_boxes, np.float64).reshape(-1, 4)
        any_iou = box_iou(served.boxes, gt)
        for k, found in enumerate(gt_matched):
            if not found:
                name = labels[int(im.gt_labels[k])]
                covered = any_iou[:, k] >= 0.5 if len(served.boxes) else np.zeros(0, bool)
                if covered.any():
                    wrong_class += 1
                else:
                    missed[name] = missed.get(name, 0) + 1
        extra += int((~hit & ~(any_iou >= 0.5).any(axis=1)).sum()) if len(hit) else 0
        if style is None:
            continue
        attrs = style.get("shapes", [])
        if len(attrs) == len(gt_matched):
            for a, found in zip(attrs, gt_matched, strict=True):
                names = shape_buckets(a)
                shapes.add(names, "count")
                shapes.add(names, "found", float(found))
        short = min(width, height)
        for box, h in zip(served.boxes, hit, strict=True):
            name = size_bucket(float(max(box[2] - box[0], box[3] - box[1])) / short)
            shapes.add([name], "answered")
            shapes.add([name], "answered_hit", float(h))
        names = image_buckets(style)
        scenes.add(names, "count")
        scenes.add(names, "objects", float(len(gt_matched)))
        scenes.add(names, "found", float(gt_matched.sum()))
        scenes.add(names, "answered", float(len(hit)))
        scenes.add(names, "answered_hit", float(hit.sum()))
    buckets: dict[str, dict[str, float]] = {}
    for name, c in shapes.ordered():
        if not c.get("count"):
            continue
        row = {"recall": c.get("found", 0.0) / c["count"], "count": c["count"]}
        if c.get("answered"):
            row["precision"] = c.get("answered_hit", 0.0) / c["answered"]
        buckets[name] = row
    for name, c in scenes.ordered():
        p = c["answered_hit"] / c["answered"] if c.get("answered") else 0.0
        r = c["found"] / c["objects"] if c.get("objects") else 0.0
        f1 = 2 * p * r / (p + r) if p + r > 0 else 0.0
        buckets[name] = {"precision": p, "recall": r, "f1": f1, "count": c["count"]}
    failures = [f"{n} {name}s missed (no box of any class on them)" for name, n in
                sorted(missed.items(), key=lambda kv: -kv[1])]  # fmt: skip
    if wrong_class:
        failures.append(f"{wrong_class} shapes boxed with the wrong class only")
    if extra:
        failures.append(f"{extra} boxes on no shape (false alarms)")
    failures.sort(key=lambda line: -int(line.split()[0]))
    return buckets, failures


def _segmentation(
    runner: PackageRunner, data_dir: str | os.PathLike[str], split: str, progress: bool
) -> Evaluation:
    from care_serve.offline.data.readers import load_mask, read_mask_pairs

    data = read_mask_pairs(data_dir, split)
    to_package = np.asarray(label_mapping(data.classes, runner.labels), np.int64)
    lut = np.full(256, 255, np.int64)
    lut[: len(to_package)] = to_package
    num = len(runner.labels)
    confusion = ConfusionMatrix(num)
    styles = load_styles(data_dir, split)
    per_bucket: dict[str, ConfusionMatrix] = {}
    shapes, scenes = BucketCounter(), BucketCounter()
    results = runner.predict_files(data.images, {})
    for image_path, mask_path, result in zip(
        data.images, data.masks, _progress(results, len(data), progress, "evaluate"), strict=True
    ):
        target = lut[load_mask(mask_path)]
        predicted = np.asarray(result.mask)
        confusion.update(predicted, target)
        style = style_of(styles, data_dir, image_path)
        if style is None:
            continue
        for name in image_buckets(style):
            per_bucket.setdefault(name, ConfusionMatrix(num)).update(predicted, target)
        scenes.add(image_buckets(style), "count")
        instance_path = Path(data_dir) / "instances" / split / mask_path.name
        if not instance_path.is_file():
            continue
        instances = load_mask(instance_path)
        for k, attrs in enumerate(style.get("shapes", []), start=1):
            pixels = instances == k
            n = int(pixels.sum())
            if not n:
                continue
            names = shape_buckets(attrs)
            shapes.add(names, "count")
            shapes.add(names, "pixels", n)
            shapes.add(names, "right", float((predicted[pixels] == target[pixels]).sum()))
    metrics = {
        "miou": confusion.mean_iou(include_background=True),
        "miou_fg": confusion.mean_iou(include_background=False),
        "pixel_accuracy": confusion.pixel_accuracy(),
        "images": float(len(data)),
    }
    metrics.update(
        {f"iou_{name}": float(v) for name, v in zip(runner.labels, confusion.iou(), strict=True)}
    )
    buckets: dict[str, dict[str, float]] = {
        name: {"pixel_recall": c["right"] / c["pixels"], "count": c["count"]}
        for name, c in shapes.ordered()
    }
    for name, c in scenes.ordered():
        miou = per_bucket[name].mean_iou(include_background=True)
        buckets[name] = {"miou": miou, "count": c["count"]}
    counts = confusion.counts
    failures = []
    off = [(int(counts[t, p]), t, p) for t in range(num) for p in range(num) if t != p]
    for n, t, p in sorted(off, reverse=True)[:4]:
        if n:
            share = n / max(int(counts[t].sum()), 1)
            failures.append(
                f"{share:.1%} of the {runner.labels[t]} pixels labelled {runner.labels[p]}"
            )
    return Evaluation(metrics, buckets, failures)


EVALUATORS = {"classification": _classification, "segmentation": _segmentation}


def evaluate(
    package_dir: str | os.PathLike[str],
    data_dir: str | os.PathLike[str],
    split: str = "val",
    *,
    task: str | None = None,
    threads: int = 1,
    progress: bool = False,
    detection: DetectionOptions | None = None,
) -> Evaluation:
    """Metrics, per-bucket metrics and errors of the package on ``data_dir``/``split``."""
    runner = PackageRunner(package_dir, threads=threads)
    try:
        if task is not None and task != runner.manifest.task:
            raise DatasetError(
                f"the package at {package_dir} is a {runner.manifest.task} model, not {task}"
            )
        if runner.manifest.task == "detection":
            options = detection or DetectionOptions()
            return _detection(runner, data_dir, split, progress, options)
        return EVALUATORS[runner.manifest.task](runner, data_dir, split, progress)
    finally:
        runner.close()
