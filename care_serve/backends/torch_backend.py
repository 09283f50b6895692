"""The PyTorch backend: serves an official-format checkpoint directly.

Imported only when a package has ``format: pytorch`` (or the server is forced
to ``backend=pytorch``); the ONNX-only server never imports torch. Note that
torch's intra-op thread count is process-wide: the last model loaded sets it.
Models are rebuilt by a builder per task; other tasks register theirs with
``register_builder``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from care_serve.errors import CheckpointError, ModelStoreError
from care_serve.store.manifest import Manifest

__all__ = ["TorchBackend", "register_builder"]

Builder = Callable[[Manifest, Path], torch.nn.Module]


def _build_classifier(manifest: Manifest, weights: Path) -> torch.nn.Module:
    from care_serve.models import create_model

    return create_model(
        manifest.architecture, weights, num_classes=manifest.num_classes, **manifest.model_kwargs
    )


def _build_embedder(manifest: Manifest, weights: Path) -> torch.nn.Module:
    """The classifier of the checkpoint (its class count is in ``model_kwargs``), embedding."""
    from care_serve.models import create_model
    from care_serve.models.embedding import CAREEmbedder

    return CAREEmbedder(create_model(manifest.architecture, weights, **manifest.model_kwargs))


_BUILDERS: dict[str, Builder] = {
    "classification": _build_classifier,
    "embedding": _build_embedder,
}


def register_builder(task: str, builder: Builder) -> None:
    """Register how to rebuild a ``format: pytorch`` model of ``task``."""
    _BUILDERS[task] = builder


def _register_dense_builders() -> None:
    from care_serve.backends.dense_builders import build_detector, build_segmenter

    register_builder("detection", build_detector)
    register_builder("segmentation", build_segmenter)


_register_dense_builders()


class TorchBackend:
    """Runs the eager PyTorch model under ``inference_mode``."""

    def __init__(self, package_dir: Path, manifest: Manifest, threads: int) -> None:
        builder = _BUILDERS.get(manifest.task)
        if builder is None:
            raise ModelStoreError(
                f"no PyTorch builder for task {manifest.task!r}; serve it as ONNX instead"
            )
        torch.set_num_threads(threads)
        try:
            self._model: Any = builder(manifest, package_dir / manifest.weights).eval()
        except (CheckpointError, ValueError) as exc:
            raise ModelStoreError(f"{package_dir}: cannot build the model: {exc}") from exc
        self.name = f"pytorch ({threads} thread{'' if threads == 1 else 's'})"
        self.output_names = list(manifest.outputs)

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        with torch.inference_mode():
            out = self._model(torch.from_numpy(batch))
        if isinstance(out, torch.Tensor):
            out = (out,)
        if isinstance(out, dict):
            return {name: out[name].numpy() for name in self.output_names}
        return {name: t.numpy() for name, t in zip(self.output_names, out, strict=True)}

    def close(self) -> None:
        self._model = None
