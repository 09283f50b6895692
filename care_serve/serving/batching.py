"""Dynamic batching per model (the MLServer / Ray Serve / Triton pattern).

Each request gets a future and waits in a queue. One background task per model
takes the oldest request and collects more until the batch holds
``max_batch_size`` requests (or a preferred size), or the oldest has waited
``max_queue_delay_ms`` (on the event loop's monotonic clock). The batch runs in
a compute thread so the event loop stays free; up to ``slots`` batches compute
at once (the next batch is collected while the others run), so independent
requests fill each other's idle gaps on the cores. Each slot has its own thread
and a batch takes the lowest free slot, so a lone request always runs in the
same thread (onnxruntime's workers and the caches stay with it). Outputs are split
back, their count checked, and every future answered. Requests whose deadline
passed while queued are dropped from the batch and answered with
``DeadlineExceeded``; a full batcher (``max_queue_size`` queued beyond the
``max_batch_size`` running, the same bound as the data plane's admission)
refuses new requests at once (``ServerBusy``);
if the batch task itself crashes, every pending future fails and the task
restarts. Model code never knows batching exists.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np

from care_serve.errors import (
    CareServeError,
    DeadlineExceeded,
    InferenceError,
    ModelNotReady,
    ServerBusy,
)
from care_serve.store.manifest import BatchingConfig

__all__ = ["BatchTiming", "DynamicBatcher", "RunFn"]

log = logging.getLogger(__name__)

RunFn = Callable[[np.ndarray], dict[str, np.ndarray]]
Outputs = dict[str, np.ndarray]


@dataclass(frozen=True)
class BatchTiming:
    """What one request experienced in the batcher."""

    queue_s: float
    compute_s: float
    batch_size: int


@dataclass
class _Item:
    array: np.ndarray
    future: asyncio.Future[tuple[Outputs, BatchTiming]]
    enqueued: float
    deadline: float | None
    background: bool = False


class DynamicBatcher:
    """Collects single-sample requests into batches for one model."""

    def __init__(
        self,
        run: RunFn,
        config: BatchingConfig,
        executor: Executor | Sequence[Executor],
        *,
        name: str = "model",
        on_batch: Callable[[int, float], None] | None = None,
        on_queue_depth: Callable[[int], None] | None = None,
        slots: int = 1,
    ) -> None:
        if slots < 1:
            raise ValueError(f"a batcher needs at least one slot, got {slots}")
        self._run = run
        self.slots = slots
        self.config = config
        if isinstance(executor, Executor):
            executor = [executor] * slots
        if len(executor) != slots:
            raise ValueError(f"{slots} slots need {slots} executors, got {len(executor)}")
        self._executors = list(executor)
        self._free_slots = list(range(slots))
        self.name = name
        self._on_batch = on_batch
        self._on_queue_depth = on_queue_depth
        self._queue: deque[_Item] = deque()
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()
        self._slot_free: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._executing_items = 0
        self._max_delay = config.max_queue_delay_ms / 1000.0
        self._preferred = frozenset(config.preferred_batch_sizes)

    # -- public API ---------------------------------------------------------------------
    def start(self) -> None:
        """Start the batch task on the running event loop."""
        self._loop = asyncio.get_running_loop()
        self._wakeup = asyncio.Event()
        self._slot_free = asyncio.Event()
        self._spawn()

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    @property
    def idle(self) -> bool:
        """No request queued or executing."""
        return not self._queue and len(self._free_slots) == self.slots

    async def submit(
        self, array: np.ndarray, deadline: float | None = None, *, background: bool = False
    ) -> tuple[Outputs, BatchTiming]:
        """Queue one ``(3, H, W)`` sample; wait for its outputs (batch axis removed).

        ``deadline`` is an absolute time on the event loop's clock (``loop.time()``).
        A ``background`` sample (a stream's frame) joins a batch only after every
        interactive sample queued: requests go first.
        """
        if self._closed or self._loop is None or self._wakeup is None:
            raise ModelNotReady(f"model {self.name} is not accepting requests (unloading)")
        loop = self._loop
        now = loop.time()
        if deadline is not None and deadline <= now:
            raise DeadlineExceeded(f"the request deadline passed before {self.name} queued it")
        capacity = self.config.max_queue_size + self.config.max_batch_size
        if len(self._queue) + self._executing_items >= capacity:
            self._prune(now)
            if len(self._queue) + self._executing_items >= capacity:
                raise ServerBusy(
                    f"model {self.name} has {len(self._queue)} requests queued and "
                    f"{self._executing_items} running (max_queue_size "
                    f"{self.config.max_queue_size} + max_batch_size "
                    f"{self.config.max_batch_size}); retry later"
                )
        future: asyncio.Future[tuple[Outputs, BatchTiming]] = loop.create_future()
        self._queue.append(_Item(array, future, now, deadline, background))
        self._report_depth()
        self._wakeup.set()
        if deadline is None:
            return await future
        try:
            return await asyncio.wait_for(future, deadline - now)
        except asyncio.TimeoutError:
            raise DeadlineExceeded(
                f"request to {self.name} timed out after {deadline - now:.3f} s "
                f"(queue depth {len(self._queue)})"
            ) from None

    async def close(self, timeout: float = 0.0) -> None:
        """Stop accepting; wait up to ``timeout`` s for queued work, then fail the rest."""
        self._closed = True
        if self._loop is not None and timeout > 0:
            end = self._loop.time() + timeout
            while not self.idle and self._loop.time() < end:
                await asyncio.sleep(0.005)
        tasks = [t for t in (self._task, *self._running) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._fail_pending(ModelNotReady(f"model {self.name} was unloaded"))

    # -- internals ----------------------------------------------------------------------
    def _spawn(self) -> None:
        assert self._loop is not None
        self._task = self._loop.create_task(self._batch_loop(), name=f"batcher-{self.name}")
        self._task.add_done_callback(self._on_task_done)

    def _on_task_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None:
            return
        log.error("batch task of %s crashed: %r; failing pending requests", self.name, exc)
        self._fail_pending(InferenceError(f"the batch task of {self.name} failed: {exc!r}"))
        if not self._closed:
            self._spawn()

    def _fail_pending(self, error: CareServeError) -> None:
        while self._queue:
            item = self._queue.popleft()
            if not item.future.done():
                item.future.set_exception(error)
        self._report_depth()

    def _report_depth(self) -> None:
        if self._on_queue_depth is not None:
            self._on_queue_depth(len(self._queue))

    def _prune(self, now: float) -> None:
        """Drop answered (cancelled) requests and expire those past their deadline."""
        if not any(
            it.future.done() or (it.deadline is not None and it.deadline <= now)
            for it in self._queue
        ):
            return
        kept: deque[_Item] = deque()
        for item in self._queue:
            if item.future.done():
                continue
            if item.deadline is not None and item.deadline <= now:
                item.future.set_exception(
                    DeadlineExceeded(f"request to {self.name} expired while queued")
                )
                continue
            kept.append(item)
        self._queue = kept
        self._report_depth()

    def _ready(self) -> bool:
        n = len(self._queue)
        return n >= self.config.max_batch_size or n in self._preferred

    async def _batch_loop(self) -> None:
        assert self._loop is not None and self._wakeup is not None
        assert self._slot_free is not None
        loop, wakeup, slot_free = self._loop, self._wakeup, self._slot_free
        while True:
            while not self._free_slots:
                slot_free.clear()
                await slot_free.wait()
            self._prune(loop.time())
            if not self._queue:
                wakeup.clear()
                await wakeup.wait()
                continue
            dispatch_at = self._queue[0].enqueued + self._max_delay
            while not self._ready():
                remaining = dispatch_at - loop.time()
                if remaining <= 0:
                    break
                wakeup.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(wakeup.wait(), remaining)
                self._prune(loop.time())
                if not self._queue:
                    break
            batch = self._take()
            if batch:
                self._start(batch)

    def _start(self, batch: list[_Item]) -> None:
        """Run ``batch`` in the lowest free slot; the loop goes on collecting the next one."""
        assert self._loop is not None
        n = len(batch)
        slot = self._free_slots.pop(0)  # taken now, so the loop sees it busy at once
        self._executing_items += n
        task = self._loop.create_task(self._execute(batch, slot), name=f"batch-{self.name}")
        self._running.add(task)

        def finished(task: asyncio.Task[None]) -> None:
            self._running.discard(task)
            self._executing_items -= n
            bisect.insort(self._free_slots, slot)
            if self._slot_free is not None:
                self._slot_free.set()
            if task.cancelled():  # also when cancelled before it began
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(ModelNotReady(f"model {self.name} was unloaded"))

        task.add_done_callback(finished)

    def _take(self) -> list[_Item]:
        """The next batch: interactive samples first, then background ones, each oldest first."""
        waiting = [item for item in self._queue if not item.future.done()]
        ordered = [i for i in waiting if not i.background] + [i for i in waiting if i.background]
        batch = ordered[: self.config.max_batch_size]
        taken = {id(item) for item in batch}
        self._queue = deque(item for item in waiting if id(item) not in taken)
        self._report_depth()
        return batch

    def _run_batch(self, arrays: list[np.ndarray]) -> Outputs:
        return self._run(np.stack(arrays))

    async def _execute(self, batch: list[_Item], slot: int = 0) -> None:
        assert self._loop is not None
        n = len(batch)
        started = self._loop.time()
        try:
            outputs = await self._loop.run_in_executor(
                self._executors[slot], self._run_batch, [it.array for it in batch]
            )
            bad = {k: v.shape for k, v in outputs.items() if v.shape[:1] != (n,)}
            if bad:
                raise InferenceError(f"model {self.name} returned {bad} for a batch of {n}")
        except Exception as exc:
            error = (
                exc
                if isinstance(exc, CareServeError)
                else InferenceError(
                    f"model {self.name} failed on a batch of {n}: {type(exc).__name__}: {exc}"
                )
            )
            log.error("%s", error)
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(error)
            return
        compute = self._loop.time() - started
        if self._on_batch is not None:
            self._on_batch(n, compute)
        for i, item in enumerate(batch):
            if not item.future.done():
                timing = BatchTiming(started - item.enqueued, compute, n)
                item.future.set_result(({k: v[i] for k, v in outputs.items()}, timing))
