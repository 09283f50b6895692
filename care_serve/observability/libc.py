"""The C library's functions that Python does not wrap (glibc's on Linux)."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from typing import Any

__all__ = ["libc_function"]


@functools.cache
def libc_function(name: str) -> Any:
    """The C library's function ``name`` (a ctypes function), or None where there is none
    (no C library found, or one without it: ``malloc_trim`` and ``mallopt`` are glibc's,
    ``prctl`` is Linux's)."""
    path = ctypes.util.find_library("c")
    if path is None:
        return None
    try:
        return getattr(ctypes.CDLL(path, use_errno=True), name)
    except (OSError, AttributeError):
        return None
