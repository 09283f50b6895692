"""The one spelling of sizes on the command line: ``S`` or ``HxW`` (height x width).

Every option that takes a model input size is ``--input-size S|HxW`` (sides
multiples of 32); the load benchmark's test image is ``--image-size S|HxW``
(any positive sides). Height comes first everywhere, as in the manifest's
``input`` and the ``care-serve info`` output.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

__all__ = [
    "SIZE_HELP",
    "add_image_size_option",
    "add_input_size_option",
    "image_size",
    "input_size",
    "parse_size",
]

SIZE_HELP = "S or HxW (height x width)"


def parse_size(text: str, multiple_of: int = 1) -> tuple[int, int]:
    """``"224"`` -> (224, 224); ``"256x320"`` -> (256, 320); ``ValueError`` otherwise."""
    parts = str(text).lower().replace(",", "x").split("x")
    try:
        sides = [int(p) for p in parts]
    except ValueError:
        sides = []
    if len(sides) == 1:
        sides = sides * 2
    if len(sides) != 2 or any(s <= 0 or s % multiple_of for s in sides):
        rule = f"positive multiples of {multiple_of}" if multiple_of > 1 else "positive integers"
        raise ValueError(
            f"bad size {text!r}: give S or HxW (height x width) with {rule}, e.g. 224 or 256x320"
        )
    return sides[0], sides[1]


def _argparse_type(multiple_of: int) -> Callable[[str], tuple[int, int]]:
    def parse(text: str) -> tuple[int, int]:
        try:
            return parse_size(text, multiple_of)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse


input_size = _argparse_type(32)
image_size = _argparse_type(1)


def add_input_size_option(
    parser: argparse.ArgumentParser, default: str | None, what: str, default_text: str = ""
) -> None:
    """``--input-size S|HxW`` (multiples of 32); ``--resolution`` stays a hidden alias."""
    shown = default_text or (f"default {default}" if default else "")
    parser.add_argument(
        "--input-size",
        dest="input_size",
        type=input_size,
        default=input_size(default) if default else None,
        metavar="S|HxW",
        help=f"{what}: {SIZE_HELP}, multiples of 32" + (f" ({shown})" if shown else ""),
    )
    parser.add_argument("--resolution", dest="input_size", type=input_size, help=argparse.SUPPRESS)


def add_image_size_option(parser: argparse.ArgumentParser, default: str = "480x640") -> None:
    """``--image-size S|HxW``: the size of a benchmark's generated test JPEG."""
    parser.add_argument(
        "--image-size",
        type=image_size,
        default=image_size(default),
        metavar="S|HxW",
        help=f"size of the generated test JPEG: {SIZE_HELP} (default {default})",
    )
