"""``care-serve train``: fine-tune a CARE model on a standard dataset into a model package."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path
from typing import Any

from care_serve.commands.sizes import add_input_size_option

TASKS = ("classification", "detection", "segmentation")
DEFAULT_INPUT = {"classification": 224, "detection": 320, "segmentation": 256}


def register(subparsers: Any) -> None:
    """Add the ``train`` subcommand."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "train",
        help="fine-tune a CARE model on a dataset and write a model package",
        description=(
            "Train from an image-folder tree (classification), COCO JSON (detection) or "
            "image/mask PNG pairs (segmentation); write a model-store package (fused ONNX, "
            "manifest, model card) and evaluate it on --val-split when the data has one."
        ),
    )
    p.add_argument("task", choices=TASKS)
    p.add_argument("--data", required=True, type=Path, help="dataset root (see docs/training.md)")
    p.add_argument(
        "--model-store",
        required=True,
        type=Path,
        help="the model store to write into (with --name), or a package directory "
        "<store>/<name>/<version>",
    )
    p.add_argument("--name", help="model name in the store (default: from --model-store)")
    p.add_argument(
        "--overwrite", action="store_true", help="replace an existing package (checked first)"
    )
    p.add_argument("--version", type=int, help="package version (default 1)")
    p.add_argument("--arch", default="care_tiny", help="CARE variant (default care_tiny)")
    p.add_argument("--split", default="train", help="training split (default train)")
    p.add_argument(
        "--val-split",
        default="val",
        help="split evaluated into the model card (default val; '' = none)",
    )
    length = p.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=float, help="passes over the data (default 30)")
    length.add_argument("--steps", type=int, help="optimizer steps (instead of --epochs)")
    add_input_size_option(
        p, None, "network input", default_text="default: 224 cls, 320 det, 256 seg"
    )
    p.add_argument("--batch-size", type=int, default=32, help="images per step (default 32)")
    p.add_argument(
        "--train-crop",
        type=int,
        help="detection/segmentation: train on random SxS crops of the letterboxed inputs",
    )
    p.add_argument(
        "--hard-pixels",
        type=float,
        metavar="FRACTION",
        help="segmentation: average the loss over only the hardest FRACTION (0-1] of the "
        "labelled pixels (online hard example mining), so thin strokes and small shapes count",
    )
    p.add_argument("--lr", type=float, default=2e-3, help="peak AdamW learning rate (default 2e-3)")
    p.add_argument(
        "--init-checkpoint",
        type=Path,
        help="official ImageNet CARE checkpoint (.pth.tar) to start from (heads are not taken)",
    )
    p.add_argument(
        "--init-weights",
        type=Path,
        help="start from every weight of a trained network of the same task, --arch and class "
        "count (a run's WORK_DIR/train_state.pt), e.g. to fine-tune at another --input-size",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--resume", action="store_true", help="continue the run saved in --work-dir")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--work-dir", type=Path, help="training state and ONNX (default runs/<name>)")
    p.add_argument(
        "--checkpoint-every", type=int, default=100, help="save the training state every N steps"
    )
    p.add_argument(
        "--description",
        help="the model card's one-line description (default: written from the task and the "
        "data's class names)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(handler=run)


def _command(args: argparse.Namespace) -> str:
    parts = ["python", "-m", "care_serve", "train", args.task]
    for flag in (
        "data", "model_store", "name", "version", "arch", "split", "val_split", "epochs", "steps",
        "batch_size", "train_crop", "hard_pixels", "lr", "init_checkpoint", "init_weights",
        "seed", "threads", "description",
    ):  # fmt: skip
        value = getattr(args, flag)
        if value is not None:
            parts += [f"--{flag.replace('_', '-')}", str(value)]
    if args.input_size is not None:
        parts += ["--input-size", "x".join(str(s) for s in args.input_size)]
    return shlex.join(parts)


def run(args: argparse.Namespace) -> int:
    """Run the training pipeline and print the package and its metrics."""
    from care_serve.offline.training.pipeline import TrainOptions, run_training

    if args.batch_size < 1 or args.checkpoint_every < 1:
        raise ValueError("--batch-size and --checkpoint-every must be at least 1")
    size = args.input_size or (DEFAULT_INPUT[args.task],) * 2
    outcome = run_training(
        TrainOptions(
            task=args.task,
            data=args.data,
            output=args.model_store,
            arch=args.arch,
            name=args.name,
            version=args.version,
            split=args.split,
            val_split=args.val_split or None,
            input_size=size,
            epochs=args.epochs,
            steps=args.steps,
            batch_size=args.batch_size,
            train_crop=args.train_crop,
            hard_pixels=args.hard_pixels,
            lr=args.lr,
            init_checkpoint=args.init_checkpoint,
            init_weights=args.init_weights,
            seed=args.seed,
            resume=args.resume,
            threads=args.threads,
            work_dir=args.work_dir,
            overwrite=args.overwrite,
            checkpoint_every=args.checkpoint_every,
            progress=not args.quiet,
            command=_command(args),
            description=args.description,
        )
    )
    print(f"package: {outcome.package}")
    for key, value in outcome.metrics.items():
        print(f"  {key}: {value:.4f}")
    return 0
