"""``care-serve evaluate``: accuracy, mAP@0.5 or mIoU of a package, through the serving path."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

TASKS = ("classification", "detection", "segmentation")


def register(subparsers: Any) -> None:
    """Add the ``evaluate`` subcommand."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "evaluate",
        help="score a model package on a dataset (accuracy, COCO mAP@0.5, mIoU)",
        description=(
            "Run every image of the split through the package as the server does (ONNX Runtime "
            "+ the numpy post-processing) and print the task's metrics: classification "
            "accuracy; detection COCO-style mAP@0.5 (101-point AP per class, averaged); "
            "segmentation mIoU over all classes including background (miou) and over the "
            "foreground classes (miou_fg)."
        ),
    )
    p.add_argument("task", choices=TASKS)
    p.add_argument("--package", required=True, type=Path, help="package dir <store>/<name>/<ver>")
    p.add_argument("--data", required=True, type=Path, help="dataset root (see docs/training.md)")
    p.add_argument("--split", default="val", help="split to evaluate (default val)")
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads (default 1)")
    p.add_argument("--json", action="store_true", help="print the metrics as one JSON object")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Evaluate and print the metrics."""
    from service.evaluation.evaluate import evaluate_package

    if args.threads < 1:
        raise ValueError(f"--threads must be at least 1, got {args.threads}")
    metrics = evaluate_package(
        args.package,
        args.data,
        args.split,
        task=args.task,
        threads=args.threads,
        progress=not args.quiet,
    )
    if args.json:
        print(json.dumps(metrics, indent=2))
    else:
        width = max(len(k) for k in metrics)
        for key, value in metrics.items():
            print(
                f"{key:<{width}}  {value:.4f}"
                if key != "images"
                else f"{key:<{width}}  {value:.0f}"
            )
    return 0
