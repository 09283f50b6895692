"""The dynamic batcher on its own, with a fake backend."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from care_serve.errors import DeadlineExceeded, InferenceError, ModelNotReady, ServerBusy
from care_serve.serving.batching import DynamicBatcher
from care_serve.store import BatchingConfig


class FakeBackend:
    """Doubles its input; records batch sizes; can be held to simulate a slow model."""

    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.gate = threading.Event()
        self.gate.set()
        self.fail = False

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        self.gate.wait(10)
        self.sizes.append(batch.shape[0])
        if self.fail:
            raise RuntimeError("boom")
        return {"out": batch * 2}


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


def _batcher(backend: FakeBackend, **cfg: Any) -> tuple[DynamicBatcher, ThreadPoolExecutor]:
    executor = ThreadPoolExecutor(1)
    return DynamicBatcher(backend.run, BatchingConfig(**cfg), executor, name="fake"), executor


def test_batches_form_and_results_split() -> None:
    backend = FakeBackend()

    async def main() -> None:
        batcher, _ = _batcher(backend, max_batch_size=4, max_queue_delay_ms=50, max_queue_size=64)
        batcher.start()
        xs = [np.full((1, 2, 2), i, np.float32) for i in range(10)]
        results = await asyncio.gather(*(batcher.submit(x) for x in xs))
        for x, (out, timing) in zip(xs, results, strict=True):
            assert np.array_equal(out["out"], x * 2)
            assert 1 <= timing.batch_size <= 4
        await batcher.close()

    _run(main())
    assert sum(backend.sizes) == 10 and max(backend.sizes) == 4


def test_full_queue_is_refused_at_once() -> None:
    backend = FakeBackend()

    async def main() -> None:
        batcher, _ = _batcher(backend, max_batch_size=1, max_queue_delay_ms=0, max_queue_size=2)
        batcher.start()
        backend.gate.clear()
        first = asyncio.ensure_future(batcher.submit(np.zeros((1,), np.float32)))
        await asyncio.sleep(0.05)  # the first is now executing (held)
        queued = [asyncio.ensure_future(batcher.submit(np.zeros((1,), np.float32))) for _ in "ab"]
        await asyncio.sleep(0.01)
        with pytest.raises(ServerBusy, match="max_queue_size"):
            await batcher.submit(np.zeros((1,), np.float32))
        backend.gate.set()
        await asyncio.gather(first, *queued)
        await batcher.close()

    _run(main())


def test_expired_requests_are_dropped_from_the_batch() -> None:
    backend = FakeBackend()

    async def main() -> None:
        batcher, _ = _batcher(backend, max_batch_size=8, max_queue_delay_ms=0, max_queue_size=64)
        batcher.start()
        loop = asyncio.get_running_loop()
        backend.gate.clear()
        blocker = asyncio.ensure_future(batcher.submit(np.zeros((1,), np.float32)))
        await asyncio.sleep(0.05)
        short = asyncio.ensure_future(
            batcher.submit(np.ones((1,), np.float32), deadline=loop.time() + 0.05)
        )
        long = asyncio.ensure_future(batcher.submit(np.ones((1,), np.float32)))
        with pytest.raises(DeadlineExceeded):
            await short
        backend.gate.set()
        await blocker
        _, timing = await long
        assert timing.batch_size == 1  # the expired request did not ride along
        await batcher.close()

    _run(main())
    assert backend.sizes == [1, 1]


def test_backend_failure_fails_the_whole_batch_only() -> None:
    backend = FakeBackend()

    async def main() -> None:
        batcher, _ = _batcher(backend, max_batch_size=4, max_queue_delay_ms=20, max_queue_size=64)
        batcher.start()
        backend.fail = True
        results = await asyncio.gather(
            *(batcher.submit(np.zeros((1,), np.float32)) for _ in range(3)),
            return_exceptions=True,
        )
        assert all(isinstance(r, InferenceError) and "boom" in r.message for r in results)
        backend.fail = False
        out, _ = await batcher.submit(np.ones((1,), np.float32))
        assert out["out"][0] == 2
        await batcher.close()

    _run(main())


def test_wrong_output_count_is_an_error() -> None:
    async def main() -> None:
        executor = ThreadPoolExecutor(1)
        batcher = DynamicBatcher(
            lambda b: {"out": b[:1]}, BatchingConfig(max_queue_delay_ms=20), executor, name="bad"
        )
        batcher.start()
        results = await asyncio.gather(
            *(batcher.submit(np.zeros((1,), np.float32)) for _ in range(2)),
            return_exceptions=True,
        )
        assert all(isinstance(r, InferenceError) for r in results)
        await batcher.close()

    _run(main())


def test_crashed_batch_task_fails_pending_and_restarts() -> None:
    backend = FakeBackend()

    async def main() -> None:
        batcher, _ = _batcher(backend, max_batch_size=2, max_queue_delay_ms=100)
        batcher.start()
        original = batcher._take

        def crash() -> Any:
            batcher._take = original  # crash once
            raise RuntimeError("batch loop bug")

        batcher._take = crash  # type: ignore[method-assign]
        with pytest.raises(InferenceError, match="batch task"):
            await batcher.submit(np.zeros((1,), np.float32))
        await asyncio.sleep(0.01)
        out, _ = await asyncio.wait_for(batcher.submit(np.ones((1,), np.float32)), 5)
        assert out["out"][0] == 2
        await batcher.close()

    _run(main())


def test_requests_go_before_background_samples() -> None:
    """Queued stream frames (background) join a batch only after every queued request."""
    backend = FakeBackend()
    order: list[float] = []

    def run(batch: np.ndarray) -> dict[str, np.ndarray]:
        out = backend.run(batch)
        order.extend(float(v) for v in batch.reshape(batch.shape[0], -1)[:, 0])
        return out

    async def main() -> None:
        executor = ThreadPoolExecutor(1)
        config = BatchingConfig(max_batch_size=2, max_queue_delay_ms=0, max_queue_size=64)
        batcher = DynamicBatcher(run, config, executor, name="fake")
        batcher.start()
        backend.gate.clear()
        first = asyncio.ensure_future(batcher.submit(np.full((1,), -1, np.float32)))
        await asyncio.sleep(0.05)  # executing (held): the rest queue behind it
        background = [
            asyncio.ensure_future(
                batcher.submit(np.full((1,), 10 + i, np.float32), background=True)
            )
            for i in range(3)
        ]
        await asyncio.sleep(0.01)
        requests = [
            asyncio.ensure_future(batcher.submit(np.full((1,), i, np.float32))) for i in range(3)
        ]
        await asyncio.sleep(0.01)
        backend.gate.set()
        await asyncio.gather(first, *background, *requests)
        await batcher.close()
        executor.shutdown()

    _run(main())
    # The held sample, then the three requests (in order), then the stream frames.
    assert order == [-1, 0, 1, 2, 10, 11, 12]


class OverlapBackend:
    """Counts how many runs overlap; each run waits (bounded) for a partner to arrive."""

    def __init__(self) -> None:
        self.running = 0
        self.peak = 0
        self.lock = threading.Lock()
        self.partner = threading.Event()

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        with self.lock:
            self.running += 1
            self.peak = max(self.peak, self.running)
            if self.running >= 2:
                self.partner.set()
        self.partner.wait(0.3)
        with self.lock:
            self.running -= 1
        return {"out": batch * 2}


@pytest.mark.parametrize("slots", [1, 2])
def test_slots_bound_the_batches_computing_at_once(slots: int) -> None:
    backend = OverlapBackend()

    async def main() -> list[int]:
        executor = ThreadPoolExecutor(slots)
        config = BatchingConfig(max_batch_size=1, max_queue_delay_ms=0, max_queue_size=64)
        batcher = DynamicBatcher(backend.run, config, executor, name="fake", slots=slots)
        batcher.start()
        xs = [np.full((1,), i, np.float32) for i in range(4)]
        results = await asyncio.gather(*(batcher.submit(x) for x in xs))
        await batcher.close()
        executor.shutdown()
        return [int(out["out"][0]) for out, _ in results]

    assert _run(main()) == [0, 2, 4, 6]  # every answer to its own request
    assert backend.peak == slots


def test_closing_fails_the_batches_still_computing_in_every_slot() -> None:
    backend = FakeBackend()

    async def main() -> None:
        executor = ThreadPoolExecutor(2)
        config = BatchingConfig(max_batch_size=1, max_queue_delay_ms=0, max_queue_size=64)
        batcher = DynamicBatcher(backend.run, config, executor, name="fake", slots=2)
        batcher.start()
        backend.gate.clear()
        pending = [
            asyncio.ensure_future(batcher.submit(np.zeros((1,), np.float32))) for _ in range(3)
        ]
        await asyncio.sleep(0.05)  # two computing (held), one queued
        await batcher.close()
        outcomes = await asyncio.gather(*pending, return_exceptions=True)
        assert all(isinstance(o, ModelNotReady) for o in outcomes), outcomes
        assert batcher.idle
        backend.gate.set()
        executor.shutdown()

    _run(main())


def test_a_batcher_needs_a_slot() -> None:
    with pytest.raises(ValueError, match="at least one slot"):
        DynamicBatcher(FakeBackend().run, BatchingConfig(), ThreadPoolExecutor(1), slots=0)


def test_each_slot_has_its_thread_and_a_lone_batch_takes_the_first() -> None:
    threads: list[str] = []
    backend = OverlapBackend()

    def run(batch: np.ndarray) -> dict[str, np.ndarray]:
        threads.append(threading.current_thread().name)
        return backend.run(batch)

    async def main() -> None:
        executors = [ThreadPoolExecutor(1, thread_name_prefix=f"slot{i}") for i in range(2)]
        config = BatchingConfig(max_batch_size=1, max_queue_delay_ms=0, max_queue_size=64)
        batcher = DynamicBatcher(run, config, executors, name="fake", slots=2)
        batcher.start()
        backend.partner.set()  # runs do not wait for a partner
        for i in range(4):  # one after another: always the first slot
            await batcher.submit(np.full((1,), i, np.float32))
        assert {t.split("_")[0] for t in threads} == {"slot0"}
        backend.partner.clear()  # now each run waits (bounded) for a second one
        threads.clear()
        await asyncio.gather(*(batcher.submit(np.zeros((1,), np.float32)) for _ in range(2)))
        assert {t.split("_")[0] for t in threads} == {"slot0", "slot1"}
        await batcher.close()
        for executor in executors:
            executor.shutdown()

    _run(main())
    with pytest.raises(ValueError, match="2 slots need 2 executors"):
        DynamicBatcher(run, BatchingConfig(), [ThreadPoolExecutor(1)], slots=2)
