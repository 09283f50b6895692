"""Classification training: image folders, a CARE classifier, cross-entropy."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from care_serve.offline.data.readers import read_image_folder
from care_serve.offline.training.augment import colour_jitter, normalize_batch, random_dihedral
from care_serve.offline.training.preprocess import CachedDataset, cache_classification
from care_serve.offline.training.task import Batch, TrainTask

__all__ = ["ClassificationTraining"]

HEAD_PREFIXES = ("head.", "dist_head.")
PAD_VALUE = 114  # the grey the server's letterbox pads classification inputs with


class ClassificationTraining(TrainTask):
    """Fine-tunes ``create_model(arch, num_classes=K, distillation=False)``; output ``logits``.

    Images are letterboxed (the whole image is seen, whatever its aspect ratio),
    as the package tells the server to do.
    """

    name = "classification"
    output_names = ("logits",)
    preprocessing: dict[str, Any] = {
        "mode": "letterbox",
        "interpolation": "bilinear",
        "pad_value": PAD_VALUE,
    }

    def __init__(self, label_smoothing: float = 0.1) -> None:
        self.label_smoothing = label_smoothing

    def load(
        self,
        data_dir: str | os.PathLike[str],
        split: str,
        input_size: tuple[int, int],
        progress: bool,
    ) -> CachedDataset:
        data = read_image_folder(data_dir, split)
        return cache_classification(data, input_size, progress, fill=(PAD_VALUE,) * 3)

    def build_model(
        self, arch: str, num_classes: int, init_checkpoint: str | os.PathLike[str] | None
    ) -> nn.Module:
        """All but the heads come from ``init_checkpoint`` when given."""
        from care_serve.models import create_model, load_checkpoint

        model = create_model(arch, num_classes=num_classes, distillation=False)
        if init_checkpoint is not None:
            load_checkpoint(model, init_checkpoint, ignore=HEAD_PREFIXES)
        return model.train()

    def make_batch(
        self, data: CachedDataset, indices: np.ndarray, rng: np.random.Generator, augment: bool
    ) -> Batch:
        assert data.labels is not None
        images = data.images[indices]
        if augment:
            square = images.shape[1] == images.shape[2]
            images = np.stack(
                [colour_jitter(random_dihedral(rng, square).image(im), rng) for im in images]
            )
        return Batch(normalize_batch(images), torch.from_numpy(data.labels[indices]))

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        logits = model(batch.inputs)
        return F.cross_entropy(logits, batch.targets, label_smoothing=self.label_smoothing)
