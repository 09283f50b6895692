"""Dense-task benchmark: the backbone alone vs the whole network, in onnxruntime.

For each task (detection, segmentation) and CARE variant, two fused ONNX files
are exported at the same input size: the backbone alone (returning the stage
outputs the network reads) and the whole network. The runners, timed
interleaved in one process (shared machines are noisy):

- ``pre``: preprocessing of an ``image_size`` RGB image (letterbox + normalise);
- ``backbone``: onnxruntime on the backbone;
- ``network``: onnxruntime on the whole network;
- ``post``: numpy post-processing of the network's outputs. For detection this is
  the worst case: every (point, class) pair passes the score threshold, so
  top-k (``pre_nms_top_k``) and NMS run at full size. For segmentation it is the
  resize of the logits to the ``image_size`` image and the argmax.

``overhead = (network + post) / backbone - 1`` is what the neck, the head and the
post-processing add to the backbone's own latency (target: at most 0.5).
"""

from __future__ import annotations

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
from torch import nn

__all__ = ["DENSE_RUNNERS", "DenseBenchResult", "format_dense_table", "run_dense_benchmark"]

DENSE_RUNNERS = ("pre", "backbone", "network", "post")
TASKS = ("detection", "segmentation")


@dataclass
class DenseBenchResult:
    """Median latency (ms, batch 1) of each runner for one task, variant and input size."""

    task: str
    variant: str
    input_size: tuple[int, int]
    image_size: tuple[int, int]
    median_ms: dict[str, float] = field(default_factory=dict)
    samples: dict[str, list[float]] = field(default_factory=dict)

    @property
    def overhead(self) -> float:
        """``(network + post) / backbone - 1``: the cost of neck, head and post-processing."""
        m = self.median_ms
        return (m["network"] + m["post"]) / m["backbone"] - 1.0


class _BackboneOnly(nn.Module):
    """The network's backbone returning the stage outputs at ``strides``."""

    def __init__(self, backbone: nn.Module, strides: Sequence[int]) -> None:
        super().__init__()
        self.backbone = backbone
        all_strides = [int(info["reduction"]) for info in backbone.feature_info]  # type: ignore[union-attr]
        self.indices = [all_strides.index(s) for s in strides]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        feats = self.backbone.forward_intermediates(x)  # type: ignore[operator]
        return tuple(feats[i] for i in self.indices)


CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}


def _time(fn: Callable[[], object], number: int, clock: Callable[[], float]) -> list[float]:
    times = []
    for _ in range(number):
        start = clock()
        fn()
        times.append((clock() - start) * 1e3)
    return times


def _build(
    task: str, variant: str, num_classes: int
) -> tuple[nn.Module, list[int], tuple[str, ...]]:
    if task == "detection":
        from care_serve.models.detection import CAREDetector

        det = CAREDetector(variant, num_classes=num_classes)
        return det, list(det.strides), det.output_names
    if task == "segmentation":
        from care_serve.models.segmentation import SEGMENTATION_STRIDES, CARESegmenter

        seg = CARESegmenter(variant, num_classes=num_classes)
        return seg, list(SEGMENTATION_STRIDES), seg.output_names
    raise ValueError(f"unknown task {task!r}; choose from {', '.join(TASKS)}")


def _post_runner(
    task: str, outputs: list[np.ndarray], meta: Any, score_threshold: float
) -> Callable[[], object]:
    if task == "detection":
        from care_serve.postprocess.detection import postprocess_detections

        cls_logits, box_ltrb = outputs[0][0], outputs[1][0]
        return partial(
            postprocess_detections, cls_logits, box_ltrb, meta, score_threshold=score_threshold
        )
    from care_serve.postprocess.segmentation import class_shares, logits_to_mask

    logits = outputs[0][0]
    return lambda: class_shares(logits_to_mask(logits, meta), logits.shape[0])


def run_dense_benchmark(
    tasks: Sequence[str] = TASKS,
    variants: Sequence[str] = ("care_tiny", "care_s0"),
    *,
    input_size: tuple[int, int] = (320, 320),
    image_size: tuple[int, int] = (640, 480),
    num_classes: int = 3,
    threads: int = 2,
    rounds: int = 10,
    number: int = 3,
    warmup: int = 2,
    clock: str = "wall",
    post_score_threshold: float = 0.0,
    progress: Callable[[str], None] | None = None,
) -> list[DenseBenchResult]:
    """Benchmark each task x variant at batch 1; see the module docstring.

    ``input_size`` is the network input ``(height, width)`` (multiples of 32);
    ``image_size`` the client image ``(width, height)`` for pre/post-processing.
    Random weights (latency does not depend on them, except detection
    post-processing: with ``post_score_threshold=0`` every candidate passes, the
    worst case). ``clock="cpu"`` times process CPU time instead of wall time:
    steadier on a busy shared machine, but only a latency with ``threads=1``.
    """
    from care_serve.backends.onnx_session import create_onnx_session
    from care_serve.imaging.letterbox import preprocess
    from care_serve.offline.export import export_onnx

    if threads < 1 or rounds < 1 or number < 1 or warmup < 0:
        raise ValueError("threads, rounds and number must be >= 1 and warmup >= 0")
    if clock not in CLOCKS:
        raise ValueError(f"clock must be one of {', '.join(CLOCKS)}, got {clock!r}")
    timer = CLOCKS[clock]
    for task in tasks:
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; choose from {', '.join(TASKS)}")
    say = progress or (lambda _msg: None)
    torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (image_size[1], image_size[0], 3), dtype=np.uint8)
    size_wh = (input_size[1], input_size[0])
    results: list[DenseBenchResult] = []
    with tempfile.TemporaryDirectory(prefix="care-dense-bench-") as tmp:
        for task in tasks:
            for variant in variants:
                say(f"{task} / {variant}: building and exporting backbone and network")
                model, strides, names = _build(task, variant, num_classes)
                model.eval()
                backbone = _BackboneOnly(model.backbone, strides).eval()  # type: ignore[arg-type]
                paths = {"backbone": Path(tmp) / f"{task}_{variant}_backbone.onnx"}
                paths["network"] = Path(tmp) / f"{task}_{variant}_network.onnx"
                export_onnx(
                    backbone,
                    paths["backbone"],
                    input_size=input_size,
                    output_names=tuple(f"stride{s}" for s in strides),
                    threads=threads,
                )
                export_onnx(
                    model,
                    paths["network"],
                    input_size=input_size,
                    output_names=names,
                    threads=threads,
                )
                sessions = {k: create_onnx_session(p, threads) for k, p in paths.items()}
                x, meta = preprocess(image, size_wh)
                batch = x[None]
                outputs = sessions["network"].run(None, {"input": batch})
                runners: dict[str, Callable[[], object]] = {
                    "pre": partial(preprocess, image, size_wh),
                    "backbone": partial(sessions["backbone"].run, None, {"input": batch}),
                    "network": partial(sessions["network"].run, None, {"input": batch}),
                    "post": _post_runner(task, outputs, meta, post_score_threshold),
                }
                say(f"{task} / {variant}: {rounds} interleaved rounds")
                for fn in runners.values():
                    _time(fn, warmup, timer)
                samples: dict[str, list[float]] = {name: [] for name in DENSE_RUNNERS}
                for _ in range(rounds):
                    for name in DENSE_RUNNERS:
                        samples[name].extend(_time(runners[name], number, timer))
                results.append(
                    DenseBenchResult(
                        task,
                        variant,
                        input_size,
                        image_size,
                        {name: statistics.median(s) for name, s in samples.items()},
                        samples,
                    )
                )
    return results


def format_dense_table(
    results: Sequence[DenseBenchResult], threads: int, clock: str = "wall"
) -> str:
    """One table: median ms per runner and the overhead over the backbone."""
    head = ["task", "variant", "input HxW", "pre", "backbone", "network", "post", "overhead"]
    rows = []
    for r in results:
        m = r.median_ms
        rows.append(
            [
                r.task,
                r.variant,
                f"{r.input_size[0]}x{r.input_size[1]}",
                f"{m['pre']:.2f}",
                f"{m['backbone']:.2f}",
                f"{m['network']:.2f}",
                f"{m['post']:.2f}",
                f"{100 * r.overhead:+.0f}%",
            ]
        )
    widths = [max(len(c) for c in col) for col in zip(head, *rows, strict=True)]
    image = results[0].image_size if results else (0, 0)
    lines = [
        f"median {clock}-clock ms at batch 1, onnxruntime, {threads} thread(s), interleaved "
        "rounds; pre/post "
        f"for a {image[0]}x{image[1]} image; overhead = (network + post) / backbone - 1 "
        "(shared machines are noisy: compare within one table only)",
        "  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)),
        "  ".join("-" * w for w in widths),
    ]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(lines)
