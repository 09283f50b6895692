"""The closed-loop load client: N clients, each sends a request, waits, sends the next.

REST goes through ``benchmarks.load.client.RawHttpClient`` (the client ``benchmarks.load``
uses: one keep-alive connection per client, one write per request, so the client
costs little CPU on the shared cores). gRPC shares one channel (HTTP/2 streams).
Every request has a timeout, a level stops after ``duration`` seconds (plus at
most one timeout) and after ``MAX_REQUESTS`` requests, whichever comes first.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from benchmarks.load.client import RawHttpClient
from benchmarks.peers.account import scrape_stages, stage_delta
from benchmarks.peers.results import LevelStats
from benchmarks.procfs import sample_tree, thread_cpu

__all__ = ["GrpcTarget", "RestTarget", "encode_torchserve_request", "run_level"]

MAX_REQUESTS = 1_000_000
REQUEST_TIMEOUT_S = 60.0

Call = Callable[[], Awaitable[bool]]


@dataclass(frozen=True)
class RestTarget:
    """POST the JPEG (or ``body``, the request as the server wants it) to ``url + path``
    with ``headers``; 200 is a success."""

    url: str
    path: str
    content_type: str = "image/jpeg"
    body: bytes | None = None
    headers: tuple[tuple[str, str], ...] = ()


class _HeaderClient(RawHttpClient):
    """The load benchmark's client, with extra request headers (Triton's binary data)."""

    def __init__(self, url: str, headers: tuple[tuple[str, str], ...]) -> None:
        super().__init__(url)
        self._extra += "".join(f"{name}: {value}\r\n" for name, value in headers)


@dataclass(frozen=True)
class GrpcTarget:
    """A unary gRPC method called with pre-serialised request bytes."""

    address: str
    method: str
    request: bytes


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _length_delimited(field_number: int, payload: bytes) -> bytes:
    return _varint(field_number << 3 | 2) + _varint(len(payload)) + payload


def encode_torchserve_request(model_name: str, data: bytes, key: str = "data") -> bytes:
    """TorchServe's ``PredictionsRequest{model_name=1; map<string, bytes> input=3}``.

    Written by hand (protobuf wire format: a map is a repeated entry message with the
    key as field 1 and the value as field 2), so the benchmark needs no code generated
    from TorchServe's protos.
    """
    entry = _length_delimited(1, key.encode()) + _length_delimited(2, data)
    return _length_delimited(1, model_name.encode()) + _length_delimited(3, entry)


def _rest_client(target: RestTarget, body: bytes) -> tuple[Call, Callable[[], Awaitable[None]]]:
    if target.body is not None:
        body = target.body
    state = {"client": _HeaderClient(target.url, target.headers)}

    async def call() -> bool:
        try:
            status = await asyncio.wait_for(
                state["client"].post(target.path, body, target.content_type), REQUEST_TIMEOUT_S
            )
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError, IndexError):
            await close()
            state["client"] = _HeaderClient(target.url, target.headers)  # reconnect next call
            return False
        return status == 200

    async def close() -> None:
        with contextlib.suppress(Exception):
            await state["client"].close()

    return call, close


async def _run_clients(calls: list[Call], stats: LevelStats, duration: float) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + duration
    budget = [MAX_REQUESTS]

    async def client(call: Call) -> None:
        while loop.time() < end and budget[0] > 0:
            budget[0] -= 1
            t0 = time.perf_counter()
            ok = await call()
            if ok:
                stats.latencies_ms.append(1000.0 * (time.perf_counter() - t0))
                if loop.time() <= end:
                    stats.answered_in_window += 1
            else:
                stats.errors += 1
                await asyncio.sleep(0.01)  # a failing server must not turn this into a spin

    started = loop.time()
    await asyncio.gather(*(client(call) for call in calls))
    stats.seconds = loop.time() - started
    stats.window_s = end - started


async def _measure(
    calls: list[Call],
    stats: LevelStats,
    duration: float,
    server_pid: int | None,
    metrics_url: str | None = None,
) -> None:
    # Warm-up: every client once (opens the connections), not counted.
    await asyncio.gather(*(call() for call in calls))
    stages0 = await scrape_stages(metrics_url) if metrics_url else None
    threads0 = thread_cpu(server_pid) if server_pid else {}
    before = sample_tree(server_pid) if server_pid else None
    client0 = time.process_time()
    await _run_clients(calls, stats, duration)
    stats.client_cpu_s = time.process_time() - client0
    after = sample_tree(server_pid) if server_pid else None
    threads1 = thread_cpu(server_pid) if server_pid else {}
    if before is not None and after is not None:
        stats.server_cpu_s = after.cpu_s - before.cpu_s
    stats.thread_cpu_s = {name: cpu - threads0.get(name, 0.0) for name, cpu in threads1.items()}
    stages1 = await scrape_stages(metrics_url) if metrics_url else None
    if stages0 is not None and stages1 is not None:
        stats.stage_s = stage_delta(stages0, stages1)


async def run_level(
    target: RestTarget | GrpcTarget,
    body: bytes,
    concurrency: int,
    duration: float,
    server_pid: int | None = None,
    metrics_url: str | None = None,
) -> LevelStats:
    """One closed-loop level against ``target``; server CPU from ``server_pid``'s tree (and
    its threads), and the server's stage times from ``metrics_url`` (care-serve)."""
    if isinstance(target, RestTarget):
        stats = LevelStats("rest", concurrency)
        pairs = [_rest_client(target, body) for _ in range(concurrency)]
        try:
            await _measure([call for call, _ in pairs], stats, duration, server_pid, metrics_url)
        finally:
            for _, close in pairs:
                await close()
        return stats

    import grpc

    stats = LevelStats("grpc", concurrency)
    async with grpc.aio.insecure_channel(target.address) as channel:
        method = channel.unary_unary(target.method)  # bytes in, bytes out

        async def grpc_call() -> bool:
            try:
                await method(target.request, timeout=REQUEST_TIMEOUT_S)
            except grpc.aio.AioRpcError:
                return False
            return True

        await _measure([grpc_call] * concurrency, stats, duration, server_pid, metrics_url)
    return stats


async def first_answer(target: RestTarget, body: bytes, timeout_s: float) -> bool:
    """Poll ``target`` until it answers 200 (True) or ``timeout_s`` passes (False)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout_s
    while loop.time() < end:
        call, close = _rest_client(target, body)
        try:
            if await call():
                return True
        finally:
            await close()
        await asyncio.sleep(0.1)
    return False
