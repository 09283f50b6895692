"""``care-serve generate``: write a synthetic shapes dataset in a standard format."""

from __future__ import annotations

import argparse
from typing import Any

TASKS = ("classification", "detection", "segmentation")


def register(subparsers: Any) -> None:
    """Add the ``generate`` subcommand."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "generate",
        help="write a synthetic shapes dataset (image folders, COCO JSON or image/mask PNGs)",
        description=(
            "Write seeded synthetic scenes of circles, squares and triangles. classification: "
            "OUT/SPLIT/<class>/*.png; detection: OUT/SPLIT/*.png + "
            "OUT/annotations/instances_SPLIT.json (COCO); segmentation: OUT/images/SPLIT/*.png + "
            "OUT/masks/SPLIT/*.png (class ids: 0 background, 1 circle, 2 square, 3 triangle)."
        ),
    )
    parser.add_argument("task", choices=TASKS, help="which dataset format to write")
    parser.add_argument("--output", required=True, help="dataset root directory")
    parser.add_argument("--count", type=int, required=True, help="number of scenes")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--split", default="train", help="split folder name (default train)")
    parser.add_argument(
        "--image-format",
        choices=("png", "jpg"),
        default="png",
        help="image file format for classification/detection (segmentation is always png)",
    )
    parser.add_argument(
        "--distribution",
        choices=("wide", "classic"),
        default="wide",
        help="wide (default): shapes 5-95%% of the shorter side, outlines, border cuts, "
        "textures, blur/noise/JPEG, sides up to 2048 px; classic: the earlier filled 8-40%% "
        "shapes on plain backgrounds (same scenes as before for a seed)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Generate the dataset and print where it went."""
    from care_serve.offline.data.generate import generate_dataset

    path = generate_dataset(
        args.task,
        args.output,
        args.count,
        seed=args.seed,
        split=args.split,
        image_format=args.image_format,
        progress=not args.quiet,
        distribution=args.distribution,
    )
    print(f"wrote {args.count} {args.distribution} {args.task} scenes (seed {args.seed}) to {path}")
    return 0
