"""An MJPEG-over-HTTP camera on loopback (``multipart/x-mixed-replace``), in a thread.

Each client (any path; ``url`` names ``/video.mjpg``) gets the JPEG frames in a loop from
the first, paced at ``fps``, each part as::

    --frame\\r\\nContent-Type: image/jpeg\\r\\nContent-Length: N\\r\\n\\r\\n<JPEG>\\r\\n

PyAV reads it with::

    av.open(camera.url, format="mpjpeg", timeout=5)

(``av.open(camera.url, timeout=5)`` works too: FFmpeg probes the body and picks ``mpjpeg``;
``format="mjpeg"`` also decodes but probes for about 2 s). One ``mjpeg`` video stream, no
frame rate (``average_rate`` is ``None``); ``container.decode(video=0)`` yields the frames
(yuvj420p). When the server goes away the read raises ``OSError`` (EIO).
``stop()`` closes the listener and every client connection (a camera that goes away),
``restart()`` listens again on the same port; ``max_frames`` ends each connection after that
many frames (a camera that drops clients).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.helpers.loopback import HOST, LoopbackPart
from tests.helpers.scenes import SCENES, ShapeScene

__all__ = ["BOUNDARY", "MjpegServer", "scene_jpegs"]

BOUNDARY = "frame"


def scene_jpegs(
    scenes: Sequence[ShapeScene] = SCENES, hold: int = 10, quality: int = 90
) -> list[bytes]:
    """Each scene's JPEG ``hold`` times in order: the frames of an MJPEG loop."""
    return [jpeg for scene in scenes for jpeg in [scene.jpeg(quality)] * hold]


class _Server(ThreadingHTTPServer):
    allow_reuse_address = True
    daemon_threads = True


class MjpegServer(LoopbackPart):
    """The MJPEG test camera (see the module docstring); a context manager that starts it."""

    def __init__(
        self,
        frames: Sequence[bytes] | None = None,
        fps: float = 10.0,
        max_frames: int | None = None,
        path: str = "/video.mjpg",
    ) -> None:
        self.frames = list(frames) if frames is not None else scene_jpegs()
        if not self.frames:
            raise ValueError("no frames to serve")
        self.fps, self.max_frames, self.path = fps, max_frames, path
        self.port = 0  # set by the first start, kept by restart
        self.connections = 0  # clients served so far
        self._stopping = threading.Event()
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT/video.mjpg``."""
        if not self.port:
            raise RuntimeError("the MJPEG server has not started")
        return f"http://{HOST}:{self.port}{self.path}"

    @property
    def running(self) -> bool:
        """Whether the server listens."""
        return self._server is not None

    def _stream(self, handler: BaseHTTPRequestHandler) -> None:
        with self._lock:
            self.connections += 1
            self._sockets.add(handler.connection)
        try:
            handler.send_response(200)
            handler.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
            handler.send_header("Cache-Control", "no-cache")
            handler.send_header("Connection", "close")
            handler.end_headers()
            period = 1.0 / self.fps
            start = time.monotonic()
            n = 0
            while not self._stopping.is_set():
                if self.max_frames is not None and n >= self.max_frames:
                    break
                jpeg = self.frames[n % len(self.frames)]
                head = (
                    f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                    f"Content-Length: {len(jpeg)}\r\n\r\n"
                ).encode()
                handler.wfile.write(head + jpeg + b"\r\n")
                handler.wfile.flush()
                n += 1
                self._stopping.wait(max(0.0, start + n * period - time.monotonic()))
        except OSError:
            pass  # the client went away, or stop() closed the connection
        finally:
            with self._lock:
                self._sockets.discard(handler.connection)

    def start(self) -> MjpegServer:
        """Listen (on ``self.port`` if set, else a free port) and serve in a daemon thread."""
        if self._server is not None:
            return self
        camera = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                camera._stream(self)
                self.close_connection = True

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._stopping.clear()
        deadline = time.monotonic() + 5.0
        while True:
            try:
                self._server = _Server((HOST, self.port), Handler)
                break
            except OSError:
                if not self.port or time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="mjpeg", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and drop every client connection."""
        if self._server is None:
            return
        self._stopping.set()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        self._server.shutdown()
        self._server.server_close()
        self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def restart(self) -> MjpegServer:
        """Stop and listen again on the same port."""
        self.stop()
        return self.start()

    def close(self) -> None:
        self.stop()
