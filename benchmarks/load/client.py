"""The load benchmark behind ``python -m benchmarks.load``.

Closed loop: at each concurrency level, N clients each send one request, wait
for the answer and send the next, for a fixed time, over REST (a minimal raw
HTTP client) and gRPC (grpc.aio) with a real JPEG, and over the v2 protocol with
the stock Triton clients (``tritonclient.http.aio`` and ``tritonclient.grpc.aio``:
the JPEG as a ``BYTES`` input, the top 5 through the classification extension,
the same answer as ``/classify?top_k=5``). In the same run the bare engine (the same ONNX
file in onnxruntime, no server) is measured: best throughput over batch sizes
1-16, batch-1 latency, and the JPEG's decode + preprocessing time. CPU time is
accounted too (the server process's from ``/proc`` on Linux, the load client's
own, the engine's per image), which shows what bounds throughput when server,
client and engine share the same cores. Loopback only; bounded in time
(``duration`` per level) and concurrency.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import processes
from benchmarks.procfs import process_cpu_seconds

__all__ = [
    "ClientSecurity",
    "EngineResult",
    "LevelResult",
    "RawHttpClient",
    "closed_loop",
    "make_jpeg",
    "measure_engine",
    "process_cpu_seconds",
    "run_level",
]

MAX_CONCURRENCY = 256
OWN_PROTOCOLS = ("rest", "grpc")
V2_PROTOCOLS = ("v2-rest", "v2-grpc")
LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class ClientSecurity:
    """How the load clients reach a TLS and/or key-checking server."""

    ca_file: Path | None = None  # trust this CA: TLS on both ports
    api_key: str | None = None  # sent as 'Authorization: Bearer <key>'

    def ssl_context(self) -> Any:
        import ssl

        return ssl.create_default_context(cafile=str(self.ca_file)) if self.ca_file else None

    def grpc_metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.api_key}"),) if self.api_key else ()


@dataclass
class LevelResult:
    """One protocol at one concurrency level."""

    protocol: str
    concurrency: int
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    seconds: float = 0.0
    server_cpu_s: float | None = None
    client_cpu_s: float = 0.0

    @property
    def throughput(self) -> float:
        return len(self.latencies_ms) / self.seconds if self.seconds else 0.0

    @property
    def server_cpu_ms(self) -> float | None:
        """Server CPU time (all its threads) per answered request, if known."""
        if self.server_cpu_s is None or not self.latencies_ms:
            return None
        return 1000 * self.server_cpu_s / len(self.latencies_ms)

    @property
    def client_cpu_ms(self) -> float:
        """The load client's own CPU time per answered request."""
        return 1000 * self.client_cpu_s / len(self.latencies_ms) if self.latencies_ms else 0.0

    def pct(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else float("nan")


@dataclass
class EngineResult:
    """The bare engine: images/s per batch size, batch-1 latency, decode time."""

    per_batch: dict[int, float]
    batch1_ms: float
    decode_ms: float
    cpu_ms_per_image: dict[int, float] = field(default_factory=dict)

    @property
    def best(self) -> tuple[int, float]:
        size = max(self.per_batch, key=lambda b: self.per_batch[b])
        return size, self.per_batch[size]


def make_jpeg(width: int = 640, height: int = 480, seed: int = 0) -> bytes:
    """A photo-like JPEG: smooth colour fields, edges and sensor noise (quality 90)."""
    from PIL import Image, ImageDraw, ImageFilter

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack(
        [
            128 + 90 * np.sin(x / 97 + 1.0) * np.cos(y / 131),
            128 + 80 * np.cos(x / 61 - y / 173),
            128 + 70 * np.sin((x + y) / 113),
        ],
        axis=-1,
    )
    img = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(25):
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        x1, y1 = x0 + int(rng.integers(20, 200)), y0 + int(rng.integers(20, 200))
        fill = tuple(int(v) for v in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x1, y1), fill=fill)
    img = img.filter(ImageFilter.GaussianBlur(1.2))
    noisy = np.asarray(img, np.float32) + rng.normal(0, 6, (height, width, 3))
    buf = io.BytesIO()
    Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def measure_engine(
    onnx_path: Path,
    manifest: Any,
    jpeg: bytes,
    threads: int,
    allow_spinning: bool = False,
    batch_sizes: Sequence[int] = (1, 2, 4, 8, 16),
    seconds_per_size: float = 2.0,
) -> EngineResult:
    """Bare onnxruntime on the same file and thread count as the server."""
    from care_serve.backends.onnx_backend import make_session
    from care_serve.imaging.decode import decode_image
    from care_serve.imaging.preprocess import preprocess_image

    decode_times = []
    for _ in range(30):
        t0 = time.perf_counter()
        image = decode_image(jpeg, max_bytes=1 << 30, max_pixels=1 << 30)
        array, _ = preprocess_image(image.image, manifest)
        decode_times.append(time.perf_counter() - t0)
    session = make_session(onnx_path, threads, allow_spinning)
    name = session.get_inputs()[0].name
    per_batch: dict[int, float] = {}
    cpu_ms: dict[int, float] = {}
    batch1: list[float] = []
    for size in batch_sizes:
        batch = np.ascontiguousarray(np.repeat(array[None], size, axis=0))
        for _ in range(2):
            session.run(None, {name: batch})
        times: list[float] = []
        end = time.perf_counter() + seconds_per_size
        cpu0 = time.process_time()
        while time.perf_counter() < end or len(times) < 3:
            t0 = time.perf_counter()
            session.run(None, {name: batch})
            times.append(time.perf_counter() - t0)
        cpu_ms[size] = 1000 * (time.process_time() - cpu0) / (size * len(times))
        per_batch[size] = size / statistics.median(times)
        if size == 1:
            batch1 = times
    return EngineResult(
        per_batch=per_batch,
        batch1_ms=1000 * statistics.median(batch1) if batch1 else float("nan"),
        decode_ms=1000 * statistics.median(decode_times),
        cpu_ms_per_image=cpu_ms,
    )


async def closed_loop(
    call: Callable[[], Awaitable[bool]], result: LevelResult, duration: float
) -> None:
    """``result.concurrency`` clients calling ``call`` back to back for ``duration`` s."""
    loop = asyncio.get_running_loop()
    end = loop.time() + duration

    async def client() -> None:
        while loop.time() < end:
            t0 = time.perf_counter()
            ok = await call()
            if ok:
                result.latencies_ms.append(1000 * (time.perf_counter() - t0))
            else:
                result.errors += 1

    started = loop.time()
    await asyncio.gather(*(client() for _ in range(result.concurrency)))
    result.seconds = loop.time() - started


class RawHttpClient:
    """A minimal keep-alive HTTP/1.1 client on asyncio streams.

    The benchmark measures the server, so the client must cost as little CPU as
    possible on the same cores: one write per request; Content-Length and chunked
    response bodies (``benchmarks/peers`` also loads other servers with it).
    """

    def __init__(self, url: str, security: ClientSecurity | None = None) -> None:
        from urllib.parse import urlparse

        parsed = urlparse(url)
        self.host, self.port = parsed.hostname or "127.0.0.1", parsed.port or 80
        self._ssl = security.ssl_context() if security else None
        key = security.api_key if security else None
        self._extra = f"Authorization: Bearer {key}\r\n" if key else ""
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes, content_type: str) -> int:
        return await self.request("POST", path, body, content_type)

    async def request(
        self, method: str, path: str, body: bytes = b"", content_type: str | None = None
    ) -> int:
        """Send one request on the kept-alive connection; its status (the body is read)."""
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(
                self.host, self.port, ssl=self._ssl
            )
        assert self._reader is not None
        kind = f"Content-Type: {content_type}\r\n" if content_type else ""
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n{self._extra}"
            f"{kind}Content-Length: {len(body)}\r\n\r\n"
        )
        self._writer.write(head.encode() + body)
        status_line = await self._reader.readline()
        status = int(status_line.split()[1])
        length, chunked = 0, False
        while True:
            line = await self._reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "transfer-encoding" and "chunked" in value.lower():
                chunked = True
        if chunked:
            await self._skip_chunks()
        else:
            await self._reader.readexactly(length)
        return status

    async def _skip_chunks(self) -> None:
        assert self._reader is not None
        while True:
            size = int((await self._reader.readline()).split(b";")[0], 16)
            await self._reader.readexactly(size + 2)  # the chunk and its CRLF
            if size == 0:
                return

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(Exception):
                await self._writer.wait_closed()


async def run_level(
    protocol: str,
    concurrency: int,
    duration: float,
    jpeg: bytes,
    model: str,
    url: str,
    grpc_target: str,
    server_pid: int | None = None,
    security: ClientSecurity | None = None,
) -> LevelResult:
    """One closed-loop level over ``protocol`` (rest, grpc, v2-rest or v2-grpc).

    With ``server_pid`` the server's CPU time over the level is recorded too;
    ``security`` (rest and grpc only) adds TLS and an API key.
    """
    result = LevelResult(protocol, concurrency)

    async def measured(call: Callable[[], Awaitable[bool]]) -> None:
        server0 = process_cpu_seconds(server_pid) if server_pid else None
        client0 = time.process_time()
        await closed_loop(call, result, duration)
        result.client_cpu_s = time.process_time() - client0
        server1 = process_cpu_seconds(server_pid) if server_pid else None
        if server0 is not None and server1 is not None:
            result.server_cpu_s = server1 - server0

    if protocol in V2_PROTOCOLS:
        if security is not None:
            raise ValueError("TLS and API keys are measured over rest and grpc only")
        call, close = _v2_call(protocol, concurrency, jpeg, model, url, grpc_target)
        try:
            await call()  # connection warm-up
            await measured(call)
        finally:
            await close()
        return result
    if protocol == "rest":
        clients = [RawHttpClient(url, security) for _ in range(concurrency)]
        path = f"/classify?model={model}&top_k=5"
        pool: asyncio.Queue[RawHttpClient] = asyncio.Queue()
        for client in clients:
            pool.put_nowait(client)

        async def rest_call() -> bool:
            client = await pool.get()
            try:
                return await client.post(path, jpeg, "image/jpeg") == 200
            finally:
                pool.put_nowait(client)

        await rest_call()  # connection warm-up
        await measured(rest_call)
        for client in clients:
            await client.close()
        return result
    import grpc

    from care_serve.grpc_gen.care_serve.v1 import inference_pb2 as pb
    from care_serve.grpc_gen.care_serve.v1 import inference_pb2_grpc as pb_grpc

    if security is not None and security.ca_file is not None:
        credentials = grpc.ssl_channel_credentials(security.ca_file.read_bytes())
        channel = grpc.aio.secure_channel(grpc_target, credentials)
    else:
        channel = grpc.aio.insecure_channel(grpc_target)
    metadata = security.grpc_metadata() if security else ()
    async with channel:
        stub = pb_grpc.InferenceServiceStub(channel)
        request = pb.ClassifyRequest(model=model, image=jpeg, top_k=5)

        async def grpc_call() -> bool:
            try:
                await stub.Classify(request, timeout=60, metadata=metadata)
                return True
            except grpc.aio.AioRpcError:
                return False

        await grpc_call()
        await measured(grpc_call)
    return result


def v2_available() -> bool:
    """Whether the stock Triton clients (the ``dev`` extra) are installed."""
    try:
        import tritonclient.grpc.aio
        import tritonclient.http.aio  # noqa: F401
    except ImportError:
        return False
    return True


def _v2_call(
    protocol: str, concurrency: int, jpeg: bytes, model: str, url: str, grpc_target: str
) -> tuple[Callable[[], Awaitable[bool]], Callable[[], Awaitable[None]]]:
    """A v2 request through tritonclient (and how to close its client)."""
    import tritonclient.grpc.aio as grpc_client
    import tritonclient.http.aio as http_client
    from tritonclient.utils import InferenceServerException

    mod: Any = http_client if protocol == "v2-rest" else grpc_client
    timeout: dict[str, float] = {}
    if protocol == "v2-rest":
        client = http_client.InferenceServerClient(
            url.split("://", 1)[-1], conn_limit=concurrency, conn_timeout=60.0
        )
    else:
        client = grpc_client.InferenceServerClient(grpc_target)
        timeout["client_timeout"] = 60.0
    image = mod.InferInput("image", [1], "BYTES")
    image.set_data_from_numpy(np.array([jpeg], dtype=object))
    outputs = [mod.InferRequestedOutput("probabilities", class_count=5)]

    async def call() -> bool:
        try:
            await client.infer(model, [image], outputs=outputs, **timeout)
            return True
        except InferenceServerException:
            return False

    async def close() -> None:
        await client.close()

    return call, close


def list_models(url: str) -> list[dict[str, Any]]:
    """The ``GET /models`` listing of a running server."""
    import httpx

    response = httpx.get(f"{url}/models", timeout=10)
    response.raise_for_status()
    return list(response.json()["models"])


def check_loopback(url: str | None, grpc_target: str | None) -> None:
    """Refuse to load anything but this machine."""
    from urllib.parse import urlparse

    hosts = []
    if url:
        hosts.append(urlparse(url).hostname or "")
    if grpc_target:
        hosts.append(grpc_target.rsplit(":", 1)[0].strip("[]"))
    for host in hosts:
        if host not in LOOPBACK:
            raise ValueError(f"bench-load only targets loopback addresses, got {host!r}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def build_bench_store(root: Path, arch: str = "care_s0", size: int = 224) -> Path:
    """A store holding ``arch`` with random weights as fused ONNX (needs torch)."""
    from care_serve.models import create_model
    from care_serve.offline.importer import export_to_onnx, imagenet_labels
    from care_serve.store import InputSpec, Manifest, ModelCard, write_package

    model = create_model(arch)
    onnx_path = root / "model.onnx"
    notes = export_to_onnx(model, onnx_path, (size, size))
    manifest = Manifest(
        name=f"{arch}-bench",
        version=1,
        task="classification",
        architecture=arch,
        weights="model.onnx",
        num_classes=1000,
        input=InputSpec(height=size, width=size),
        model_card=ModelCard(description=f"{arch}, random weights, for bench-load", notes=notes),
    )
    write_package(root / "store", manifest, onnx_path, imagenet_labels())
    return root / "store"


class ServerProcess(processes.ServerProcess):
    """``care-serve serve`` in a subprocess on free loopback ports (its own process group)."""

    def __init__(
        self,
        store: Path,
        model: str,
        extra_env: dict[str, str] | None = None,
        extra_args: Sequence[str] = (),
        ca_file: Path | None = None,
    ) -> None:
        self.http_port, self.grpc_port = free_port(), free_port()
        self.ca_file = ca_file  # the server speaks TLS; clients trust this CA
        argv = [
            sys.executable, "-m", "care_serve", "serve", "--model-store", str(store),
            "--models", model, "--host", "127.0.0.1", "--http-port", str(self.http_port),
            "--grpc-port", str(self.grpc_port), "--log-level", "warning", *extra_args,
        ]  # fmt: skip
        handle, log = tempfile.mkstemp(prefix="care-serve-", suffix=".log")
        os.close(handle)
        super().__init__(processes.Launch(argv, Path.cwd(), dict(extra_env or {})), Path(log))

    @property
    def url(self) -> str:
        return f"{'https' if self.ca_file else 'http'}://127.0.0.1:{self.http_port}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def wait_ready(self, timeout: float = 120) -> None:
        import httpx

        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if not self.alive():
                raise RuntimeError(f"the server exited during start-up:\n{self.output()}")
            try:
                verify = ClientSecurity(self.ca_file).ssl_context() or True
                ready = httpx.get(f"{self.url}/health/ready", timeout=1, verify=verify)
                if ready.status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"the server was not ready after {timeout} s:\n{self.output()}")

    def output(self) -> str:
        return self.tail(4000)

    def stop(self, grace_s: float = 30.0) -> None:
        super().stop(grace_s)
        self.log_path.unlink(missing_ok=True)
