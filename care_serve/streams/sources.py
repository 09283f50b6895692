"""Reading a stream's source: PyAV (FFmpeg) in one thread per stream, drop-to-latest.

The reader thread opens the source, decodes its video and keeps only the newest
frame in a one-slot mailbox: a frame the stream's processing has not taken by
the time the next one arrives is dropped and counted, so a slow model never
builds a queue of stale frames. Frames arriving faster than the stream's
``max_fps`` are skipped before they are converted to RGB (the costly part). A
file is paced at its own frame rate, as a camera would deliver it. When the
source fails, stalls (no packet for ``read_timeout_s``) or ends, the thread
opens it again after a back-off that doubles from ``reconnect_initial_s`` to
``reconnect_max_s`` (a looped file starts again at once).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from care_serve.store.streams import StreamSpec, redact_url

__all__ = ["Frame", "FrameMailbox", "SourceReader", "SourceState"]

log = logging.getLogger(__name__)

SourceState = Literal["connecting", "running", "backing_off", "ended", "stopped"]
OPEN_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 5.0
MAX_FRAME_PIXELS = 16_000_000  # larger frames are reduced (keeping the aspect) on conversion


@dataclass(frozen=True)
class Frame:
    """One decoded frame."""

    number: int  # counts every frame the source gave since the stream started
    pixels: np.ndarray  # (height, width, 3) uint8 RGB
    source_time: float | None  # the frame's timestamp in the source (seconds), when it has one
    captured_at: float  # wall clock (time.time()) when the decoder gave it
    captured_mono: float  # the same moment on time.monotonic()


class FrameMailbox:
    """One slot holding the newest frame; a frame replaced before it was taken is dropped."""

    def __init__(self, on_frame: Callable[[], object]) -> None:
        self._lock = threading.Lock()
        self._frame: Frame | None = None
        self._on_frame = on_frame
        self.dropped = 0

    def put(self, frame: Frame) -> None:
        with self._lock:
            if self._frame is not None:
                self.dropped += 1
            self._frame = frame
        self._on_frame()

    def take(self) -> Frame | None:
        with self._lock:
            frame, self._frame = self._frame, None
            return frame


class SourceReader:
    """Decodes one source in a daemon thread into a ``FrameMailbox``, reconnecting."""

    def __init__(
        self,
        spec: StreamSpec,
        mailbox: FrameMailbox,
        *,
        on_state: Callable[[SourceState, str | None], object],
        on_reconnect: Callable[[], object],
        read_timeout_s: float = READ_TIMEOUT_S,
    ) -> None:
        self.spec = spec
        self.mailbox = mailbox
        self._on_state = on_state
        self._on_reconnect = on_reconnect
        self._read_timeout_s = read_timeout_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"stream-{spec.name}", daemon=True)
        self.frames_decoded = 0  # every frame the decoder gave
        self.frames_skipped = 0  # skipped for the frame-rate cap
        self.frames_delivered = 0
        self.width = 0
        self.height = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self, wait_s: float = 2.0) -> None:
        """Ask the thread to stop; wait up to ``wait_s`` (a blocked read ends at its timeout)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(wait_s)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    # -- the thread ----------------------------------------------------------------------
    def _run(self) -> None:
        backoff = self.spec.reconnect_initial_s
        reopening = False  # after a failure (a looped file starting again is no reconnect)
        looping = False  # a looped file starting again stays "running"
        while not self._stop.is_set():
            if reopening:
                self._on_reconnect()
            if not looping:
                self._on_state("connecting", None)
            reopening, looping = True, False
            try:
                delivered = self._read_once()
            except Exception as exc:
                message = _describe(exc)
                log.warning(
                    "stream %s: source %s failed: %s",
                    self.spec.name,
                    redact_url(self.spec.source),
                    message,
                )
                delivered = 0
            else:
                message = "the source ended"
                if self.spec.kind == "file" and not self.spec.loop and not self._stop.is_set():
                    self._on_state("ended", "the file ended (set 'loop' to play it again)")
                    return
                if self.spec.loop and delivered:
                    backoff = self.spec.reconnect_initial_s
                    reopening, looping = False, True
                    continue
            if self._stop.is_set():
                break
            if delivered:
                backoff = self.spec.reconnect_initial_s
            self._on_state("backing_off", f"{message}; opening it again in {backoff:.3g} s")
            if self._stop.wait(backoff):
                break
            backoff = min(backoff * 2.0, self.spec.reconnect_max_s)
        self._on_state("stopped", None)

    def _open(self) -> Any:
        import av  # PyAV: imported here so that the server starts without it

        spec = self.spec
        options: dict[str, str] = {}
        fmt: str | None = None
        if spec.kind in ("rtsp", "http"):
            # A live source: probe for 1 s, not FFmpeg's default 5 s, before the first frame.
            options.update(analyzeduration="1000000", probesize="1000000")
        if spec.kind == "rtsp":
            options["rtsp_transport"] = spec.rtsp_transport
        elif spec.kind == "http":
            fmt = "mpjpeg"
        elif spec.kind == "v4l2":
            fmt = "video4linux2"
        source = spec.source.removeprefix("file://") if spec.kind == "file" else spec.source
        return av.open(
            source,
            format=fmt,
            options=options,
            timeout=(OPEN_TIMEOUT_S, self._read_timeout_s),
        )

    def _read_once(self) -> int:
        """Open the source and deliver its frames until it ends, fails or the stream stops."""
        delivered = 0
        with self._open() as container:
            if not container.streams.video:
                raise ValueError("the source has no video stream")
            video = container.streams.video[0]
            # Slice threads, not frame threads: frame threading holds back a frame per thread.
            video.thread_type = "SLICE"
            paced = self.spec.kind == "file"
            interval = 1.0 / self.spec.max_fps
            started_mono: float | None = None
            first_time: float | None = None
            next_due = 0.0
            for frame in container.decode(video):
                if self._stop.is_set():
                    break
                source_time = float(frame.time) if frame.time is not None else None
                self.frames_decoded += 1
                now = time.monotonic()
                if paced and source_time is not None:
                    if started_mono is None or first_time is None:
                        started_mono, first_time = now, source_time
                    wait = started_mono + (source_time - first_time) - now
                    if wait > 0 and self._stop.wait(wait):
                        break
                    now = time.monotonic()
                if delivered == 0:
                    self._on_state("running", None)
                # The frame-rate cap, keeping its cadence (a quarter interval of jitter allowed).
                if now < next_due - 0.25 * interval:
                    self.frames_skipped += 1
                    continue
                next_due = next_due + interval if now - next_due < interval else now + interval
                pixels = _rgb(frame)
                self.height, self.width = int(pixels.shape[0]), int(pixels.shape[1])
                delivered += 1
                self.frames_delivered += 1
                self.mailbox.put(
                    Frame(self.frames_decoded, pixels, source_time, time.time(), time.monotonic())
                )
        return delivered


def _rgb(frame: Any) -> np.ndarray:
    """The frame as RGB pixels, reduced when it is larger than ``MAX_FRAME_PIXELS``."""
    width, height = int(frame.width), int(frame.height)
    if width * height > MAX_FRAME_PIXELS:
        scale = (MAX_FRAME_PIXELS / (width * height)) ** 0.5
        width, height = max(2, int(width * scale)) & ~1, max(2, int(height * scale)) & ~1
        return np.asarray(frame.to_ndarray(format="rgb24", width=width, height=height))
    return np.asarray(frame.to_ndarray(format="rgb24"))


def _describe(exc: Exception) -> str:
    """A one-line reason for a failed source (FFmpeg errors carry their own text)."""
    text = str(exc).strip() or type(exc).__name__
    return redact_url(text) if "://" in text else text
