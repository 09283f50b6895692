"""ONNX export of CARE models (and anything built on them), verified against torch.

``export_onnx`` fuses the model (see ``care_serve.models.fuse``), exports it with
the TorchScript exporter (dynamic batch, height and width), runs
``onnx.checker``, runs the file once in onnxruntime against the torch model and
raises ``ExportError`` when they disagree. The signature is stable: the
``import`` command and the dense-task models call it.
"""

from __future__ import annotations

import collections
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from care_serve.errors import ExportError

__all__ = ["DEFAULT_OPSET", "ExportReport", "export_onnx", "relative_error"]

DEFAULT_OPSET = 17
DEFAULT_TOLERANCE = 1e-4
Progress = Callable[[str], None]


@dataclass
class ExportReport:
    """What ``export_onnx`` wrote and how well it agrees with torch."""

    path: Path
    input_name: str
    output_names: tuple[str, ...]
    input_shape: tuple[int, ...]
    opset: int
    fused: bool
    rel_errors: dict[str, float] = field(default_factory=dict)
    num_nodes: int = 0
    op_histogram: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def max_rel_error(self) -> float:
        """The largest relative error over all outputs and checked shapes (0 if not verified)."""
        return max(self.rel_errors.values(), default=0.0)

    def summary(self) -> str:
        """A few human-readable lines."""
        ops = ", ".join(f"{op} {n}" for op, n in list(self.op_histogram.items())[:8])
        errors = ", ".join(f"{k}: {v:.2e}" for k, v in self.rel_errors.items()) or "not verified"
        return (
            f"wrote {self.path} (opset {self.opset}, {'fused' if self.fused else 'unfused'}, "
            f"{self.num_nodes} nodes: {ops})\n"
            f"relative error onnxruntime vs torch: {errors}\n"
            f"took {self.seconds:.1f} s"
        )


def relative_error(out: np.ndarray, ref: np.ndarray) -> float:
    """``||out - ref|| / ||ref||`` in float64 (``||out - ref||`` when ``ref`` is all zeros)."""
    out64, ref64 = np.asarray(out, np.float64), np.asarray(ref, np.float64)
    if out64.shape != ref64.shape:
        raise ExportError(f"output shape {out64.shape} differs from torch's {ref64.shape}")
    diff = float(np.linalg.norm(out64 - ref64))
    norm = float(np.linalg.norm(ref64))
    return diff / norm if norm > 0 else diff


def _flatten_outputs(out: Any) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (list, tuple)) and all(isinstance(t, torch.Tensor) for t in out):
        return list(out)
    raise ExportError(
        f"the model returns {type(out).__name__}; export needs a tensor or a tuple/list/dict "
        "of tensors"
    )


def _check_size(input_size: Sequence[int]) -> tuple[int, int]:
    if (
        len(input_size) != 2
        or not all(isinstance(s, int) for s in input_size)
        or min(input_size) <= 0
    ):
        raise ValueError(f"input_size must be (height, width) positive integers, got {input_size}")
    return int(input_size[0]), int(input_size[1])


def _histogram(path: Path) -> tuple[int, dict[str, int]]:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    counts = collections.Counter(n.op_type for n in graph.node if n.op_type != "Constant")
    return sum(counts.values()), dict(counts.most_common())


def _verify(
    session: Any,
    model: nn.Module,
    x: torch.Tensor,
    input_name: str,
    output_names: Sequence[str],
    tag: str,
) -> dict[str, float]:
    with torch.no_grad():
        refs = _flatten_outputs(model(x))
    outs = session.run(list(output_names), {input_name: x.numpy()})
    return {
        f"{name}@{'x'.join(map(str, x.shape))}" if tag else name: relative_error(o, r.numpy())
        for name, o, r in zip(output_names, outs, refs, strict=True)
    }


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    input_size: Sequence[int] = (224, 224),
    batch_size: int = 1,
    in_chans: int = 3,
    input_name: str = "input",
    output_names: Sequence[str] = ("logits",),
    fuse: bool = True,
    opset: int = DEFAULT_OPSET,
    dynamic_batch: bool = True,
    dynamic_size: bool = True,
    verify: bool = True,
    tolerance: float = DEFAULT_TOLERANCE,
    threads: int | None = None,
    seed: int = 0,
    progress: Progress | None = None,
) -> ExportReport:
    """Export ``model`` to ONNX at ``path`` and verify it; returns an ``ExportReport``.

    The first input is ``input_name``: a normalised NCHW float32 image batch.
    The outputs are the model's outputs in order (a tensor, or a tuple/list/dict
    of tensors), named ``output_names``. ``fuse`` exports ``fuse_model(model)``
    (the same outputs, a cheaper graph); ``fuse=False`` gives the plain graph a
    research-code user gets. Batch, height and width are dynamic unless turned
    off. With ``verify`` the file is run in onnxruntime on a random input of
    ``(batch_size, in_chans, *input_size)`` (and, when dynamic, once more at
    another batch and size) and ``ExportError`` is raised if any output's
    relative error exceeds ``tolerance``; the file is removed in that case.
    """
    start = time.perf_counter()
    height, width = _check_size(input_size)
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    output_names = tuple(output_names)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    say = progress or (lambda _msg: None)

    model = model.eval()
    if fuse:
        from care_serve.models.fuse import fuse_model

        say("fusing")
        model = fuse_model(model)
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch_size, in_chans, height, width, generator=generator)
    with torch.no_grad():
        n_out = len(_flatten_outputs(model(x)))
    if n_out != len(output_names):
        raise ValueError(
            f"the model has {n_out} output(s) but {len(output_names)} output name(s) were "
            f"given ({', '.join(output_names)}); pass one name per output"
        )

    dynamic_axes: dict[str, dict[int, str]] = {}
    in_axes = {0: "batch"} if dynamic_batch else {}
    if dynamic_size:
        in_axes.update({2: "height", 3: "width"})
    if in_axes:
        dynamic_axes[input_name] = in_axes
    if dynamic_batch:
        dynamic_axes.update({name: {0: "batch"} for name in output_names})

    say(f"exporting to ONNX (opset {opset})")
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                (x,),
                str(path),
                dynamo=False,
                opset_version=opset,
                input_names=[input_name],
                output_names=list(output_names),
                dynamic_axes=dynamic_axes or None,
                do_constant_folding=True,
            )
    except Exception as exc:
        raise ExportError(f"torch.onnx.export failed: {type(exc).__name__}: {exc}") from exc

    import onnx

    say("checking the graph (onnx.checker)")
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:
        raise ExportError(f"onnx.checker rejected {path}: {exc}") from exc
    num_nodes, histogram = _histogram(path)
    report = ExportReport(
        path=path,
        input_name=input_name,
        output_names=output_names,
        input_shape=tuple(x.shape),
        opset=opset,
        fused=fuse,
        num_nodes=num_nodes,
        op_histogram=histogram,
    )
    if verify:
        from care_serve.backends.onnx_session import create_onnx_session

        say("running onnxruntime against torch")
        session = create_onnx_session(path, threads)
        report.rel_errors = _verify(session, model, x, input_name, output_names, tag="")
        if dynamic_batch or dynamic_size:
            shape = (
                batch_size + 1 if dynamic_batch else batch_size,
                in_chans,
                height + 32 if dynamic_size else height,
                width,
            )
            x2 = torch.randn(*shape, generator=generator)
            report.rel_errors.update(
                _verify(session, model, x2, input_name, output_names, tag="shape")
            )
        worst = report.max_rel_error
        if not np.isfinite(worst) or worst > tolerance:
            path.unlink(missing_ok=True)
            raise ExportError(
                f"onnxruntime disagrees with torch: relative errors "
                f"{', '.join(f'{k} {v:.2e}' for k, v in report.rel_errors.items())} "
                f"(tolerance {tolerance:.0e}); the file was removed"
            )
    report.seconds = time.perf_counter() - start
    return report
