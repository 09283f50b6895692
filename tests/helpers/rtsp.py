"""A real RTSP camera on loopback: GStreamer's RTSP server looping the test scenes.

``RtspServer`` runs ``tests/helpers/rtsp_server.py`` under the system Python (``gi`` with
GstRtspServer) on 127.0.0.1. Every client gets its own pipeline: it starts at the first
scene with a keyframe, then sees each scene ``hold`` frames at ``fps`` (live-paced, looping
forever). H.264 (x264enc, one slice per frame, a keyframe every second; openh264enc if x264
is missing) or MJPEG (``codec="mjpeg"``, RTP/JPEG)::

    with RtspServer(fps=10, hold=10) as camera:
        with av.open(camera.url, options={"rtsp_transport": "tcp"}, timeout=5) as container:
            for frame in container.decode(video=0): ...
        camera.stop()      # the camera goes away (SIGKILL; clients see the connection drop)
        camera.restart()   # and comes back on the same port

PyAV: ``av.open(url, options={"rtsp_transport": "tcp"}, timeout=5)`` and
``{"rtsp_transport": "udp"}`` both work on loopback (UDP: the server sends RTP to the
client's ports; ``tcp_only=True`` refuses UDP). FFmpeg probes the stream for about 2.8 s
by default; ``options`` ``{"analyzeduration": "100000", "probesize": "32768"}`` bring the
open down to about 0.3 s.

Without ``/usr/bin/python3`` + gi + GstRtspServer (or without an H.264 encoder), ``start``
calls ``pytest.skip`` with the apt command that installs them.
"""

from __future__ import annotations

import functools
import os
import selectors
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import pytest

from tests.helpers.loopback import HOST, ProcessPart, stop_process, tail, wait_listening
from tests.helpers.scenes import SCENES, ShapeScene

__all__ = ["APT_PACKAGES", "SYSTEM_PYTHON", "RtspServer", "gstreamer_problem"]

SYSTEM_PYTHON = "/usr/bin/python3"
SCRIPT = Path(__file__).with_name("rtsp_server.py")
APT_PACKAGES = (
    "gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good "
    "gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-rtsp "
    "gir1.2-gst-rtsp-server-1.0 python3-gi"
)
_PROBE = """
import gi
gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import Gst, GstRtspServer
Gst.init(None)
need = ["appsrc", "videoconvert", "jpegenc", "rtpjpegpay", "h264parse", "rtph264pay"]
missing = [n for n in need if Gst.ElementFactory.find(n) is None]
if not (Gst.ElementFactory.find("x264enc") or Gst.ElementFactory.find("openh264enc")):
    missing.append("x264enc")
print(" ".join(missing))
"""


@functools.cache
def gstreamer_problem() -> str | None:
    """Why the RTSP server cannot run here, or ``None`` when it can."""
    if not Path(SYSTEM_PYTHON).exists():
        return f"no {SYSTEM_PYTHON}"
    try:
        probe = subprocess.run(
            [SYSTEM_PYTHON, "-c", _PROBE], capture_output=True, text=True, timeout=30
        )
    except subprocess.TimeoutExpired:
        return "probing GStreamer timed out"
    if probe.returncode != 0:
        return f"gi / GstRtspServer not importable: {probe.stderr.strip().splitlines()[-1:]}"
    if probe.stdout.strip():
        return f"GStreamer elements missing: {probe.stdout.strip()}"
    return None


class RtspServer(ProcessPart):
    """The RTSP test camera (see the module docstring); a context manager that starts it."""

    def __init__(
        self,
        scenes: Sequence[ShapeScene] = SCENES,
        fps: int = 10,
        hold: int = 10,
        codec: Literal["h264", "mjpeg"] = "h264",
        path: str = "/scenes",
        tcp_only: bool = False,
        start_timeout_s: float = 15.0,
    ) -> None:
        self.scenes = tuple(scenes)
        self.fps, self.hold, self.codec = fps, hold, codec
        self.path = path if path.startswith("/") else f"/{path}"
        self.tcp_only = tcp_only
        self.start_timeout_s = start_timeout_s
        self.port = 0  # set by the first start, kept by restart
        self.starts = 0
        self._dir: Path | None = None
        self._frame_files: list[str] = []
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``rtsp://127.0.0.1:PORT/scenes`` (known once started)."""
        if not self.port:
            raise RuntimeError("the RTSP server has not started yet")
        return f"rtsp://{HOST}:{self.port}{self.path}"

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._process is not None and self._process.poll() is None

    @property
    def log(self) -> Path | None:
        """The server's stderr (GStreamer warnings), for diagnostics."""
        return self._dir / "server.log" if self._dir else None

    def _frames(self) -> list[str]:
        assert self._dir is not None
        names = []
        for i, scene in enumerate(self.scenes):
            name = self._dir / f"frame{i}.rgb"
            name.write_bytes(scene.frame.tobytes())
            names.append(str(name))
        return names

    def start(self) -> RtspServer:
        """Start the server (on ``self.port`` if set, else any free port) and wait until it
        accepts connections."""
        if self.running:
            return self
        problem = gstreamer_problem()
        if problem is not None:
            pytest.skip(
                f"RTSP test server unavailable ({problem}); apt-get install -y {APT_PACKAGES}"
            )
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="rtsp-"))
            self._frame_files = self._frames()
        height, width = self.scenes[0].frame.shape[:2]
        args = [SYSTEM_PYTHON, str(SCRIPT), "--port", str(self.port), "--path", self.path,
                "--fps", str(self.fps), "--hold", str(self.hold), "--width", str(width),
                "--height", str(height), "--codec", self.codec]  # fmt: skip
        if self.tcp_only:
            args.append("--tcp-only")
        deadline = time.monotonic() + self.start_timeout_s
        while True:  # the old listener may linger a moment after a kill: retry until deadline
            with open(self._dir / "server.log", "ab") as log:
                process = subprocess.Popen(
                    [*args, *self._frame_files],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=log,
                )
            port = self._read_ready(process, deadline)
            if port:
                break
            stop_process(process, kill=True)
            if time.monotonic() >= deadline:
                raise RuntimeError(f"RTSP server did not start:\n{tail(self._dir / 'server.log')}")
            time.sleep(0.2)
        self._process, self.port = process, port
        self.starts += 1
        try:
            wait_listening(port, "RTSP server", max(deadline - time.monotonic(), 1.0), process)
        except RuntimeError:
            self.stop(kill=True)
            raise
        return self

    @staticmethod
    def _read_ready(process: subprocess.Popen[bytes], deadline: float) -> int:
        """The port of the ``READY <port>`` line, or 0 if the process exits or time runs out."""
        assert process.stdout is not None
        line = b""
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            while not line.endswith(b"\n"):
                left = deadline - time.monotonic()
                if left <= 0 or not selector.select(left):
                    return 0
                chunk = os.read(process.stdout.fileno(), 256)
                if not chunk:
                    return 0
                line += chunk
        words = line.split()
        return int(words[1]) if len(words) == 2 and words[0] == b"READY" else 0

    def stop(self, kill: bool = True) -> None:
        """Stop the server: SIGKILL by default, a camera that vanishes."""
        super().stop(kill)
