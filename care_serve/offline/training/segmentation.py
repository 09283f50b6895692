"""Segmentation training: image/mask pairs, ``CARESegmenter`` and its cross-entropy."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
from torch import nn

from care_serve.offline.data.readers import read_mask_pairs
from care_serve.offline.training.augment import (
    colour_jitter,
    normalize_batch,
    random_crop,
    random_dihedral,
)
from care_serve.offline.training.preprocess import CachedDataset, cache_segmentation
from care_serve.offline.training.task import Batch, TrainTask

__all__ = ["SegmentationTraining"]


class SegmentationTraining(TrainTask):
    """Trains ``CARESegmenter(arch, num_classes=K)``, K with the background; output ``seg_logits``.

    Masks are letterboxed with the images (nearest neighbour); the padding is
    ignored by the loss.
    """

    name = "segmentation"
    output_names = ("seg_logits",)
    preprocessing: dict[str, Any] = {"mode": "letterbox", "interpolation": "bilinear"}

    def load(
        self,
        data_dir: str | os.PathLike[str],
        split: str,
        input_size: tuple[int, int],
        progress: bool,
    ) -> CachedDataset:
        return cache_segmentation(read_mask_pairs(data_dir, split), input_size, progress)

    def build_model(
        self, arch: str, num_classes: int, init_checkpoint: str | os.PathLike[str] | None
    ) -> nn.Module:
        """The backbone comes from ``init_checkpoint`` when given."""
        from care_serve.models.segmentation import CARESegmenter

        return CARESegmenter(arch, num_classes, backbone_checkpoint=init_checkpoint).train()

    def make_batch(
        self, data: CachedDataset, indices: np.ndarray, rng: np.random.Generator, augment: bool
    ) -> Batch:
        assert data.masks is not None
        images, masks = [], []
        height, width = data.images.shape[1:3]
        for i in indices:
            image, mask = data.images[i], data.masks[i]
            if self.crop:
                y0, x0 = random_crop(rng, height, width, self.crop)
                image = image[y0 : y0 + self.crop, x0 : x0 + self.crop]
                mask = mask[y0 : y0 + self.crop, x0 : x0 + self.crop]
            if augment:
                sym = random_dihedral(rng, image.shape[0] == image.shape[1])
                image, mask = colour_jitter(sym.image(image), rng), sym.image(mask)
            images.append(image)
            masks.append(mask)
        targets = torch.from_numpy(np.ascontiguousarray(np.stack(masks))).long()
        return Batch(normalize_batch(np.stack(images)), targets)

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        from care_serve.models.segmentation import segmentation_loss

        out = segmentation_loss(model(batch.inputs), batch.targets, hard_fraction=self.hard_pixels)
        return out["loss"]
