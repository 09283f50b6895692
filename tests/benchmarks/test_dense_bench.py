"""The dense benchmark runs end to end (a smoke test: no timing is asserted)."""

from __future__ import annotations

import pytest

from benchmarks.model.dense import DENSE_RUNNERS, format_dense_table, run_dense_benchmark

# Tiny tensors: one torch thread (see the fixture in tests/conftest.py).
pytestmark = pytest.mark.usefixtures("single_thread_torch")


def test_dense_benchmark_produces_a_table() -> None:
    results = run_dense_benchmark(
        variants=("care_tiny",),
        input_size=(64, 96),
        image_size=(120, 80),
        threads=1,
        rounds=1,
        number=1,
        warmup=0,
    )
    assert [(r.task, r.variant) for r in results] == [
        ("detection", "care_tiny"),
        ("segmentation", "care_tiny"),
    ]
    for r in results:
        assert set(r.median_ms) == set(DENSE_RUNNERS)
        assert all(v > 0 for v in r.median_ms.values())
    table = format_dense_table(results, threads=1)
    assert "detection" in table and "segmentation" in table and "overhead" in table


def test_dense_benchmark_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unknown task"):
        run_dense_benchmark(tasks=("classification",))
    with pytest.raises(ValueError, match="clock"):
        run_dense_benchmark(clock="sundial")
