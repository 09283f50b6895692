"""A budget of CPU cores shared by every loaded model's compute thread.

Each model computes its batches with ``threads`` intra-op threads. Before a
batch runs, its compute thread takes that many cores from the budget and gives
them back afterwards, so the intra-op threads computing at any moment never
exceed the cores, however many models are loaded.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["CoreBudget"]


class CoreBudget:
    """Blocks a compute thread until enough cores are free for its batch."""

    def __init__(self, cores: int) -> None:
        if cores < 1:
            raise ValueError(f"a core budget needs at least one core, got {cores}")
        self.cores = cores
        self._free = cores
        self._cond = threading.Condition()

    @property
    def free(self) -> int:
        """Cores not held by a running batch."""
        with self._cond:
            return self._free

    @contextmanager
    def hold(self, threads: int) -> Iterator[None]:
        """Hold ``threads`` cores (at most the whole budget) while the block runs."""
        wanted = max(1, min(threads, self.cores))
        with self._cond:
            self._cond.wait_for(lambda: self._free >= wanted)
            self._free -= wanted
        try:
            yield
        finally:
            with self._cond:
                self._free += wanted
                self._cond.notify_all()
