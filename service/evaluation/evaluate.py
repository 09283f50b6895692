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

Predictions come from :class:`~service.evaluation.runner.PackageRunner`, the
server's own inference path.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.errors import DatasetError
from service.evaluation.metrics import (
    ConfusionMatrix,
    ImageDetections,
    accuracy,
    detection_counts,
    mean_average_precision,
)
from service.evaluation.runner import PackageRunner

__all__ = ["DetectionOptions", "evaluate_package", "label_mapping"]


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
) -> dict[str, float]:
    from service.training.datasets import read_image_folder

    data = read_image_folder(data_dir, split)
    to_package = np.asarray(label_mapping(data.classes, runner.labels))
    results = runner.predict_files(data.paths, {"top_k": 1})
    predicted = [
        r.predictions[0].class_id for r in _progress(results, len(data), progress, "evaluate")
    ]
    return {"accuracy": accuracy(predicted, to_package[data.labels]), "images": float(len(data))}


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
) -> dict[str, float]:
    from service.tasks.detection import DetectionTask
    from service.training.datasets import read_coco

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
    return metrics


def _segmentation(
    runner: PackageRunner, data_dir: str | os.PathLike[str], split: str, progress: bool
) -> dict[str, float]:
    from service.training.datasets import read_mask_pairs
    from service.training.preprocess import _load_mask

    data = read_mask_pairs(data_dir, split)
    to_package = np.asarray(label_mapping(data.classes, runner.labels), np.int64)
    lut = np.full(256, 255, np.int64)
    lut[: len(to_package)] = to_package
    confusion = ConfusionMatrix(len(runner.labels))
    results = runner.predict_files(data.images, {})
    for mask_path, result in zip(
        data.masks, _progress(results, len(data), progress, "evaluate"), strict=True
    ):
        target = lut[_load_mask(mask_path)]
        confusion.update(np.asarray(result.mask), target)
    metrics = {
        "miou": confusion.mean_iou(include_background=True),
        "miou_fg": confusion.mean_iou(include_background=False),
        "pixel_accuracy": confusion.pixel_accuracy(),
        "images": float(len(data)),
    }
    metrics.update(
        {f"iou_{name}": float(v) for name, v in zip(runner.labels, confusion.iou(), strict=True)}
    )
    return metrics


EVALUATORS = {"classification": _classification, "segmentation": _segmentation}


def evaluate_package(
    package_dir: str | os.PathLike[str],
    data_dir: str | os.PathLike[str],
    split: str = "val",
    *,
    task: str | None = None,
    threads: int = 1,
    progress: bool = False,
    detection: DetectionOptions | None = None,
) -> dict[str, float]:
    """Metrics of the package on ``data_dir``/``split`` (see the module docstring)."""
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
