"""Turning a trained network into a model-store package (fused ONNX + manifest + card)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torch import nn

from care_serve.offline.training.task import TrainTask
from care_serve.store.manifest import InputSpec, Manifest, ModelCard, Preprocessing
from care_serve.store.package import write_package

__all__ = ["export_trained", "package_target", "write_trained_package"]

WEIGHTS_FILE = "model.onnx"


def package_target(
    output: str | os.PathLike[str], name: str | None, version: int | None
) -> tuple[Path, str, int]:
    """(store root, name, version) from ``--model-store`` and the optional ``--name``/``--version``.

    ``output`` is a store root, or a package directory ``.../<name>/<version>``
    whose last two parts give the name and version when they are not passed.
    """
    out = Path(output)
    if out.name.isdigit() and (name is None or name == out.parent.name):
        if version is not None and version != int(out.name):
            raise ValueError(f"--version {version} contradicts the package directory {out}")
        return out.parent.parent, out.parent.name, int(out.name)
    if name is None:
        raise ValueError(
            f"--model-store {out} is not a package directory (<store>/<name>/<version>); "
            "give --name to write the package into this store"
        )
    return out, name, version or 1


def export_trained(
    model: nn.Module, task: TrainTask, input_size: tuple[int, int], path: Path
) -> float | None:
    """Export the fused network to ONNX with parity checked; returns the relative error if known."""
    from care_serve.offline.export import export_onnx

    model.eval()
    result: Any = export_onnx(
        model,
        path,
        input_size=input_size,
        output_names=task.output_names,
        fuse=True,
        verify=True,
    )
    for key in ("max_rel_error", "rel_error", "parity"):
        value = getattr(result, key, None)
        if isinstance(value, int | float):
            return float(value)
    return None


def write_trained_package(
    onnx_path: Path,
    task: TrainTask,
    *,
    store: Path,
    name: str,
    version: int,
    arch: str,
    input_size: tuple[int, int],
    labels: list[str],
    description: str,
    training_command: str,
    metrics: dict[str, float],
    notes: dict[str, Any],
) -> Path:
    """Write (or replace) the package ``store/name/version``; returns its directory."""
    height, width = input_size
    manifest = Manifest(
        name=name,
        version=version,
        task=task.name,
        architecture=arch,
        format="onnx",
        weights=WEIGHTS_FILE,
        num_classes=len(labels),
        input=InputSpec(height=height, width=width),
        preprocessing=Preprocessing(**task.preprocessing),
        outputs=list(task.output_names),
        postprocessing=task.postprocessing(),
        model_card=ModelCard(
            description=description,
            source="trained by care-serve train (weights made by this project)",
            domain="what it was trained on: the training data's images and classes "
            f"({', '.join(labels[:6])}{', ...' if len(labels) > 6 else ''}); nothing else",
            metrics=metrics,
            license="Apache-2.0",
            training_command=training_command,
            notes=notes,
        ),
    )
    return write_package(store, manifest, onnx_path, labels=labels, overwrite=True)
