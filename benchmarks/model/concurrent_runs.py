"""One run with every thread against runs side by side on a share of them each.

    .venv/bin/python -m benchmarks.model.concurrent_runs [--onnx model.onnx] [--threads 2]
        [--batch-sizes 1 4 8] [--seconds 3] [--rounds 3]

What ``concurrent_batches`` rests on (``care_serve/serving/compute.py``): the images
per second of one onnxruntime session with ``--threads`` intra-op threads called
by one thread (``one run``), of one session with ``--threads`` threads called by
``--threads`` threads at once (``shared``: what a server without batching does
when requests overlap), and of one session with a single thread called by
``--threads`` threads at once (``side by side``: care-serve under load), with the
cores each kept busy. The configurations are measured in interleaved rounds of
``--seconds`` each (every loop bounded by its time). Without ``--onnx`` a CARE-S0
with random weights is exported first (needs torch).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["measure", "register", "run"]

CONFIGS = ("one run", "shared", "side by side")


def measure(session: Any, callers: int, batch: int, seconds: float) -> tuple[float, float]:
    """``(images/s, cores busy)`` of ``callers`` threads calling ``session`` for ``seconds``."""
    name = session.get_inputs()[0].name
    x = np.random.default_rng(0).standard_normal((batch, *_shape(session))).astype(np.float32)
    session.run(None, {name: x})
    counts = [0] * callers
    end = time.perf_counter() + seconds

    def call(i: int) -> None:
        while time.perf_counter() < end:
            session.run(None, {name: x})
            counts[i] += batch

    threads = [threading.Thread(target=call, args=(i,)) for i in range(callers)]
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - wall0
    return sum(counts) / wall, (time.process_time() - cpu0) / wall


def _shape(session: Any) -> tuple[int, ...]:
    dims = session.get_inputs()[0].shape[1:]
    return tuple(d if isinstance(d, int) else 224 for d in dims)


def register(subparsers: Any) -> None:
    """Add the ``concurrent-runs`` subcommand."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "concurrent-runs",
        help="one run with every thread vs runs side by side on one thread each",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    parser.add_argument("--onnx", type=Path, default=None, help="ONNX file (default: CARE-S0)")
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads (default 2)")
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 4, 8])
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Measure and print the table."""
    from care_serve.backends.onnx_session import create_onnx_session

    if args.threads < 2 or args.seconds <= 0 or args.rounds < 1:
        print("need --threads >= 2, --seconds > 0 and --rounds >= 1", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        onnx = args.onnx
        if onnx is None:
            from benchmarks.load.client import build_bench_store

            print("exporting care_s0 (random weights) ...", file=sys.stderr, flush=True)
            onnx = build_bench_store(Path(tmp)) / "care_s0-bench" / "1" / "model.onnx"
        wide = create_onnx_session(onnx, args.threads)
        narrow = create_onnx_session(onnx, 1)
        setups = {
            "one run": (wide, 1),
            "shared": (wide, args.threads),
            "side by side": (narrow, args.threads),
        }
        results: dict[tuple[str, int], list[tuple[float, float]]] = {}
        for r in range(args.rounds):
            for batch in args.batch_sizes:
                order = CONFIGS[r % 3 :] + CONFIGS[: r % 3]
                for config in order:
                    session, callers = setups[config]
                    results.setdefault((config, batch), []).append(
                        measure(session, callers, batch, args.seconds)
                    )
    print(format_table(results, args.batch_sizes, args.threads, args.rounds, args.seconds))
    return 0


def format_table(
    results: dict[tuple[str, int], list[tuple[float, float]]],
    batch_sizes: Sequence[int],
    threads: int,
    rounds: int,
    seconds: float,
) -> str:
    """Median images/s (and cores busy) per configuration and batch size, and the ratio."""
    lines = [
        f"{threads} intra-op threads; median of {rounds} interleaved rounds of {seconds:g} s",
        "",
        "| batch | " + " | ".join(f"{c} img/s (cores)" for c in CONFIGS)
        + " | side by side / one run |",
        "|---:|" + "---:|" * (len(CONFIGS) + 1),
    ]  # fmt: skip
    for batch in batch_sizes:
        cells, rates = [], {}
        for config in CONFIGS:
            samples = results[(config, batch)]
            rate = statistics.median(s[0] for s in samples)
            cores = statistics.median(s[1] for s in samples)
            rates[config] = rate
            cells.append(f"{rate:.1f} ({cores:.2f})")
        ratio = rates["side by side"] / rates["one run"]
        lines.append(f"| {batch} | " + " | ".join(cells) + f" | {ratio:.2f}x |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``python -m benchmarks.model.concurrent_runs`` with ``argv``."""
    from benchmarks.entry import run_command

    return run_command("concurrent-runs", register, argv)


if __name__ == "__main__":
    raise SystemExit(main())
