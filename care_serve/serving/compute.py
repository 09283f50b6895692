"""How one model's batches use the cores: all its threads when alone, one slot each under load.

A model has ``threads`` intra-op threads. A batch that is alone in the server (no
other image admitted, any model) runs on the *wide* backend with all of them:
the shortest latency for a lone request. When other requests are in the server,
a batch runs on the *narrow* backend with ``threads / slots`` threads, and up to
``slots`` such batches compute at once (the batcher runs them side by side).
On two cores, two one-thread runs of CARE-S0 answered 1.1-1.6x the images per
second of one two-thread run: one thread per run never waits at an operator's
barrier for the other, so independent requests fill each other's idle gaps
(docs/performance.md). Every run first takes its threads from the core budget
shared by all models, so the threads computing never exceed the cores.

The narrow backend is one onnxruntime session called from several threads at
once, which onnxruntime allows; the PyTorch backend runs one batch at a time.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from care_serve.backends.base import Backend
from care_serve.serving.core_budget import CoreBudget

__all__ = ["ModelCompute", "narrow_threads"]


def narrow_threads(threads: int, slots: int) -> int:
    """The intra-op threads of each of ``slots`` batches side by side (``threads`` in all)."""
    return max(1, threads // slots)


class ModelCompute:
    """A model's backends and the rule that picks one per batch (a ``Backend`` itself)."""

    def __init__(
        self,
        wide: Backend,
        threads: int,
        budget: CoreBudget,
        *,
        narrow: Backend | None = None,
        slots: int = 1,
        alone: Callable[[int], bool] = lambda _n: True,
    ) -> None:
        if slots < 1 or (slots > 1) != (narrow is not None):
            raise ValueError(f"{slots} slots need a narrow backend exactly when more than one")
        self._wide, self._narrow, self._budget, self._alone = wide, narrow, budget, alone
        self.threads = threads
        self.slots = slots
        self.narrow_threads = narrow_threads(threads, slots)
        self.output_names = list(wide.output_names)
        self.name = wide.name
        if narrow is not None:
            each = f"{self.narrow_threads} thread{'' if self.narrow_threads == 1 else 's'}"
            self.name += f"; under load {slots} batches at once, {each} each"

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Run ``batch`` on the backend the server's load calls for (see the module doc)."""
        if self._narrow is not None and not self._alone(int(batch.shape[0])):
            with self._budget.hold(self.narrow_threads):
                return self._narrow.run(batch)
        with self._budget.hold(self.threads):
            return self._wide.run(batch)

    @property
    def wide(self) -> Backend:
        """The backend a batch alone in the server runs on (all the model's threads)."""
        return self._wide

    def parts(self) -> list[Backend]:
        """The wide backend, then the narrow one if any (to warm each up)."""
        return [self._wide] if self._narrow is None else [self._wide, self._narrow]

    def close(self) -> None:
        self._wide.close()
        if self._narrow is not None:
            self._narrow.close()
