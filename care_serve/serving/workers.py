"""The CPU pools of the request path, kept apart so big images cannot starve small ones.

- ``small``: decode, preprocess and post-process of ordinary images
  (``preprocess_threads`` threads, default one per core);
- ``large``: the same stages for images over ``large_image_pixels``, on one
  thread: big images wait for each other, never for a worker that small images
  need, and at most one of them is decoded (and held in memory) at a time. After
  each large job the C heap is trimmed so the process returns near its resting
  size.

The model backends run in their own per-model threads (``care_serve.serving.manager``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from care_serve.observability.libc import libc_function
from care_serve.observability.thread_names import name_this_thread
from care_serve.settings import Settings

__all__ = ["WorkerPools", "map_large_blocks", "release_free_memory"]

log = logging.getLogger(__name__)
T = TypeVar("T")


M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
MMAP_THRESHOLD_BYTES = 4 << 20  # above a 640x480 request's buffers: those stay on the fast heap


def map_large_blocks(threshold: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Serve every heap block of ``threshold`` bytes (4 MiB) or more with its own mapping (glibc).

    By default glibc raises its mmap threshold after a large block is freed (up to
    32 MiB), so the next decoded images and bodies come from the heap and stay
    resident after they are freed. A fixed threshold gives every large block back to
    the OS when it is freed. False where this is not glibc.
    """
    mallopt = libc_function("mallopt")
    return mallopt is not None and bool(mallopt(M_MMAP_THRESHOLD, threshold))


def release_free_memory() -> None:
    """Give the C heap's free pages back to the OS (glibc ``malloc_trim``; no-op elsewhere)."""
    trim = libc_function("malloc_trim")
    if trim is not None:
        trim(0)


class WorkerPools:
    """The ``small`` and ``large`` pools; ``for_pixels`` picks one by image size."""

    def __init__(self, settings: Settings) -> None:
        self.large_image_pixels = settings.large_image_pixels
        self.small = ThreadPoolExecutor(
            settings.preprocess_workers(),
            thread_name_prefix="request",
            initializer=name_this_thread,
            initargs=("care-request",),
        )
        self.large = ThreadPoolExecutor(
            1,
            thread_name_prefix="request-large",
            initializer=name_this_thread,
            initargs=("care-large",),
        )

    def is_large(self, pixels: int) -> bool:
        return pixels > self.large_image_pixels

    def for_pixels(self, pixels: int) -> ThreadPoolExecutor:
        return self.large if self.is_large(pixels) else self.small

    @staticmethod
    def trimmed(fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` then release free heap memory (for large-image jobs)."""
        try:
            return fn(*args)
        finally:
            release_free_memory()

    def shutdown(self) -> None:
        self.small.shutdown(wait=False, cancel_futures=True)
        self.large.shutdown(wait=False, cancel_futures=True)
