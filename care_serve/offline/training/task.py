"""What the generic training loop needs from a task (classification, detection, segmentation)."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from care_serve.offline.training.preprocess import CachedDataset

__all__ = ["Batch", "TrainTask"]


@dataclass
class Batch:
    """Network inputs ``(B, 3, H, W)`` and the task's targets."""

    inputs: torch.Tensor
    targets: Any


class TrainTask(ABC):
    """One task's data, model, loss and export details."""

    name: str = ""
    output_names: tuple[str, ...] = ()
    #: ``Manifest.preprocessing`` fields the package is served with.
    preprocessing: dict[str, Any] = {}
    #: Dense tasks: train on random ``crop x crop`` windows of the letterboxed inputs
    #: (the networks are fully convolutional; objects keep their served pixel size).
    crop: int | None = None
    #: Segmentation: average the loss over the hardest share of the labelled pixels
    #: (online hard example mining); None: over all of them.
    hard_pixels: float | None = None

    @abstractmethod
    def load(
        self,
        data_dir: str | os.PathLike[str],
        split: str,
        input_size: tuple[int, int],
        progress: bool,
    ) -> CachedDataset:
        """Read the dataset in the task's standard format and cache it at ``input_size``."""

    @abstractmethod
    def build_model(
        self, arch: str, num_classes: int, init_checkpoint: str | os.PathLike[str] | None
    ) -> nn.Module:
        """The network in train mode, optionally starting from an official checkpoint."""

    def num_classes(self, data: CachedDataset) -> int:
        """The network's number of outputs per location for ``data``: one per class."""
        return len(data.classes)

    def labels(self, data: CachedDataset) -> list[str]:
        """Class names in output-index order (the package's ``labels.txt``)."""
        return list(data.classes)

    @abstractmethod
    def make_batch(
        self, data: CachedDataset, indices: np.ndarray, rng: np.random.Generator, augment: bool
    ) -> Batch:
        """Gather (and augment) the samples at ``indices``."""

    @abstractmethod
    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        """The scalar training loss of ``batch``."""

    def postprocessing(self) -> dict[str, Any]:
        """``Manifest.postprocessing`` settings of the package."""
        return {}
