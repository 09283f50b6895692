"""``care-serve export``: write a fused, verified ONNX model from a CARE checkpoint."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from care_serve.commands.sizes import add_input_size_option

__all__ = ["load_variant", "register", "run"]


def load_variant(name: str, checkpoint: str | None, use_ema: bool = True) -> Any:
    """``create_model(name)`` fitted to ``checkpoint``'s classifier (class count, heads)."""
    from care_serve.models import create_model, get_config, read_state_dict

    get_config(name)  # unknown variant -> ValueError listing the known ones
    if checkpoint is None:
        return create_model(name)
    state = read_state_dict(checkpoint, use_ema=use_ema)
    overrides: dict[str, Any] = {}
    if "head.fc.weight" in state:
        overrides["num_classes"] = int(state["head.fc.weight"].shape[0])
        overrides["distillation"] = "dist_head.fc.weight" in state
    elif not any(k.startswith("head.") for k in state):
        overrides["num_classes"] = 0  # a backbone checkpoint
    return create_model(name, checkpoint, use_ema=use_ema, **overrides)


def register(subparsers: Any) -> None:
    """Add the ``export`` subcommand."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "export",
        help="export a CARE checkpoint to a fused, verified ONNX model",
        description=(
            "Fuse the model (BatchNorm, layer scale and head folding; exact), export it to "
            "ONNX with dynamic batch, height and width, run onnx.checker, then run "
            "onnxruntime against torch and fail (exit 1) if the relative error exceeds the "
            "tolerance."
        ),
    )
    parser.add_argument("variant", help="CARE variant: care_s0, care_s1, care_s2 or care_tiny")
    weights = parser.add_mutually_exclusive_group(required=True)
    weights.add_argument("--checkpoint", help="official-format checkpoint (.pth/.pth.tar)")
    weights.add_argument(
        "--random-weights", action="store_true", help="export random weights (testing only)"
    )
    parser.add_argument("--output", required=True, help="where to write the .onnx file")
    add_input_size_option(
        parser,
        "224",
        "input size used for the export and the check (the exported model accepts any "
        "multiple of 32)",
    )
    parser.add_argument("--no-fuse", action="store_true", help="export the unfused model")
    parser.add_argument("--no-ema", action="store_true", help="prefer non-EMA weights")
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset (default 17)")
    parser.add_argument(
        "--tolerance", type=float, default=1e-4, help="max relative error (default 1e-4)"
    )
    parser.add_argument("--threads", type=int, default=None, help="onnxruntime threads")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Load, fuse, export, check and verify; print the report."""
    size = args.input_size
    start = time.perf_counter()

    def step(message: str) -> None:
        print(f"[{time.perf_counter() - start:6.1f}s] {message}", file=sys.stderr, flush=True)

    from care_serve.errors import ExportError
    from care_serve.offline.export import DEFAULT_OPSET, export_onnx

    step(f"loading {args.variant}" + (f" from {args.checkpoint}" if args.checkpoint else ""))
    model = load_variant(args.variant, args.checkpoint, use_ema=not args.no_ema)
    output_names = ("logits",) if model.num_classes > 0 else ("features",)
    try:
        report = export_onnx(
            model,
            args.output,
            input_size=size,
            output_names=output_names,
            fuse=not args.no_fuse,
            opset=args.opset or DEFAULT_OPSET,
            tolerance=args.tolerance,
            threads=args.threads,
            progress=step,
        )
    except ExportError as exc:
        print(f"care-serve export: error: {exc.message}", file=sys.stderr)
        return 1
    step("done")
    print(report.summary())
    return 0
