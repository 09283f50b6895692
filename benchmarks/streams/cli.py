"""``python -m benchmarks.streams``: camera streams through the bundled pipeline.

One server (``care-serve serve`` on the bundled store, in a subprocess) runs 1,
2, 4 and 8 streams at 5 and 15 fps through ``shapes-detect-classify``. The
cameras are looped H.264 files of synthetic scenes (made here, played at their
own frame rate as a camera delivers them: 15 fps, the stream's ``max_fps`` caps
what is processed). For each configuration, after a warm-up, it measures over a
window: the fps processed per stream, the share of frames dropped
(drop-to-latest: replaced by a newer frame, or the models full), capture-to-event
latency p50 and p99 (from the events over server-sent events), the server's CPU
per processed frame (all with the streams alone); then, over a second window,
``/classify`` p50 of one client asking back to back while the streams run,
against the same client with no stream running, and the streams' p99 then.

The goal on a 2-core machine: 4 streams at 5 fps with p99 capture-to-event below
500 ms and ``/classify`` p50 at most 1.5x its idle value.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

PIPELINE = "shapes-detect-classify"
TOKEN = "bench-streams-admin"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
CAMERA_FPS = 15
GOAL = (4, 5.0)  # streams, fps
GOAL_P99_MS = 500.0
GOAL_CLASSIFY_RATIO = 1.5


def register(subparsers: Any) -> None:
    """Add the ``bench-streams`` command."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "bench-streams",
        help="camera streams through the bundled pipeline: fps, drops, latency, CPU",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--fps", type=float, nargs="+", default=[5.0, 15.0])
    parser.add_argument("--window", type=float, default=15.0, help="seconds measured per case")
    parser.add_argument("--warmup", type=float, default=4.0, help="seconds before measuring")
    parser.add_argument(
        "--size", default="640x480", help="camera frame size WIDTHxHEIGHT (default 640x480)"
    )
    parser.set_defaults(handler=run)


# -- the cameras -------------------------------------------------------------------------
def _scene(width: int, height: int, index: int) -> np.ndarray:
    """A grey frame with a circle, a square and a triangle, moved a little per scene."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (width, height), (200, 200, 200))
    draw = ImageDraw.Draw(image)
    unit = min(width, height) // 4
    shift = (index % 4) * unit // 6
    draw.ellipse((unit // 3 + shift, unit // 3, unit // 3 + unit + shift, unit // 3 + unit),
                 fill=(220, 30, 30))  # fmt: skip
    draw.rectangle((width - 2 * unit, height - 2 * unit + shift, width - unit, height - unit
                    + shift), fill=(30, 30, 220))  # fmt: skip
    cx, top = width // 2, height // 2 - unit // 2
    draw.polygon([(cx, top), (cx + unit // 2, top + unit), (cx - unit // 2, top + unit)],
                 fill=(30, 160, 30))  # fmt: skip
    return np.asarray(image)


def make_camera_file(path: Path, width: int, height: int, seconds: int = 8) -> Path:
    """An H.264 file of moving shapes at ``CAMERA_FPS`` (a keyframe every second)."""
    from benchmarks.video import write_frames

    frames = (_scene(width, height, n // 5) for n in range(seconds * CAMERA_FPS))
    return write_frames(path, frames, CAMERA_FPS, crf=23)


def _jpeg(width: int, height: int) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(_scene(width, height, 0)).save(out, "JPEG", quality=90)
    return out.getvalue()


# -- measuring ---------------------------------------------------------------------------
@dataclass
class Case:
    """One number of streams at one frame rate."""

    streams: int
    fps: float
    processed: int = 0
    dropped: int = 0
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)  # the streams alone
    loaded_latencies_ms: list[float] = field(default_factory=list)  # with /classify running
    cpu_s: float = 0.0
    classify_ms: list[float] = field(default_factory=list)

    @property
    def fps_per_stream(self) -> float:
        return self.processed / self.seconds / self.streams if self.seconds else 0.0

    @property
    def dropped_share(self) -> float:
        total = self.processed + self.dropped
        return self.dropped / total if total else 0.0

    @property
    def cpu_ms_per_frame(self) -> float:
        return 1000.0 * self.cpu_s / self.processed if self.processed else float("nan")


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100.0 * (len(ordered) - 1)))]


class EventReader(threading.Thread):
    """Collects ``latency_ms`` of one stream's events over SSE while ``recording`` is set."""

    def __init__(self, url: str, name: str, recording: threading.Event, stop: threading.Event):
        super().__init__(daemon=True)
        self.url, self.name = url, name
        self.recording, self.stop = recording, stop
        self.latencies_ms: list[float] = []

    def run(self) -> None:
        timeout = httpx.Timeout(10.0, read=2.0)
        while not self.stop.is_set():
            try:
                with httpx.stream("GET", f"{self.url}/streams/{self.name}/events",
                                  timeout=timeout) as response:  # fmt: skip
                    for line in response.iter_lines():
                        if self.stop.is_set():
                            return
                        if line.startswith("data:") and self.recording.is_set():
                            self.latencies_ms.append(json.loads(line[5:])["latency_ms"])
            except httpx.HTTPError:
                time.sleep(0.1)


def classify_loop(url: str, jpeg: bytes, seconds: float) -> list[float]:
    """Back-to-back ``/classify`` calls for ``seconds`` (at most 2000); their times in ms."""
    times: list[float] = []
    end = time.monotonic() + seconds
    with httpx.Client(base_url=url, timeout=30) as client:
        while time.monotonic() < end and len(times) < 2000:
            start = time.perf_counter()
            answer = client.post("/classify", content=jpeg,
                                 headers={"Content-Type": "image/jpeg"})  # fmt: skip
            if answer.status_code == 200:
                times.append(1000.0 * (time.perf_counter() - start))
    return times


def _totals(client: httpx.Client) -> tuple[int, int]:
    streams = client.get("/streams").json()["streams"]
    return (
        sum(s["frames_processed"] for s in streams),
        sum(s["frames_dropped"] for s in streams),
    )


def measure(server: Any, camera: Path, jpeg: bytes, case: Case, args: argparse.Namespace) -> None:
    """Start ``case.streams`` streams, warm up, measure them alone, then with requests."""
    from benchmarks.procfs import sample_tree

    names = [f"cam{i}" for i in range(case.streams)]
    recording, stop = threading.Event(), threading.Event()
    readers = [EventReader(server.url, n, recording, stop) for n in names]
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for name in names:
            spec = {"name": name, "source": str(camera), "pipeline": PIPELINE,
                    "max_fps": case.fps, "loop": True}  # fmt: skip
            answer = client.post("/streams", json=spec, headers=ADMIN)
            answer.raise_for_status()
        for reader in readers:
            reader.start()
        time.sleep(args.warmup)
        # The streams alone: rates, drops, latency and CPU per frame.
        processed0, dropped0 = _totals(client)
        cpu0 = sample_tree(server.pid)
        started = time.monotonic()
        recording.set()
        time.sleep(args.window)
        recording.clear()
        case.seconds = time.monotonic() - started
        cpu1 = sample_tree(server.pid)
        processed1, dropped1 = _totals(client)
        case.processed, case.dropped = processed1 - processed0, dropped1 - dropped0
        if cpu0 is not None and cpu1 is not None:
            case.cpu_s = cpu1.cpu_s - cpu0.cpu_s
        case.latencies_ms = [v for r in readers for v in r.latencies_ms]
        for reader in readers:
            reader.latencies_ms = []
        # Then one client asking /classify back to back while the streams run.
        recording.set()
        case.classify_ms = classify_loop(server.url, jpeg, args.window)
        recording.clear()
        stop.set()
        for name in names:
            client.delete(f"/streams/{name}", headers=ADMIN)
    for reader in readers:
        reader.join(5)
        case.loaded_latencies_ms += reader.latencies_ms


def print_table(cases: list[Case], idle_ms: list[float], args: argparse.Namespace) -> None:
    idle = statistics.median(idle_ms) if idle_ms else float("nan")
    print(f"\ncamera {args.size} H.264 at {CAMERA_FPS} fps, pipeline {PIPELINE}, "
          f"window {args.window:g} s; /classify p50 idle {idle:.1f} ms\n")  # fmt: skip
    print("| streams | max fps | fps per stream | dropped | p50 ms | p99 ms | CPU ms/frame "
          "| /classify p50 | vs idle | p99 ms with /classify |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    for c in cases:
        busy = statistics.median(c.classify_ms) if c.classify_ms else float("nan")
        print(f"| {c.streams} | {c.fps:g} | {c.fps_per_stream:.2f} | {100 * c.dropped_share:.0f} % "
              f"| {percentile(c.latencies_ms, 50):.0f} | {percentile(c.latencies_ms, 99):.0f} "
              f"| {c.cpu_ms_per_frame:.1f} | {busy:.1f} ms | {busy / idle:.2f}x "
              f"| {percentile(c.loaded_latencies_ms, 99):.0f} |")  # fmt: skip
    goal = next((c for c in cases if (c.streams, c.fps) == GOAL), None)
    if goal is not None and goal.classify_ms:
        p99 = percentile(goal.loaded_latencies_ms, 99)
        ratio = statistics.median(goal.classify_ms) / idle
        met = p99 < GOAL_P99_MS and ratio <= GOAL_CLASSIFY_RATIO
        print(f"\ngoal (4 streams at 5 fps: p99 < {GOAL_P99_MS:.0f} ms, /classify p50 <= "
              f"{GOAL_CLASSIFY_RATIO}x idle): p99 {p99:.0f} ms, /classify {ratio:.2f}x -> "
              f"{'met' if met else 'NOT met'}")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from benchmarks.load.client import ServerProcess
    from care_serve.settings import default_model_store

    width, height = (int(v) for v in args.size.lower().split("x"))
    with tempfile.TemporaryDirectory(prefix="care-bench-streams-") as work:
        camera = make_camera_file(Path(work) / "camera.mp4", width, height)
        jpeg = _jpeg(640, 480)
        server = ServerProcess(
            default_model_store(),
            "shapes-detector,shapes-classifier",
            extra_env={"CARE_SERVE_ADMIN_TOKEN": TOKEN},
        )
        try:
            server.wait_ready()
            classify_loop(server.url, jpeg, 2.0)  # warm-up
            idle_ms = classify_loop(server.url, jpeg, min(args.window, 8.0))
            cases = []
            for fps in args.fps:
                for count in args.streams:
                    case = Case(count, fps)
                    measure(server, camera, jpeg, case, args)
                    cases.append(case)
                    print(f"  {count} streams at {fps:g} fps: {case.fps_per_stream:.2f} fps "
                          f"each, p99 {percentile(case.latencies_ms, 99):.0f} ms",
                          flush=True)  # fmt: skip
            print_table(cases, idle_ms, args)
        finally:
            server.stop()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``python -m benchmarks.streams`` with ``argv``."""
    from benchmarks.entry import run_command

    return run_command("bench-streams", register, argv)
