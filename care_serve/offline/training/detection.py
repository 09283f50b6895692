"""Detection training: COCO JSON, ``CAREDetector`` and its quality-focal + GIoU loss."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
from torch import nn

from care_serve.offline.data.readers import read_coco
from care_serve.offline.training.augment import (
    colour_jitter,
    crop_boxes,
    normalize_batch,
    random_crop,
    random_dihedral,
)
from care_serve.offline.training.preprocess import CachedDataset, cache_detection
from care_serve.offline.training.task import Batch, TrainTask

__all__ = ["DetectionTraining"]


class DetectionTraining(TrainTask):
    """Trains ``CAREDetector(arch, num_classes=K)``; outputs ``cls_logits`` and ``box_ltrb``.

    Images are letterboxed with the serving geometry; boxes move with every
    flip/rotation of the augmentation.
    """

    name = "detection"
    output_names = ("cls_logits", "box_ltrb")
    preprocessing: dict[str, Any] = {"mode": "letterbox", "interpolation": "bilinear"}

    def load(
        self,
        data_dir: str | os.PathLike[str],
        split: str,
        input_size: tuple[int, int],
        progress: bool,
    ) -> CachedDataset:
        return cache_detection(read_coco(data_dir, split), input_size, progress)

    def build_model(
        self, arch: str, num_classes: int, init_checkpoint: str | os.PathLike[str] | None
    ) -> nn.Module:
        """The backbone comes from ``init_checkpoint`` when given."""
        from care_serve.models.detection import CAREDetector

        return CAREDetector(arch, num_classes, backbone_checkpoint=init_checkpoint).train()

    def make_batch(
        self, data: CachedDataset, indices: np.ndarray, rng: np.random.Generator, augment: bool
    ) -> Batch:
        assert data.boxes is not None and data.box_labels is not None
        images, targets = [], []
        height, width = data.images.shape[1:3]
        for i in indices:
            image, boxes, labels = data.images[i], data.boxes[i], data.box_labels[i]
            if self.crop:
                y0, x0 = random_crop(rng, height, width, self.crop)
                image = image[y0 : y0 + self.crop, x0 : x0 + self.crop]
                boxes, labels = crop_boxes(boxes, labels, x0, y0, self.crop)
            if augment:
                h, w = image.shape[:2]
                sym = random_dihedral(rng, h == w)
                image, boxes = colour_jitter(sym.image(image), rng), sym.boxes(boxes, w, h)
            images.append(image)
            targets.append({"boxes": torch.from_numpy(boxes), "labels": torch.from_numpy(labels)})
        return Batch(normalize_batch(np.stack(images)), targets)

    def postprocessing(self) -> dict[str, Any]:
        """The served defaults chosen by the evaluation (docs/training.md): one box per object.

        Class-agnostic NMS at IoU 0.4 and score threshold 0.4; a request may still
        ask for another threshold or class-aware NMS.
        """
        return {"score_threshold": 0.4, "nms_iou": 0.4, "class_agnostic_nms": True}

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        out: dict[str, torch.Tensor] = model.forward_loss(batch.inputs, batch.targets)  # type: ignore[operator]
        return out["loss"]
