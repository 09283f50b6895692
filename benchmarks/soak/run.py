"""The soak test behind ``python -m benchmarks.soak``: mixed traffic, watching the server.

Closed loop like the load benchmark (``benchmarks.load.client``: N clients, each
sends a request, waits, sends the next), but the requests mix the three tasks
(``/classify``, ``/detect``, ``/segment`` and their gRPC calls) on generated
scenes (``care_serve.offline.data.synthetic``), with a share of malformed images (which
must get a 4xx / INVALID_ARGUMENT) and of large ones. Every ``report_every``
seconds a row is printed: requests, throughput, answers by status and the
server's resident memory (``VmRSS`` from ``/proc/<pid>/status``); at the end a
summary. Loopback only; bounded in duration and concurrency.
"""

from __future__ import annotations

import asyncio
import io
import random
import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from benchmarks.load.client import MAX_CONCURRENCY, RawHttpClient, check_loopback
from benchmarks.procfs import process_rss_mb

__all__ = [
    "MAX_DURATION_S",
    "TASKS",
    "Payloads",
    "SoakReport",
    "make_payloads",
    "run_soak",
]

MAX_DURATION_S = 3600.0
# task -> (REST path, gRPC method, request message name)
TASKS = {
    "classification": ("/classify", "Classify", "ClassifyRequest"),
    "detection": ("/detect", "Detect", "DetectRequest"),
    "segmentation": ("/segment", "Segment", "SegmentRequest"),
}
# Statuses that mean the server failed (503/UNAVAILABLE under overload and 504 are reported
# but are not failures); "transport" = no answer at all.
FAILURES = {"500", "502", "INTERNAL", "UNKNOWN", "transport"}


@dataclass(frozen=True)
class Payloads:
    """The images sent: ordinary scenes, malformed files and large images."""

    normal: list[bytes]
    malformed: list[bytes]
    large: list[bytes]


def _encode(array: np.ndarray, image_format: str, quality: int = 90) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, image_format, quality=quality)
    return buf.getvalue()


def make_payloads(seed: int = 0, count: int = 12, large_side: int = 2048) -> Payloads:
    """Scenes as JPEG and PNG, malformed variants of them, and ``large_side`` images."""
    from care_serve.offline.data.synthetic import make_scene

    normal = []
    for i in range(count):
        scene = make_scene(np.random.default_rng([seed, 101, i]))
        normal.append(_encode(scene.image, "JPEG" if i % 2 == 0 else "PNG"))
    jpeg = normal[0]
    rng = np.random.default_rng(seed)
    malformed = [
        jpeg[: len(jpeg) // 3],  # truncated
        bytes(rng.integers(0, 256, 4096, dtype=np.uint8)),  # noise
        b"\x89PNG\r\n\x1a\n" + bytes(64),  # a PNG signature and nothing valid after it
        jpeg[:200] + bytes(rng.integers(0, 256, 2000, dtype=np.uint8)) + jpeg[-200:],
        b"",  # empty body
    ]
    base = make_scene(np.random.default_rng([seed, 102])).image
    reps = (large_side // base.shape[0] + 1, large_side // base.shape[1] + 1, 1)
    big = np.tile(base, reps)[:large_side, :large_side]
    large = [_encode(big, "JPEG", quality=85), _encode(big[: large_side // 2], "PNG")]
    return Payloads(normal, malformed, large)


@dataclass
class SoakReport:
    """What a soak run saw."""

    duration_s: float = 0.0
    statuses: Counter[str] = field(default_factory=Counter)
    by_task: dict[str, Counter[str]] = field(default_factory=dict)
    by_kind: dict[str, Counter[str]] = field(default_factory=dict)
    latencies_ms: dict[str, list[float]] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def requests(self) -> int:
        return sum(self.statuses.values())

    @property
    def failures(self) -> int:
        """Answers that mean the server failed (5xx other than 503/504, INTERNAL, none)."""
        return sum(n for status, n in self.statuses.items() if status in FAILURES)

    def record(self, task: str, kind: str, status: str, latency_ms: float) -> None:
        self.statuses[status] += 1
        self.by_task.setdefault(task, Counter())[status] += 1
        self.by_kind.setdefault(kind, Counter())[status] += 1
        self.latencies_ms.setdefault(task, []).append(latency_ms)

    def summary(self) -> str:
        """The closing table (markdown)."""
        lines = [
            f"soak: {self.requests} requests in {self.duration_s:.1f} s = "
            f"{self.requests / max(self.duration_s, 1e-9):.1f} req/s; server failures "
            f"(5xx other than 503/504, INTERNAL, no answer): {self.failures}",
            "",
            "| task | requests | p50 ms | p99 ms | answers by status |",
            "|---|---:|---:|---:|---|",
        ]
        for task, counts in sorted(self.by_task.items()):
            lat = sorted(self.latencies_ms.get(task, [0.0]))
            p99 = lat[min(len(lat) - 1, int(0.99 * len(lat)))]
            lines.append(
                f"| {task} | {sum(counts.values())} | {statistics.median(lat):.1f} | "
                f"{p99:.1f} | {_counts(counts)} |"
            )
        lines += ["", "| images | requests | answers by status |", "|---|---:|---|"]
        for kind, counts in sorted(self.by_kind.items()):
            lines.append(f"| {kind} | {sum(counts.values())} | {_counts(counts)} |")
        rss = [r["rss_mb"] for r in self.rows if r["rss_mb"] is not None]
        if rss:
            lines += [
                "",
                f"server RSS: {rss[0]:.0f} MB at the first report, {max(rss):.0f} MB at most, "
                f"{rss[-1]:.0f} MB at the end",
            ]
        return "\n".join(lines)


def _counts(counts: Counter[str]) -> str:
    return ", ".join(f"{status}: {n}" for status, n in sorted(counts.items()))


def _row_text(row: dict[str, Any]) -> str:
    rss = "n/a" if row["rss_mb"] is None else f"{row['rss_mb']:.0f}"
    return (
        f"| {row['t_s']:6.1f} | {row['requests']:6d} | {row['req_per_s']:7.1f} | "
        f"{row['failures']:4d} | {rss:>7} | {_counts(row['statuses'])} |"
    )


TABLE_HEAD = (
    "|    t s | requests |   req/s | fail | RSS MB | answers by status (this interval) |\n"
    "|---:|---:|---:|---:|---:|---|"
)


async def run_soak(
    url: str,
    grpc_target: str | None,
    models: dict[str, str],
    *,
    duration_s: float,
    concurrency: int,
    report_every_s: float = 10.0,
    malformed_share: float = 0.05,
    large_share: float = 0.05,
    server_pid: int | None = None,
    payloads: Payloads | None = None,
    seed: int = 0,
    out: Callable[[str], None] = print,
) -> SoakReport:
    """Drive mixed traffic at ``url`` (and gRPC ``grpc_target``) for ``duration_s``.

    ``models`` maps each task to serve to its model name; requests go over REST
    and, with ``grpc_target``, alternate with gRPC.
    """
    check_loopback(url, grpc_target)
    if not 0 < duration_s <= MAX_DURATION_S:
        raise ValueError(f"duration must be in (0, {MAX_DURATION_S:.0f}] seconds")
    if not 1 <= concurrency <= MAX_CONCURRENCY:
        raise ValueError(f"concurrency must be 1..{MAX_CONCURRENCY}")
    if not models:
        raise ValueError("no task to soak: the server serves no classification, detection "
                         "or segmentation model")  # fmt: skip
    if not (0 <= malformed_share <= 1 and 0 <= large_share <= 1 - malformed_share):
        raise ValueError("malformed and large shares must be in [0, 1] and sum to at most 1")
    payloads = payloads or make_payloads(seed)
    report = SoakReport()
    interval: Counter[str] = Counter()
    rng = random.Random(seed)
    tasks = sorted(models)
    loop = asyncio.get_running_loop()
    started = loop.time()
    end = started + duration_s

    def pick() -> tuple[str, str, bytes]:
        draw = rng.random()
        kind = "malformed" if draw < malformed_share else (
            "large" if draw < malformed_share + large_share else "normal")  # fmt: skip
        images = getattr(payloads, kind)
        return rng.choice(tasks), kind, images[rng.randrange(len(images))]

    grpc_call = await _grpc_caller(grpc_target, models) if grpc_target else None

    async def client(index: int) -> None:
        http = RawHttpClient(url)
        use_grpc = grpc_call is not None and index % 2 == 1
        try:
            while loop.time() < end:
                task, kind, image = pick()
                t0 = time.perf_counter()
                if use_grpc:
                    assert grpc_call is not None
                    status = await grpc_call(task, image)
                else:
                    status = await _rest_call(http, models, task, image)
                    if status == "transport":
                        await http.close()
                        http = RawHttpClient(url)
                latency = 1000 * (time.perf_counter() - t0)
                report.record(task, kind, status, latency)
                interval[status] += 1
        finally:
            await http.close()

    async def reporter() -> None:
        out(TABLE_HEAD)
        last, last_t = 0, started
        while True:
            await asyncio.sleep(max(0.0, min(report_every_s, end - loop.time())))
            now = loop.time()
            done = report.requests
            row = {
                "t_s": now - started,
                "requests": done - last,
                "req_per_s": (done - last) / max(now - last_t, 1e-9),
                "failures": sum(n for s, n in interval.items() if s in FAILURES),
                "rss_mb": process_rss_mb(server_pid) if server_pid else None,
                "statuses": Counter(interval),
            }
            report.rows.append(row)
            out(_row_text(row))
            interval.clear()
            last, last_t = done, now
            if now >= end:
                return

    clients = [asyncio.create_task(client(i)) for i in range(concurrency)]
    watcher = asyncio.create_task(reporter())
    try:
        await asyncio.gather(*clients)
        report.duration_s = loop.time() - started
        await watcher
    finally:
        watcher.cancel()
        if grpc_call is not None:
            await grpc_call.close()
    return report


async def _rest_call(http: RawHttpClient, models: dict[str, str], task: str, image: bytes) -> str:
    path = f"{TASKS[task][0]}?model={models[task]}"
    try:
        return str(await http.post(path, image, "application/octet-stream"))
    except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
        return "transport"


class _GrpcCaller:
    """One channel; ``await caller(task, image)`` -> the status code name."""

    def __init__(self, target: str, models: dict[str, str]) -> None:
        import grpc

        from care_serve.grpc_gen.care_serve.v1 import inference_pb2 as pb
        from care_serve.grpc_gen.care_serve.v1 import inference_pb2_grpc as pb_grpc

        self._grpc = grpc
        self._pb = pb
        self.models = models
        self.channel = grpc.aio.insecure_channel(
            target, options=[("grpc.max_send_message_length", 64 * 1024 * 1024)]
        )
        self.stub = pb_grpc.InferenceServiceStub(self.channel)

    async def __call__(self, task: str, image: bytes) -> str:
        _, method, message = TASKS[task]
        request = getattr(self._pb, message)(model=self.models[task], image=image)
        try:
            await getattr(self.stub, method)(request, timeout=60)
            return "OK"
        except self._grpc.aio.AioRpcError as exc:
            return str(exc.code().name)

    async def close(self) -> None:
        await self.channel.close()


async def _grpc_caller(target: str, models: dict[str, str]) -> _GrpcCaller:
    return _GrpcCaller(target, models)


def served_models(listing: list[dict[str, Any]]) -> dict[str, str]:
    """Task -> the first (by name) ready model of that task in a ``/models`` listing."""
    chosen: dict[str, str] = {}
    for info in sorted(listing, key=lambda m: m["name"]):
        task = info.get("task")
        if task in TASKS and info.get("state") == "ready":
            chosen.setdefault(task, info["name"])
    return chosen
