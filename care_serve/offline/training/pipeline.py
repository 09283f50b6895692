"""The whole ``care-serve train`` pipeline, from a dataset directory to a model package."""

from __future__ import annotations

import functools
import math
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from care_serve.errors import ModelStoreError
from care_serve.offline.training.card import (
    card_evaluation,
    default_description,
    generator_notes,
    training_domain,
)
from care_serve.offline.training.loop import (
    TrainConfig,
    TrainResult,
    load_network_weights,
    train_loop,
)
from care_serve.offline.training.package import (
    export_trained,
    package_target,
    write_trained_package,
)
from care_serve.offline.training.task import TrainTask

__all__ = ["TrainOptions", "TrainOutcome", "get_train_task", "run_training"]


def get_train_task(name: str) -> TrainTask:
    """The training task object for ``name``."""
    if name == "classification":
        from care_serve.offline.training.classification import ClassificationTraining

        return ClassificationTraining()
    if name == "detection":
        from care_serve.offline.training.detection import DetectionTraining

        return DetectionTraining()
    if name == "segmentation":
        from care_serve.offline.training.segmentation import SegmentationTraining

        return SegmentationTraining()
    raise ValueError(f"unknown task {name!r}; choose classification, detection or segmentation")


@dataclass
class TrainOptions:
    """Everything ``care-serve train`` was asked to do."""

    task: str
    data: Path
    output: Path
    arch: str = "care_tiny"
    name: str | None = None
    version: int | None = None
    split: str = "train"
    val_split: str | None = "val"
    input_size: tuple[int, int] = (224, 224)  # (height, width)
    epochs: float | None = None
    steps: int | None = None
    batch_size: int = 32
    lr: float = 2e-3
    train_crop: int | None = None
    hard_pixels: float | None = None  # segmentation: OHEM share of the labelled pixels
    init_checkpoint: Path | None = None
    init_weights: Path | None = None  # a whole trained network (train_state.pt)
    seed: int = 0
    resume: bool = False
    overwrite: bool = False  # replace an existing package of the same name and version
    threads: int = 1
    work_dir: Path | None = None
    checkpoint_every: int = 100
    progress: bool = True
    command: str = ""
    description: str | None = None  # default: written from the data's class names
    stop_after: int | None = None  # for tests: stop early as if interrupted (state saved)


@dataclass
class TrainOutcome:
    """What a run produced."""

    package: Path | None
    result: TrainResult
    metrics: dict[str, float] = field(default_factory=dict)
    state_path: Path | None = None


def _steps(opts: TrainOptions, num_samples: int) -> int:
    if opts.steps is not None:
        if opts.steps < 1:
            raise ValueError(f"--steps must be at least 1, got {opts.steps}")
        return opts.steps
    epochs = 30.0 if opts.epochs is None else opts.epochs
    if epochs <= 0:
        raise ValueError(f"--epochs must be positive, got {epochs}")
    return max(1, math.ceil(epochs * num_samples / min(opts.batch_size, num_samples)))


def _check_crop(opts: TrainOptions) -> None:
    if opts.train_crop is None:
        return
    if opts.task == "classification":
        raise ValueError("--train-crop is for detection and segmentation only")
    height, width = opts.input_size
    if opts.train_crop % 32 or not 32 <= opts.train_crop <= min(height, width):
        raise ValueError(
            f"--train-crop must be a multiple of 32 no larger than the input size "
            f"{height}x{width}, got {opts.train_crop}"
        )


def _card_notes(
    opts: TrainOptions, cfg: TrainConfig, model: torch.nn.Module, result: TrainResult, n: int
) -> dict[str, Any]:
    """The model card's record of the run."""
    tail = result.losses[-50:]
    return {
        "data": str(opts.data),
        "split": opts.split,
        "train_images": n,
        "steps": cfg.steps,
        "batch_size": cfg.batch_size,
        "epochs": round(cfg.steps * cfg.batch_size / n, 2),
        "final_loss": round(sum(tail) / len(tail), 5),
        "train_seconds": round(result.seconds, 1),
        "threads": opts.threads,
        "cpu": platform.processor() or platform.machine(),
        "model_kwargs": getattr(model, "init_kwargs", {"num_classes": cfg.num_classes}),
        "train_crop": opts.train_crop,
        "hard_pixels": opts.hard_pixels,
        "lr": opts.lr,
        "init_checkpoint": str(opts.init_checkpoint) if opts.init_checkpoint else None,
        "init_weights": str(opts.init_weights) if opts.init_weights else None,
        "seed": opts.seed,
        "date": time.strftime("%Y-%m-%d"),
        **generator_notes(opts.data, opts.split),
    }


def run_training(opts: TrainOptions) -> TrainOutcome:
    """Train, export, package and evaluate (see the module docstrings of the parts)."""
    store, name, version = package_target(opts.output, opts.name, opts.version)
    task = get_train_task(opts.task)
    if opts.threads < 1:
        raise ValueError(f"--threads must be at least 1, got {opts.threads}")
    _check_crop(opts)
    task.crop = opts.train_crop
    if opts.hard_pixels is not None:
        if opts.task != "segmentation":
            raise ValueError("--hard-pixels is for segmentation only")
        if not 0.0 < opts.hard_pixels <= 1.0:
            raise ValueError(f"--hard-pixels must be in (0, 1], got {opts.hard_pixels}")
        task.hard_pixels = opts.hard_pixels
    if opts.init_checkpoint and opts.init_weights:
        raise ValueError(
            "give --init-checkpoint (a backbone) or --init-weights (a whole network), not both"
        )
    existing = store / name / str(version)
    if existing.exists() and not opts.overwrite:
        raise ModelStoreError(
            f"{existing} already exists; pass --overwrite to replace it, or --version N"
        )
    torch.set_num_threads(opts.threads)
    torch.manual_seed(opts.seed)
    height, width = opts.input_size
    data = task.load(opts.data, opts.split, (width, height), opts.progress)
    cfg = TrainConfig(
        task=opts.task,
        arch=opts.arch,
        input_size=opts.input_size,
        steps=_steps(opts, len(data)),
        num_classes=task.num_classes(data),
        batch_size=opts.batch_size,
        lr=opts.lr,
        seed=opts.seed,
        checkpoint_every=opts.checkpoint_every,
        crop=opts.train_crop,
        hard_pixels=opts.hard_pixels,
    )
    model = task.build_model(opts.arch, cfg.num_classes, opts.init_checkpoint)
    if opts.init_weights and not opts.resume:
        load_network_weights(model, opts.init_weights)
    work_dir = opts.work_dir or Path("runs") / name
    state_path = work_dir / "train_state.pt"
    result = train_loop(
        model,
        task,
        data,
        cfg,
        state_path,
        resume=opts.resume,
        progress=opts.progress,
        stop_after=opts.stop_after,
    )
    outcome = TrainOutcome(None, result, state_path=state_path)
    if len(result.losses) < cfg.steps:
        return outcome  # interrupted on purpose (stop_after): resume later
    backbone = getattr(model, "backbone", None)
    if isinstance(backbone, torch.nn.Module):  # official-format backbone, for --init-checkpoint
        torch.save(backbone.state_dict(), work_dir / "backbone.pth.tar")
    onnx_path = work_dir / "model.onnx"
    parity = export_trained(model, task, opts.input_size, onnx_path)
    notes = _card_notes(opts, cfg, model, result, len(data))
    labels = task.labels(data)
    notes["training_domain"] = training_domain(notes.get("generator"), str(opts.data), len(data))
    if parity is not None:
        notes["export_parity_rel_error"] = parity
    write = functools.partial(
        write_trained_package,
        onnx_path,
        task,
        store=store,
        name=name,
        version=version,
        arch=opts.arch,
        input_size=opts.input_size,
        labels=labels,
        description=opts.description or default_description(opts.task, labels),
        training_command=opts.command,
    )
    package = write(metrics={}, notes=notes)
    metrics: dict[str, float] = {}
    if opts.val_split and _has_split(task.name, opts.data, opts.val_split):
        from care_serve.offline.evaluation.evaluate import evaluate

        report = evaluate(
            package, opts.data, opts.val_split, threads=opts.threads, progress=opts.progress
        )
        metrics, evaluation_notes = card_evaluation(opts.task, report, opts.data, opts.val_split)
        notes.update(evaluation_notes)
        package = write(metrics=metrics, notes=notes)
    outcome.package, outcome.metrics = package, metrics
    return outcome


def _has_split(task: str, data: Path, split: str) -> bool:
    if task == "classification":
        return (data / split).is_dir()
    if task == "detection":
        return (data / "annotations" / f"instances_{split}.json").is_file()
    return (data / "images" / split).is_dir()
