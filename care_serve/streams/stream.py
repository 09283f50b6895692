"""One running stream: its reader thread, its processing task, its sinks and subscribers.

The processing task waits for the reader's newest frame, runs it through the
stream's pipeline or model on the data plane as *background* work (requests
go first in the batchers, and stream frames hold at most half of a model's
places), turns the answer into an event, and hands the event to the sinks, to
the server-sent-events subscribers and to the preview. One frame is processed
at a time, so a slow model makes the stream drop frames, never lag.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel, Field

from care_serve.errors import CareServeError, ServerBusy
from care_serve.imaging.inputs import RgbFrame
from care_serve.observability.metrics import ServingMetrics
from care_serve.observability.redaction import redact_paths
from care_serve.serving.data_plane import DataPlane
from care_serve.store.streams import StreamSpec, redact_url
from care_serve.streams.events import EventGate, StreamEvent, annotate_jpeg
from care_serve.streams.sinks import Sink, SinkStatus, make_sink
from care_serve.streams.sources import Frame, FrameMailbox, SourceReader, SourceState
from care_serve.tasks.base import get_task_class

__all__ = ["Stream", "StreamStatus"]

log = logging.getLogger(__name__)
RATE_WINDOW_S = 5.0
SUBSCRIBER_QUEUE = 32


class StreamStatus(BaseModel):
    """A stream as ``GET /streams/{name}`` shows it."""

    name: str
    source: str = Field(description="The source (passwords and file folders left out).")
    pipeline: str | None
    model: str | None
    state: SourceState = Field(
        description="connecting, running, backing_off, ended (a file without loop) or stopped."
    )
    error: str | None = Field(description="Why the source is backing off, or the last failure.")
    max_fps: float
    fps_in: float = Field(description="Frames per second the source delivered (last 5 s).")
    fps_out: float = Field(description="Frames per second processed (last 5 s).")
    frames_decoded: int
    frames_processed: int
    frames_dropped: int = Field(description="Replaced by a newer frame before they were processed.")
    frames_skipped: int = Field(description="Skipped by the max_fps cap.")
    frames_failed: int
    lag_ms: float | None = Field(description="Capture-to-event time of the last processed frame.")
    reconnects: int
    width: int
    height: int
    sinks: list[SinkStatus]
    spec: dict[str, Any] = Field(description="The stream's definition (no secrets).")


class _Rate:
    """Events per second over the last ``RATE_WINDOW_S`` seconds."""

    def __init__(self) -> None:
        self._times: deque[float] = deque()

    def tick(self, now: float) -> None:
        self._times.append(now)
        self._trim(now)

    def _trim(self, now: float) -> None:
        while self._times and self._times[0] < now - RATE_WINDOW_S:
            self._times.popleft()

    def per_second(self, now: float, started: float) -> float:
        self._trim(now)
        window = min(RATE_WINDOW_S, max(now - started, 1e-3))
        return round(len(self._times) / window, 2)


class Stream:
    """A source, the pipeline or model its frames go through, and where events go."""

    def __init__(self, spec: StreamSpec, plane: DataPlane, metrics: ServingMetrics) -> None:
        self.spec = spec
        self.plane = plane
        self.metrics = metrics
        self.state: SourceState = "connecting"
        self.error: str | None = None
        self.reconnects = 0
        self.frames_processed = 0
        self.frames_failed = 0
        self.lag_ms: float | None = None
        self.sinks: list[Sink] = [make_sink(s, spec.name, metrics) for s in spec.sinks]
        self._gate = EventGate(spec.events)
        self._subscribers: set[asyncio.Queue[StreamEvent | None]] = set()
        self._latest: tuple[Frame, dict[str, Any]] | None = None
        self._latest_jpeg: tuple[int, bytes] | None = None
        self._processed = asyncio.Condition()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._rate_in = _Rate()
        self._rate_out = _Rate()
        self._started = time.monotonic()
        self._seen_dropped = 0
        self._seen_skipped = 0
        self._busy = 0  # frames dropped because the models were full
        self._frame_timeout_s = max(2.0, 5.0 / spec.max_fps)
        self._up = metrics.stream_up.labels(spec.name)
        loop = asyncio.get_running_loop()
        self._mailbox = FrameMailbox(lambda: loop.call_soon_threadsafe(self._arrived))
        self.reader = SourceReader(
            spec,
            self._mailbox,
            on_state=lambda s, e: loop.call_soon_threadsafe(self._set_state, s, e),
            on_reconnect=lambda: loop.call_soon_threadsafe(self._reconnected),
        )

    @property
    def name(self) -> str:
        return self.spec.name

    # -- life ----------------------------------------------------------------------------
    async def start(self) -> None:
        for sink in self.sinks:
            await sink.start()
        self._task = asyncio.create_task(self._process_all(), name=f"stream-{self.name}")
        self.reader.start()

    async def stop(self) -> None:
        """Stop reading and processing, close the sinks, end every subscriber's feed."""
        await asyncio.to_thread(self.reader.stop)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for sink in self.sinks:
            try:
                await sink.close()
            except Exception as exc:  # a sink failing to close must not stop the others
                log.warning("stream %s: closing a sink failed: %r", self.name, exc)
        for queue in list(self._subscribers):
            _offer(queue, None)
        self.state = "stopped"
        self._up.set(0)
        async with self._processed:
            self._processed.notify_all()

    # -- callbacks from the reader thread (run on the loop) --------------------------------
    def _arrived(self) -> None:
        self._rate_in.tick(time.monotonic())
        self._wake.set()

    def _set_state(self, state: SourceState, error: str | None) -> None:
        if self.state == "stopped":
            return
        self.state = state
        if error is not None or state == "running":
            self.error = error
        self._up.set(1 if state == "running" else 0)

    def _reconnected(self) -> None:
        self.reconnects += 1
        self.metrics.stream_reconnects.labels(self.name).inc()

    # -- processing ----------------------------------------------------------------------
    async def _process_all(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            frame = self._mailbox.take()
            self._count_drops()
            if frame is None:
                continue
            try:
                await self._process(frame)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # never let one frame end the stream
                self.frames_failed += 1
                self.metrics.stream_frames.labels(self.name, "failed").inc()
                self.error = f"{type(exc).__name__}: {exc}"
                log.exception("stream %s: processing a frame failed", self.name)

    def _count_drops(self) -> None:
        frames = self.metrics.stream_frames
        dropped, skipped = self._mailbox.dropped, self.reader.frames_skipped
        if dropped > self._seen_dropped:
            frames.labels(self.name, "dropped").inc(dropped - self._seen_dropped)
            self._seen_dropped = dropped
        if skipped > self._seen_skipped:
            frames.labels(self.name, "skipped").inc(skipped - self._seen_skipped)
            self._seen_skipped = skipped

    async def _process(self, frame: Frame) -> None:
        try:
            result = await self._infer(frame)
        except ServerBusy:
            self._busy += 1  # the models are busy with requests: this frame is dropped
            self.metrics.stream_frames.labels(self.name, "dropped").inc()
            return
        except CareServeError as exc:
            self.frames_failed += 1
            self.metrics.stream_frames.labels(self.name, "failed").inc()
            self.error = exc.message
            return
        latency = time.monotonic() - frame.captured_mono
        self.lag_ms = round(latency * 1000.0, 3)
        self.frames_processed += 1
        self._rate_out.tick(time.monotonic())
        self.metrics.stream_frames.labels(self.name, "processed").inc()
        self.metrics.stream_latency.labels(self.name).observe(latency)
        self._latest = (frame, result)
        async with self._processed:
            self._processed.notify_all()
        if not self._gate.passes(result):
            return
        event = StreamEvent(
            stream=self.name,
            frame=frame.number,
            source_time=frame.source_time,
            captured_at=round(frame.captured_at, 6),
            latency_ms=self.lag_ms,
            result=result,
        )
        payload = event.model_dump_json().encode()
        for sink in self.sinks:
            try:
                sink.offer(payload, pipeline=self.spec.target)
            except Exception as exc:  # a broken sink must not stop the stream
                log.warning("stream %s: a sink failed: %r", self.name, exc)
        for queue in list(self._subscribers):
            _offer(queue, event)

    async def _infer(self, frame: Frame) -> dict[str, Any]:
        """What the REST endpoint of the pipeline or model answers for ``frame``."""
        spec = self.spec
        item = RgbFrame(frame.pixels)
        if spec.pipeline is not None:
            ran = await self.plane.pipelines.run(
                spec.pipeline,
                item,
                protocol="stream",
                timeout_s=self._frame_timeout_s,
                background=True,
            )
            return ran.model_dump(mode="json")
        assert spec.model is not None
        (result,) = await self.plane.infer_images(
            spec.model,
            [item],
            params=spec.parameters,
            protocol="stream",
            timeout_s=self._frame_timeout_s,
            background=True,
        )
        task = get_task_class(result.task)
        answer: Any = task.rest_answer(result, task.rest_query())
        return json.loads(answer.model_dump_json()) if isinstance(answer, BaseModel) else {}

    # -- what clients read ----------------------------------------------------------------
    def status(self) -> StreamStatus:
        now = time.monotonic()
        spec = self.spec
        public = spec.public()
        return StreamStatus(
            name=self.name,
            source=public["source"],
            pipeline=spec.pipeline,
            model=spec.model,
            state=self.state,
            error=redact_paths(self.error) if self.error else None,
            max_fps=spec.max_fps,
            fps_in=self._rate_in.per_second(now, self._started),
            fps_out=self._rate_out.per_second(now, self._started),
            frames_decoded=self.reader.frames_decoded,
            frames_processed=self.frames_processed,
            frames_dropped=self._mailbox.dropped + self._busy,
            frames_skipped=self.reader.frames_skipped,
            frames_failed=self.frames_failed,
            lag_ms=self.lag_ms,
            reconnects=self.reconnects,
            width=self.reader.width,
            height=self.reader.height,
            sinks=[sink.status() for sink in self.sinks],
            spec=public,
        )

    @contextlib.contextmanager
    def subscription(self) -> Iterator[asyncio.Queue[StreamEvent | None]]:
        """A queue of every event from now on; ``None`` once the stream stops.

        A reader slower than the stream loses the oldest events, never holds the stream.
        """
        queue: asyncio.Queue[StreamEvent | None] = asyncio.Queue(SUBSCRIBER_QUEUE)
        if self.stopped:
            queue.put_nowait(None)
        self._subscribers.add(queue)
        try:
            yield queue
        finally:
            self._subscribers.discard(queue)

    async def frame_jpeg(self) -> bytes | None:
        """The newest processed frame with its result drawn on it (None before the first)."""
        latest = self._latest
        if latest is None:
            return None
        frame, result = latest
        cached = self._latest_jpeg
        if cached is not None and cached[0] == frame.number:
            return cached[1]
        loop = asyncio.get_running_loop()
        jpeg = await loop.run_in_executor(
            self.plane.pools.small, annotate_jpeg, frame.pixels, result
        )
        self._latest_jpeg = (frame.number, jpeg)
        return jpeg

    async def next_frame_jpeg(self, timeout_s: float) -> bytes | None:
        """The next processed frame, drawn (None when none came within ``timeout_s``)."""
        if self.state == "stopped":
            return None
        async with self._processed:
            try:
                await asyncio.wait_for(self._processed.wait(), timeout_s)
            except asyncio.TimeoutError:
                return None
        return await self.frame_jpeg()

    @property
    def stopped(self) -> bool:
        return self.state == "stopped"

    def describe_source(self) -> str:
        return redact_url(self.spec.source)


def _offer(queue: asyncio.Queue[StreamEvent | None], item: StreamEvent | None) -> None:
    """Put without waiting: a full queue loses its oldest item."""
    if queue.full():
        with contextlib.suppress(asyncio.QueueEmpty):
            queue.get_nowait()
    queue.put_nowait(item)
