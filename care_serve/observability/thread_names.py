"""Names the operating system shows for the server's threads (``top -H``, ``/proc``).

Python names its threads only for itself; the kernel sees every thread of the
process as ``python``. Naming the worker threads where they start lets ``top -H``,
``py-spy`` and the benchmarks tell where the CPU goes: ``care-request``
(decoding, preprocessing, post-processing), ``care-large`` (the same for large
images) and ``care-compute`` (the model's batches; onnxruntime's own worker
threads, made by the session while it loads there, inherit the name). The
event loop (HTTP, routing, JSON) is the main thread. Linux only; a no-op elsewhere.
"""

from __future__ import annotations

import ctypes

from care_serve.observability.libc import libc_function

__all__ = ["OS_NAME_LIMIT", "name_this_thread"]

OS_NAME_LIMIT = 15  # bytes the kernel keeps of a thread's name
_PR_SET_NAME = 15


def name_this_thread(name: str) -> bool:
    """Give the calling thread ``name`` (cut to 15 bytes) for the OS; False if not possible."""
    prctl = libc_function("prctl")
    if prctl is None:
        return False
    raw = name.encode("utf-8", "replace")[:OS_NAME_LIMIT]
    return bool(prctl(_PR_SET_NAME, ctypes.c_char_p(raw), 0, 0, 0) == 0)
