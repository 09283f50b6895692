"""``python -m benchmarks.model``: eager vs fused torch vs plain vs fused ONNX latency."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from typing import Any

from care_serve.commands.sizes import add_input_size_option

__all__ = ["register", "run"]


def register(subparsers: Any) -> None:
    """Add the ``bench`` subcommand."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "bench",
        help="benchmark CARE variants: torch, fused torch, plain ONNX, fused ONNX",
        description=(
            "Median latency per variant and batch size of (a) the unfused torch model, "
            "(b) the fused torch model, (c) onnxruntime on a plain export and (d) onnxruntime "
            "on care-serve's fused export, measured in interleaved rounds in one run."
        ),
    )
    parser.add_argument(
        "--variants", nargs="+", default=["care_s0", "care_s1", "care_s2"], help="variants"
    )
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 8])
    parser.add_argument(
        "--threads", type=int, default=None, help="intra-op threads (default: available cores)"
    )
    parser.add_argument("--repeats", type=int, default=6, help="interleaved rounds (default 6)")
    parser.add_argument(
        "--number", type=int, default=2, help="calls per runner per round (default 2)"
    )
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls per runner")
    add_input_size_option(parser, "224", "input size")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Run the benchmark and print the table."""
    size = args.input_size

    from benchmarks.model.run import format_table, run_benchmark
    from care_serve.models import get_config
    from care_serve.settings import cpu_count

    for variant in args.variants:
        get_config(variant)
    threads = args.threads or cpu_count()
    start = time.perf_counter()

    def step(message: str) -> None:
        print(f"[{time.perf_counter() - start:6.1f}s] {message}", file=sys.stderr, flush=True)

    results = run_benchmark(
        args.variants,
        args.batch_sizes,
        threads=threads,
        rounds=args.repeats,
        number=args.number,
        warmup=args.warmup,
        resolution=size,
        progress=step,
    )
    print(format_table(results, threads))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``python -m benchmarks.model`` with ``argv``."""
    from benchmarks.entry import run_command

    return run_command("bench", register, argv)
