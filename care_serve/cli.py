"""The ``care-serve`` / ``python -m care_serve`` command line.

Each subcommand lives in ``care_serve/commands/<name>.py`` and exposes
``register(subparsers)``; heavy imports (torch, onnxruntime) happen inside the
handlers so ``--help`` is instant and the ONNX-only server never imports torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from care_serve import __version__
from care_serve.errors import CareServeError

# Module names under care_serve.commands, in the order they appear in --help.
COMMAND_MODULES = (
    "serve",
    "keys",
    "import_model",
    "pull",
    "sign",
    "export",
    "info",
    "generate",
    "train",
    "evaluate",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="care-serve", description="Serve CARE vision transformers over REST and gRPC."
    )
    parser.add_argument("--version", action="version", version=f"care-serve {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"care_serve.commands.{name}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    return run_handler(args)


def run_handler(args: argparse.Namespace) -> int:
    """Run a parsed command's handler; errors become a one-line message and exit code 1."""
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        return 130
    except CareServeError as exc:
        print(f"care-serve {args.command}: error: {exc.message}", file=sys.stderr)
        return 1
    except (ValueError, FileNotFoundError) as exc:
        print(f"care-serve {args.command}: error: {exc}", file=sys.stderr)
        return 1
