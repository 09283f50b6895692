"""The core budget keeps the intra-op threads computing at once within the cores."""

from __future__ import annotations

import threading
import time

import pytest

from care_serve.serving.core_budget import CoreBudget


@pytest.mark.parametrize(
    ("cores", "threads_per_model", "models"), [(2, 1, 5), (4, 2, 4), (2, 3, 2)]
)
def test_concurrent_holders_never_exceed_the_cores(
    cores: int, threads_per_model: int, models: int
) -> None:
    budget = CoreBudget(cores)
    busy = peak = 0
    lock = threading.Lock()

    def compute() -> None:
        nonlocal busy, peak
        for _ in range(5):
            with budget.hold(threads_per_model):
                held = min(threads_per_model, cores)
                with lock:
                    busy += held
                    peak = max(peak, busy)
                time.sleep(0.002)
                with lock:
                    busy -= held

    workers = [threading.Thread(target=compute) for _ in range(models)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=10)
    assert not any(w.is_alive() for w in workers)
    assert peak <= cores
    assert peak >= min(cores, threads_per_model)  # the budget did let work run in parallel
    assert budget.free == cores


def test_cores_are_returned_when_the_batch_fails() -> None:
    budget = CoreBudget(2)
    with pytest.raises(RuntimeError), budget.hold(2):
        raise RuntimeError("backend failed")
    assert budget.free == 2


def test_a_budget_needs_a_core() -> None:
    with pytest.raises(ValueError, match="at least one core"):
        CoreBudget(0)
