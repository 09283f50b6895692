"""``care-serve evaluate``: accuracy, mAP@0.5 or mIoU of a package, through the serving path."""

from __future__ import annotations

import argparse
import json
import sys
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
            "accuracy; detection COCO-style mAP@0.5 (101-point AP per class, averaged) and, at "
            "the manifest's score_threshold (the served default), precision, recall, F1 and "
            "duplicate_rate (extra boxes on an already-found object, per object); "
            "segmentation mIoU over all classes including background (miou) and over the "
            "foreground classes (miou_fg). On generated data (styles_SPLIT.json) also per bucket "
            "of shape size, fill, line width, border cut, background and degradation, and the "
            "commonest errors."
        ),
    )
    p.add_argument("task", choices=TASKS)
    p.add_argument("--package", required=True, type=Path, help="package dir <store>/<name>/<ver>")
    p.add_argument("--data", required=True, type=Path, help="dataset root (see docs/training.md)")
    p.add_argument("--split", default="val", help="split to evaluate (default val)")
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads (default 1)")
    p.add_argument(
        "--class-agnostic-nms",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="detection: NMS over all classes at once (or, with --no-..., per class); "
        "default: the manifest's postprocessing.class_agnostic_nms",
    )
    p.add_argument(
        "--score-thresholds",
        type=_thresholds,
        default=(),
        metavar="T1,T2,...",
        help="detection: also report precision, recall, F1 and duplicate_rate at these score "
        "thresholds (e.g. 0.3,0.4,0.5,0.6), as f1@0.4 ...",
    )
    p.add_argument(
        "--write-card",
        action="store_true",
        help="also write the result into the package's model card (metrics, per-bucket "
        "figures, failure modes, what it was evaluated on), e.g. after changing its served "
        "defaults",
    )
    p.add_argument("--json", action="store_true", help="print the metrics as one JSON object")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=run)


def _thresholds(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers in [0, 1], got {text!r}"
        ) from None
    if not values or not all(0.0 <= v <= 1.0 for v in values):
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers in [0, 1], got {text!r}"
        )
    return values


def run(args: argparse.Namespace) -> int:
    """Evaluate and print the metrics."""
    from care_serve.offline.evaluation.evaluate import DetectionOptions, evaluate

    if args.threads < 1:
        raise ValueError(f"--threads must be at least 1, got {args.threads}")
    if args.write_card and args.class_agnostic_nms is not None:
        raise ValueError(
            "--write-card records what the package serves: change postprocessing."
            "class_agnostic_nms in its manifest instead of overriding it here"
        )
    report = evaluate(
        args.package,
        args.data,
        args.split,
        task=args.task,
        threads=args.threads,
        progress=not args.quiet,
        detection=DetectionOptions(args.class_agnostic_nms, args.score_thresholds),
    )
    if args.write_card:
        from care_serve.offline.training.card import write_card_evaluation

        if write_card_evaluation(args.package, args.task, report, args.data, args.split):
            print(
                f"{args.package}: removed manifest.sig, which signed the old manifest; sign the "
                "package again (care-serve sign PACKAGE_DIR --key PRIVATE_KEY_PEM)",
                file=sys.stderr,
            )
    metrics = report.metrics
    if args.json:
        document: dict[str, Any] = dict(metrics)
        if report.buckets:
            document["buckets"] = report.buckets
        document["failures"] = report.failures
        print(json.dumps(document, indent=2))
        return 0
    width = max(len(k) for k in metrics)
    for key, value in metrics.items():
        print(f"{key:<{width}}  {value:.4f}" if key != "images" else f"{key:<{width}}  {value:.0f}")
    if report.buckets:
        print()
        print(bucket_table(report.buckets))
    if report.failures:
        print()
        print("commonest errors:")
        for line in report.failures:
            print(f"  {line}")
    return 0


def bucket_table(buckets: dict[str, dict[str, float]]) -> str:
    """The per-bucket metrics as a fixed-width text table (``-`` where a metric does not apply)."""
    columns: list[str] = []
    for row in buckets.values():
        columns += [k for k in row if k != "count" and k not in columns]
    columns.append("count")
    width = max(len(name) for name in buckets)
    lines = [f"{'bucket':<{width}}  " + "  ".join(f"{c:>12}" for c in columns)]
    for name, row in buckets.items():
        cells = []
        for c in columns:
            if c not in row:
                cells.append(f"{'-':>12}")
            elif c == "count":
                cells.append(f"{row[c]:>12.0f}")
            else:
                cells.append(f"{row[c]:>12.4f}")
        lines.append(f"{name:<{width}}  " + "  ".join(cells))
    return "\n".join(lines)
