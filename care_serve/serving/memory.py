"""Memory back to rest: give freed heap pages back to the OS once the server is idle.

A large image (tens of megapixels, a 25 MB body, a refused decompression bomb)
is freed when its request ends, but glibc keeps the pages: in the arena of the
thread that freed them, and, after large blocks were freed, with a raised mmap
threshold that serves later large blocks from the heap too. RSS then stays at
its peak. The janitor reads the process's RSS every ``interval_s``: when it has
grown by ``growth`` (5 %, at least ``min_growth_mb``) of its resting level since the
last trim and no request is in flight, it calls
``malloc_trim`` (every arena) in a worker thread, after a collection of Python's
cyclic garbage: a refused request can leave its buffers in a reference cycle (an
exception's traceback holds the frames that hold the request; two refused 25 MB
gRPC messages kept 100 MB resident), and an idle server allocates too little for
the collector to run by itself. Whatever the transport or the path that allocated
the memory (a REST body, a gRPC message, a decoded image), RSS is back near its
resting level within a few seconds of the last large request; it never trims
while requests are being answered.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
from collections.abc import Callable

from care_serve.serving.periodic import Periodic
from care_serve.serving.workers import release_free_memory

__all__ = ["MemoryJanitor", "release_garbage_and_free_memory", "rss_mb"]

log = logging.getLogger(__name__)
_PAGE_MB = os.sysconf("SC_PAGE_SIZE") / 2**20 if hasattr(os, "sysconf") else 4096 / 2**20


def rss_mb() -> float | None:
    """This process's resident memory in MiB (Linux ``/proc/self/statm``; None elsewhere)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * _PAGE_MB
    except (OSError, ValueError, IndexError):
        return None


#: Trims in a row that leave RSS grown before the growth counts as the new resting level.
SETTLE_TRIMS = 3


def release_garbage_and_free_memory() -> None:
    """Free Python's cyclic garbage, then give the C heap's free pages back to the OS."""
    gc.collect()
    release_free_memory()


class MemoryJanitor:
    """Trims the C heap when RSS has grown and the server is idle."""

    def __init__(
        self,
        inflight: Callable[[], int],
        interval_s: float = 2.0,
        growth: float = 0.05,
        min_growth_mb: float = 8.0,
        trim: Callable[[], None] = release_garbage_and_free_memory,
        rss: Callable[[], float | None] = rss_mb,
    ) -> None:
        self._inflight = inflight
        self.growth = growth
        self.min_growth_mb = min_growth_mb
        self._trim = trim
        self._rss = rss
        self._rested = rss()  # RSS after the last trim that settled (or at start)
        self._unsettled = 0  # trims in a row that left RSS grown
        self.trims = 0
        self._periodic = Periodic("memory-janitor", interval_s, self.check)

    def start(self) -> None:
        self._periodic.start()

    async def stop(self) -> None:
        await self._periodic.stop()

    async def check(self) -> bool:
        """Trim now if RSS grew by ``growth`` of its resting level since the last trim and
        nothing is in flight (the resting level within 10 % is what the server promises)."""
        now = self._rss()
        if now is None or self._inflight() > 0:
            return False
        if self._rested is not None and now < self._grown(self._rested):
            self._rested, self._unsettled = min(self._rested, now), 0
            return False
        try:
            await asyncio.to_thread(self._trim)
        except Exception as exc:  # never let the janitor end the server
            log.warning("releasing free memory failed: %r", exc)
            return False
        self.trims += 1
        self._settle(self._rss())
        return True

    def _grown(self, rested: float) -> float:
        """The RSS (MiB) from which a resting level of ``rested`` counts as grown."""
        return rested + max(self.min_growth_mb, self.growth * rested)

    def _settle(self, after: float | None) -> None:
        """Take the RSS after a trim as the new resting level, unless it is still grown.

        A trim can run while a transport is still receiving a large message (no request
        is in flight until it is read) and the garbage of the last requests is not yet
        freed; the resting level then stays, so the next check trims again. Only after
        ``SETTLE_TRIMS`` such trims in a row is the growth taken as lasting (a model
        loaded, caches warmed up).
        """
        rested = self._rested
        if after is not None and rested is not None and after >= self._grown(rested):
            self._unsettled += 1
            if self._unsettled < SETTLE_TRIMS:
                return
        self._rested, self._unsettled = after, 0
