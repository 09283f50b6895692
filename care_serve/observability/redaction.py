"""Keeping filesystem paths out of what clients see.

Error messages are written for operators and often name files by their absolute
path; the server log keeps them whole. Before a message reaches a client (an
error body, a model's ``error`` field) ``redact_paths`` rewrites paths inside
the model store as store-relative ``name/version/file`` and replaces every
other absolute path by ``<path>/<file name>``.
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

__all__ = ["redact_paths", "redact_values"]

_END = r"""(?=$|[\s'"(),;:\]\[{}<>])"""


@lru_cache(maxsize=1)
def _absolute_path_re() -> re.Pattern[str]:
    """Absolute paths: a '/' then a top-level entry of this machine's root directory.

    Anchoring on the real top-level entries (``/tmp``, ``/home``, ``/usr`` ...)
    tells a file path from a URL path such as ``POST /models/x/load``.
    """
    try:
        tops = sorted((e for e in os.listdir("/") if e), key=len, reverse=True)
    except OSError:  # pragma: no cover - no readable root directory
        tops = []
    alternatives = "|".join(re.escape(t) for t in tops) or r"(?!)"
    return re.compile(rf"""(?<![\w.~/-])/(?:{alternatives})(?:/[^\s'"(),;:\]\[{{}}<>]*)?{_END}""")


def _hide(match: re.Match[str]) -> str:
    name = match.group(0).rstrip("/").rsplit("/", 1)[-1]
    return f"<path>/{name}"


def redact_paths(text: str, store_root: str | os.PathLike[str] | None = None) -> str:
    """``text`` with store paths made store-relative and other absolute paths hidden."""
    if store_root is not None:
        root = Path(store_root)
        for form in {str(root), str(root.resolve())}:
            text = re.sub(re.escape(form.rstrip("/")) + r"/", "", text)
            text = re.sub(re.escape(form.rstrip("/")) + _END, "<model store>", text)
    return _absolute_path_re().sub(_hide, text)


def redact_values(value: Any, store_root: str | os.PathLike[str] | None = None) -> Any:
    """``value`` (dicts, lists, strings) with ``redact_paths`` applied to every string."""
    if isinstance(value, str):
        return redact_paths(value, store_root)
    if isinstance(value, dict):
        return {k: redact_values(v, store_root) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_values(v, store_root) for v in value]
    return value
