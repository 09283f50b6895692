"""``care-serve import``: turn a CARE checkpoint into a model-store package.

The work is ``care_serve.offline.importer.import_checkpoint``; this module parses.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from care_serve.commands.sizes import add_input_size_option
from care_serve.offline.importer import IMPORT_TASKS, ImportOptions, ImportResult


def register(subparsers: Any) -> None:
    """Add the ``import`` subcommand."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "import",
        help="package an official checkpoint (fused ONNX or PyTorch) into the model store",
        description="Load CKPT (an official-format CARE checkpoint) with strict checking and "
        "write STORE/NAME/VERSION/ with the weights (fused ONNX, or the checkpoint for "
        "--format pytorch), manifest.json and labels.txt.",
    )
    parser.add_argument("checkpoint", metavar="CKPT", help="checkpoint file (.pth/.pth.tar)")
    parser.add_argument("--arch", required=True, help="variant, e.g. care_s0, care_s1, care_s2")
    parser.add_argument(
        "--task",
        choices=IMPORT_TASKS,
        default="classification",
        help="classification (default): class probabilities; embedding: the image's feature "
        "vector (the classifier's pre-logits), for similarity search",
    )
    parser.add_argument("--name", required=True, help="model name in the store")
    parser.add_argument("--version", type=int, default=1, help="package version (default 1)")
    parser.add_argument(
        "--labels",
        default=None,
        help="class names: 'imagenet' (the 1000 ImageNet classes shipped with care-serve) or "
        "a text file with one name a line (default: imagenet for 1000 classes)",
    )
    parser.add_argument(
        "--model-store", default="model_store", help="model store (default model_store)"
    )
    parser.add_argument("--format", choices=("onnx", "pytorch"), default="onnx")
    add_input_size_option(parser, "224", "network input of the package")
    parser.add_argument("--description", default="", help="model card description")
    parser.add_argument("--license", default="", help="license of the weights")
    parser.add_argument("--no-ema", action="store_true", help="prefer non-EMA weights")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing package")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Build the package and print where it went."""
    from care_serve.offline.importer import import_checkpoint

    options = ImportOptions(
        checkpoint=Path(args.checkpoint),
        arch=args.arch,
        name=args.name,
        task=args.task,
        version=args.version,
        model_store=Path(args.model_store),
        labels=args.labels,
        format=args.format,
        input_size=args.input_size,
        description=args.description,
        license=args.license,
        use_ema=not args.no_ema,
        overwrite=args.overwrite,
    )
    print_result(import_checkpoint(options, progress=progress_printer()), options)
    return 0


def print_result(result: ImportResult, options: ImportOptions) -> None:
    """Where the package went, its format, classes, input size and export parity."""
    height, width = options.input_size
    print(
        f"wrote {result.path} ({options.format}, {options.task}, {result.num_classes} "
        f"{'values' if options.task == 'embedding' else 'classes'}, input {height}x{width})"
    )
    if result.rel_error is not None:
        print(f"export parity: relative error {result.rel_error:.2e}")


def progress_printer() -> Callable[[str], None]:
    """Prints each step to stderr with the seconds since the import began."""
    start = time.perf_counter()

    def step(message: str) -> None:
        print(f"[{time.perf_counter() - start:6.1f}s] {message}", file=sys.stderr, flush=True)

    return step
