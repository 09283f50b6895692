"""The model benchmark: eager vs fused torch vs plain vs fused ONNX, measured interleaved.

For each variant and batch size four runners are timed in the same process:
(a) the unfused torch model, (b) the fused torch model, (c) onnxruntime on a
plain ``torch.onnx.export`` of the unfused model (what a research-code user
gets) and (d) onnxruntime on care-serve's fused export with care-serve's session
options (``create_onnx_session``). (c) runs with onnxruntime's default session
options and the same thread count, as a research-code user would; (d0) runs the
fused export with those same defaults, separating the graph's gain from the
session options' gain. Shared machines are
noisy, so the runners are interleaved: every round times each runner
``number`` times, and the table reports medians over all rounds.
"""

from __future__ import annotations

import random
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["RUNNERS", "BenchResult", "format_table", "run_benchmark"]

RUNNERS = ("torch", "torch_fused", "onnx_plain", "onnx_fused_default", "onnx_fused")
RUNNER_TITLES = {
    "torch": "(a) torch",
    "torch_fused": "(b) torch fused",
    "onnx_plain": "(c) ORT plain",
    "onnx_fused_default": "(d0) ORT fused, default opts",
    "onnx_fused": "(d) ORT fused",
}


@dataclass
class BenchResult:
    """Median batch latency (ms) of each runner for one variant and batch size."""

    variant: str
    batch_size: int
    median_ms: dict[str, float] = field(default_factory=dict)
    samples: dict[str, list[float]] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        """(d) / (c): care-serve's ONNX latency relative to the plain export's."""
        return self.median_ms["onnx_fused"] / self.median_ms["onnx_plain"]

    @property
    def graph_ratio(self) -> float:
        """(d0) / (c): the fused graph alone, both with onnxruntime's default options."""
        return self.median_ms["onnx_fused_default"] / self.median_ms["onnx_plain"]


def _time(fn: Callable[[], object], number: int) -> list[float]:
    times = []
    for _ in range(number):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return times


def _run_torch(model: torch.nn.Module, x: torch.Tensor) -> object:
    with torch.inference_mode():
        return model(x)


def _run_ort(session: Any, x: np.ndarray) -> object:
    return session.run(None, {"input": x})


def _default_session(path: Path, threads: int) -> Any:
    """onnxruntime's default options (all optimisations, spinning on), ``threads`` threads.

    One addition: ``session.force_spinning_stop``, so the workers stop spinning
    when a run returns. It does not change the session's own latency (measured)
    but keeps its idle threads from stealing the cores from the runner timed next.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.add_session_config_entry("session.force_spinning_stop", "1")
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def run_benchmark(
    variants: Sequence[str] = ("care_s0", "care_s1", "care_s2"),
    batch_sizes: Sequence[int] = (1, 8),
    *,
    threads: int = 2,
    rounds: int = 10,
    number: int = 3,
    warmup: int = 2,
    resolution: tuple[int, int] = (224, 224),
    progress: Callable[[str], None] | None = None,
) -> list[BenchResult]:
    """Benchmark every variant at every batch size; see the module docstring."""
    from care_serve.backends.onnx_session import create_onnx_session
    from care_serve.models import create_model
    from care_serve.models.fuse import fuse_model
    from care_serve.offline.export import export_onnx

    if threads < 1 or rounds < 1 or number < 1 or warmup < 0:
        raise ValueError("threads, rounds and number must be >= 1 and warmup >= 0")
    if any(b < 1 for b in batch_sizes):
        raise ValueError(f"batch sizes must be >= 1, got {list(batch_sizes)}")
    say = progress or (lambda _msg: None)
    torch.set_num_threads(threads)
    results: list[BenchResult] = []
    with tempfile.TemporaryDirectory(prefix="care-bench-") as tmp:
        for variant in variants:
            say(f"{variant}: building and exporting (plain and fused)")
            model = create_model(variant)
            fused = fuse_model(model)
            paths = {}
            for name, fuse in (("onnx_plain", False), ("onnx_fused", True)):
                paths[name] = Path(tmp) / f"{variant}_{name}.onnx"
                export_onnx(model, paths[name], input_size=resolution, fuse=fuse, threads=threads)
            sessions = {
                "onnx_plain": _default_session(paths["onnx_plain"], threads),
                "onnx_fused_default": _default_session(paths["onnx_fused"], threads),
                "onnx_fused": create_onnx_session(paths["onnx_fused"], threads),
            }
            for batch in batch_sizes:
                x = torch.randn(batch, 3, *resolution)
                runners: dict[str, Callable[[], object]] = {
                    "torch": partial(_run_torch, model, x),
                    "torch_fused": partial(_run_torch, fused, x),
                    "onnx_plain": partial(_run_ort, sessions["onnx_plain"], x.numpy()),
                    "onnx_fused_default": partial(
                        _run_ort, sessions["onnx_fused_default"], x.numpy()
                    ),
                    "onnx_fused": partial(_run_ort, sessions["onnx_fused"], x.numpy()),
                }
                say(f"{variant}: batch {batch}, {rounds} interleaved rounds")
                for fn in runners.values():
                    _time(fn, warmup)
                samples: dict[str, list[float]] = {name: [] for name in RUNNERS}
                # A fresh order every round: a runner timed right after a spinning thread
                # pool (torch's or another session's) is slowed by it, so a fixed order
                # would always hand the same runner the same noisy neighbour.
                order = random.Random(0)
                for _ in range(rounds):
                    names = list(RUNNERS)
                    order.shuffle(names)
                    for name in names:
                        samples[name].extend(_time(runners[name], number))
                results.append(
                    BenchResult(
                        variant,
                        batch,
                        {name: statistics.median(s) for name, s in samples.items()},
                        samples,
                    )
                )
    return results


def format_table(results: Sequence[BenchResult], threads: int) -> str:
    """One table: median ms per batch (and per image), and the (d)/(c) ratio."""
    head = ["variant", "batch"] + [RUNNER_TITLES[r] for r in RUNNERS] + ["(d)/(c)", "(d0)/(c)"]
    rows = []
    for r in results:
        cells = [r.variant, str(r.batch_size)]
        for name in RUNNERS:
            ms = r.median_ms[name]
            per_image = f" ({ms / r.batch_size:.1f}/img)" if r.batch_size > 1 else ""
            cells.append(f"{ms:.1f}{per_image}")
        cells += [f"{r.ratio:.2f}", f"{r.graph_ratio:.2f}"]
        rows.append(cells)
    widths = [max(len(c) for c in col) for col in zip(head, *rows, strict=True)]
    lines = [
        f"median latency in ms per batch, {threads} thread(s), interleaved rounds "
        "(shared machines are noisy: compare within one table only)",
        "  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)),
        "  ".join("-" * w for w in widths),
    ]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(lines)
