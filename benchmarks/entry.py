"""Run a benchmark command written as a ``register(subparsers)`` module on its own."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

from care_serve.cli import run_handler

Register = Callable[[Any], None]


def command_parser(name: str, register: Register) -> argparse.ArgumentParser:
    """A parser whose only subcommand is ``name``, added by ``register``."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    register(parser.add_subparsers(dest="command"))
    return parser


def run_command(name: str, register: Register, argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` as the arguments of command ``name`` and run its handler."""
    args = command_parser(name, register).parse_args(
        [name, *(sys.argv[1:] if argv is None else argv)]
    )
    return run_handler(args)
