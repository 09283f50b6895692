"""The task plugin interface.

A task turns a decoded image into one network input and one sample of network
outputs into a result. It never sees batching, transports or backends:

    task = get_task_class(manifest.task)(manifest, labels, settings)
    params = task.parse_params({"top_k": 5})          # InvalidInput on bad values
    array, meta = task.preprocess(decoded_image)      # CHW float32, PreprocessMeta
    result = task.postprocess(outputs_for_one_sample, meta, params)

Detection and segmentation join by adding a module and a line to ``TASK_MODULES``.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel

from care_serve.errors import NotSupported
from care_serve.imaging.decode import DecodedImage
from care_serve.imaging.preprocess import PreprocessMeta
from care_serve.settings import Settings
from care_serve.store.manifest import Manifest

__all__ = ["TASK_MODULES", "Task", "get_task_class", "register_task"]

# task name -> "module:Class"; imported on first use.
TASK_MODULES: dict[str, str] = {
    "classification": "care_serve.tasks.classification:ClassificationTask",
    "detection": "care_serve.tasks.detection:DetectionTask",
    "segmentation": "care_serve.tasks.segmentation:SegmentationTask",
}
_LOADED: dict[str, type[Task]] = {}


class Task(ABC):
    """One task (classification, detection, segmentation) bound to one model package."""

    name: ClassVar[str]
    #: post-processing takes microseconds: run it on the event loop, not in a worker.
    cheap_postprocess: ClassVar[bool] = False

    def __init__(self, manifest: Manifest, labels: list[str], settings: Settings) -> None:
        self.manifest = manifest
        self.labels = labels
        self.settings = settings

    @abstractmethod
    def parse_params(self, params: Mapping[str, Any]) -> BaseModel:
        """Validate request parameters (``InvalidInput`` naming the bad one)."""

    def decode_size(self, width: int, height: int) -> tuple[int, int] | None:
        """The smallest ``(width, height)`` an image of this size may be decoded at.

        ``None`` (the default) means full resolution: dense tasks map boxes and
        masks back to the pixels the client sent.
        """
        return None

    @abstractmethod
    def preprocess(self, image: DecodedImage) -> tuple[np.ndarray, PreprocessMeta]:
        """The normalised ``(3, H, W)`` float32 input and how it maps to the image."""

    def tensor_meta(self) -> PreprocessMeta:
        """The meta of an input that is already at the network's size (nothing to undo)."""
        w, h = self.manifest.input.width, self.manifest.input.height
        return PreprocessMeta(w, h, w, h, 1.0, 1.0, 0.0, 0.0)

    @abstractmethod
    def postprocess(
        self, outputs: Mapping[str, np.ndarray], meta: PreprocessMeta, params: Any
    ) -> BaseModel:
        """The result for one sample; ``outputs`` holds each output without the batch axis."""


def register_task(name: str, target: str) -> None:
    """Register a task implementation as ``"package.module:ClassName"``."""
    TASK_MODULES[name] = target
    _LOADED.pop(name, None)


def get_task_class(name: str) -> type[Task]:
    """The task class for ``name``; ``NotSupported`` if this build has no such task."""
    if name in _LOADED:
        return _LOADED[name]
    target = TASK_MODULES.get(name)
    if target is None:
        raise NotSupported(
            f"task {name!r} is not available in this build "
            f"(available: {', '.join(sorted(TASK_MODULES))})"
        )
    module_name, _, class_name = target.partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    if not (isinstance(cls, type) and issubclass(cls, Task)):
        raise TypeError(f"{target} is not a Task subclass")
    _LOADED[name] = cls
    return cls
