"""A model's batches: all its threads when alone in the server, a narrow slot under load."""

from __future__ import annotations

import numpy as np
import pytest

from care_serve.serving.compute import ModelCompute
from care_serve.serving.core_budget import CoreBudget
from care_serve.settings import Settings


class Recorder:
    """A backend that notes its own name and the cores free while it runs."""

    def __init__(self, name: str, budget: CoreBudget, log: list[tuple[str, int]]) -> None:
        self.name, self.output_names = name, ["out"]
        self._budget, self._log = budget, log
        self.closed = False

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        self._log.append((self.name, self._budget.free))
        return {"out": batch + 1}

    def close(self) -> None:
        self.closed = True


def _compute(in_flight: list[int]) -> tuple[ModelCompute, list[tuple[str, int]], Recorder]:
    budget = CoreBudget(2)
    log: list[tuple[str, int]] = []
    wide, narrow = Recorder("wide", budget, log), Recorder("narrow", budget, log)
    compute = ModelCompute(
        wide, 2, budget, narrow=narrow, slots=2, alone=lambda n: in_flight[0] <= n
    )
    return compute, log, narrow


def test_a_lone_batch_takes_every_thread_and_a_busy_server_one_slot() -> None:
    in_flight = [1]
    compute, log, _ = _compute(in_flight)
    out = compute.run(np.zeros((1, 3), np.float32))
    assert np.array_equal(out["out"], np.ones((1, 3)))
    in_flight[0] = 3  # other requests in the server
    compute.run(np.zeros((1, 3), np.float32))
    in_flight[0] = 4  # a batch of four that is everything in the server
    compute.run(np.zeros((4, 3), np.float32))
    assert log == [("wide", 0), ("narrow", 1), ("wide", 0)]  # cores left free while running


def test_the_description_and_the_parts() -> None:
    compute, _, narrow = _compute([1])
    assert compute.name == "wide; under load 2 batches at once, 1 thread each"
    assert compute.parts()[1] is narrow and compute.wide is compute.parts()[0]
    compute.close()
    assert narrow.closed


def test_slots_and_the_narrow_backend_go_together() -> None:
    budget = CoreBudget(2)
    wide = Recorder("wide", budget, [])
    with pytest.raises(ValueError, match="narrow backend"):
        ModelCompute(wide, 2, budget, slots=2)
    single = ModelCompute(wide, 2, budget)
    assert single.parts() == [wide] and single.name == "wide"


@pytest.mark.parametrize(
    ("setting", "threads", "fmt", "backend", "slots"),
    [
        (0, 2, "onnx", "auto", 2),  # default: one batch per intra-op thread
        (0, 1, "onnx", "auto", 1),
        (1, 4, "onnx", "auto", 1),  # one batch at a time, as asked
        (2, 4, "onnx", "onnx", 2),
        (8, 2, "onnx", "auto", 2),  # never more than the threads
        (0, 2, "pytorch", "auto", 1),  # torch's threads are process-wide
    ],
)
def test_batch_slots_follow_the_setting(
    setting: int, threads: int, fmt: str, backend: str, slots: int
) -> None:
    settings = Settings(concurrent_batches=setting, backend=backend)  # type: ignore[arg-type]
    assert settings.batch_slots(threads, fmt) == slots
