"""A periodic task runs its step on time, survives a failing step and stops when told."""

from __future__ import annotations

import asyncio

import pytest

from care_serve.serving.periodic import Periodic


def test_a_failing_step_is_logged_and_the_next_one_runs(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[int] = []

    async def step() -> None:
        calls.append(len(calls))
        if len(calls) == 1:
            raise RuntimeError("first step breaks")

    async def main() -> None:
        periodic = Periodic("test-periodic", 0.01, step)
        periodic.start()
        for _ in range(200):  # at most 2 s
            if len(calls) >= 3:
                break
            await asyncio.sleep(0.01)
        await periodic.stop()

    asyncio.run(main())
    assert len(calls) >= 3
    assert "test-periodic: a step failed" in caplog.text
    assert "first step breaks" in caplog.text


def test_stop_ends_the_task_and_no_step_runs_after_it() -> None:
    calls: list[float] = []

    async def step() -> None:
        calls.append(0.0)

    async def main() -> int:
        periodic = Periodic("test-periodic", 0.01, step)
        periodic.start()
        while not calls:
            await asyncio.sleep(0.005)
        await periodic.stop()
        stopped_at = len(calls)
        await asyncio.sleep(0.05)
        await periodic.stop()  # a second stop is harmless
        return stopped_at

    assert asyncio.run(asyncio.wait_for(main(), 5)) == len(calls)
