"""What the largest accepted images cost the server, and whether small requests still get through.

    .venv/bin/python -m benchmarks.worst_case_images [--model-store model_store] [--side 6300]

Starts ``care-serve serve`` on loopback (a subprocess, so its memory can be read
from /proc), then: one large PNG (``side`` x ``side``, a few tens of kB, just
under the default pixel limit) through /classify, /detect, /segment and
/segment?format=overlay, timed; four large requests in flight while a small
/classify is timed; and the server's RSS at rest, at its peak and 5 s after.
Prints a table. Bounded: a fixed number of requests, each with a timeout.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from benchmarks.procfs import process_rss_mb

ROOT = Path(__file__).resolve().parent.parent


def big_png(side: int) -> bytes:
    """A flat picture with a few stripes: tiny as a PNG, ``side**2`` pixels decoded."""
    img = np.full((side, side, 3), 200, np.uint8)
    img[:: max(1, side // 10)] = 30
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "PNG", optimize=True)
    return buf.getvalue()


def small_jpeg() -> bytes:
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (60, 80, 3), np.uint8)).resize((640, 480))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def rss_mb(pid: int) -> float:
    return process_rss_mb(pid) or 0.0


def start_server(store: Path, port: int) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "care_serve", "serve", "--model-store", str(store)]
    cmd += ["--http-port", str(port), "--grpc-port", "0", "--no-grpc"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    assert proc.stderr is not None
    for line in proc.stderr:
        if "care-serve ready" in line:
            threading.Thread(target=proc.stderr.read, daemon=True).start()
            return proc
    raise RuntimeError("the server did not start")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-store", type=Path, default=ROOT / "model_store")
    parser.add_argument("--side", type=int, default=6300)
    parser.add_argument("--port", type=int, default=18080)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    big, small = big_png(args.side), small_jpeg()
    proc = start_server(args.model_store, args.port)
    url = f"http://127.0.0.1:{args.port}"
    rows: list[tuple[str, str]] = []
    try:
        with httpx.Client(base_url=url, timeout=120) as client:
            for _ in range(5):
                client.post("/classify", content=small)
            rest = rss_mb(proc.pid)
            rows.append(("RSS at rest", f"{rest:.0f} MB"))
            rows.append(("large image", f"{args.side}x{args.side} PNG, {len(big) / 1024:.0f} kB"))
            peak = rest
            for route in ("/classify", "/detect", "/segment", "/segment?format=overlay"):
                times = []
                for _ in range(args.repeats):
                    t0 = time.perf_counter()
                    response = client.post(route, content=big)
                    times.append(time.perf_counter() - t0)
                    peak = max(peak, rss_mb(proc.pid))
                    assert response.status_code == 200, response.text
                rows.append(
                    (
                        f"{route} (large), median of {args.repeats}",
                        f"{statistics.median(times) * 1000:.0f} ms",
                    )
                )
            baseline = []
            for _ in range(10):
                t0 = time.perf_counter()
                client.post("/classify", content=small)
                baseline.append(time.perf_counter() - t0)
            rows.append(
                ("/classify 640x480 alone, median", f"{statistics.median(baseline) * 1000:.1f} ms")
            )
            stop = threading.Event()

            def flood() -> None:
                with httpx.Client(base_url=url, timeout=120) as c:
                    while not stop.is_set():
                        c.post("/segment?format=overlay", content=big)

            floods = [threading.Thread(target=flood) for _ in range(4)]
            for t in floods:
                t.start()
            time.sleep(1.0)
            during = []
            for _ in range(10):
                t0 = time.perf_counter()
                assert client.post("/classify", content=small).status_code == 200
                during.append(time.perf_counter() - t0)
                peak = max(peak, rss_mb(proc.pid))
            stop.set()
            for t in floods:
                t.join(120)
            rows.append(
                (
                    "/classify 640x480 with 4 large overlays in flight, median",
                    f"{statistics.median(during) * 1000:.1f} ms",
                )
            )
            rows.append(("... its worst of 10", f"{max(during) * 1000:.1f} ms"))
            rows.append(("RSS peak", f"{peak:.0f} MB"))
            time.sleep(5)
            rows.append(("RSS 5 s after", f"{rss_mb(proc.pid):.0f} MB"))
    finally:
        proc.terminate()
        proc.wait(30)
    width = max(len(k) for k, _ in rows)
    print(f"| {'what':<{width}} | value |\n|{'-' * (width + 2)}|-------|")
    for key, value in rows:
        print(f"| {key:<{width}} | {value} |")
    print(f"\n(cores: {os.cpu_count()}; default settings; one run on this machine)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
