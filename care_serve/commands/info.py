"""``care-serve info``: parameters and GMACs of a CARE variant (official counting)."""

from __future__ import annotations

import argparse
from typing import Any

from care_serve.commands.sizes import add_input_size_option

__all__ = ["register", "run"]


def register(subparsers: Any) -> None:
    """Add the ``info`` subcommand."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "info",
        help="print parameters and GMACs of a CARE variant",
        description=(
            "Parameters (with and without the distillation head) and GMACs (convolutions + "
            "attention matmuls + heads, counted like the official figures), per stage, for "
            "the research model and the fused inference model."
        ),
    )
    parser.add_argument("variant", help="CARE variant: care_s0, care_s1, care_s2 or care_tiny")
    add_input_size_option(parser, "224", "input size")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Count and print."""
    size = args.input_size

    from care_serve.models import create_model, get_config
    from care_serve.models.complexity import measure
    from care_serve.models.fuse import fuse_model

    get_config(args.variant)
    model = create_model(args.variant)
    c = measure(model, size)
    fused = measure(fuse_model(model), size)
    res = f"{size[0]}x{size[1]}"
    print(f"{args.variant} at {res}")
    print(f"  parameters:                  {c.params:>12,}")
    print(f"  parameters without dist_head:{c.params_without_dist_head:>12,}")
    print(f"  GMACs (convs + matmuls):     {c.gmacs:>12.3f}  ({c.gmacs:.6f})")
    print(f"  fused model: parameters {fused.params:,}, GMACs {fused.gmacs:.3f}")
    print("  GMACs by part:")
    for name, gmacs in c.gmacs_by_module.items():
        if name in ("stem", "head", "dist_head") or name.startswith("stages."):
            print(f"    {name:<10} {gmacs:8.4f}")
    print("  GMACs by op:")
    for op, gmacs in c.gmacs_by_op.items():
        print(f"    {op:<18} {gmacs:8.4f}")
    return 0
