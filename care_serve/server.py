"""Wiring: store -> manager -> data plane -> REST and gRPC servers, one event loop.

Both servers share one ``DataPlane`` (and so one set of batchers and metrics).
Shutdown (SIGINT/SIGTERM or ``stop()``), the drain: readiness turns false and
gRPC health NOT_SERVING, both servers stop accepting, new requests on open
connections get 503 / UNAVAILABLE, in-flight requests finish for up to
``graceful_shutdown_s``, those still running then are answered 503 / UNAVAILABLE,
and the models are unloaded: the process is gone within the grace period plus
about a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import signal
import socket
import threading
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import uvicorn
from prometheus_client import CollectorRegistry

from care_serve.errors import ConfigurationError, PortInUse
from care_serve.imaging.decode import configure_pillow
from care_serve.observability.metrics import ServingMetrics
from care_serve.security.tls import TlsError, TlsMaterial
from care_serve.serving.data_plane import DataPlane
from care_serve.serving.manager import ModelManager
from care_serve.serving.memory import MemoryJanitor
from care_serve.serving.store_watcher import StoreWatcher
from care_serve.serving.workers import WorkerPools, map_large_blocks
from care_serve.settings import Settings
from care_serve.store.repository import ModelRepository
from care_serve.streams.manager import StreamManager
from care_serve.transports.grpc.server import GrpcServer, port_message
from care_serve.transports.rest.app import create_app

__all__ = ["BackgroundStack", "ServingStack"]

log = logging.getLogger("care_serve")
T = TypeVar("T")
# How long the servers get, after the grace period, to send the 503s of aborted requests.
_ANSWER_MARGIN_S = 0.5


class _UvicornServer(uvicorn.Server):
    """uvicorn without its own signal handling: the stack owns shutdown."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _bind(host: str, port: int) -> socket.socket:
    """A listening REST socket on ``host:port``; ``PortInUse`` naming the option if taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY on accepted connections only when
    # the socket says it is TCP; without it, Nagle + delayed ACK add ~40 ms to every response.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)  # claims the port now, not after the models have loaded
    except OSError as exc:
        sock.close()
        raise PortInUse(port_message("REST", host, port, exc.strerror or str(exc))) from None
    sock.set_inheritable(True)
    return sock


def report_level(line: str) -> tuple[int, str, str]:
    """``(level, "%s", message)`` to log a start-up report line with.

    A line starting with ``WARNING`` says its level itself: the log line already does, so
    the word goes (``WARNING care_serve: the default ...``, not ``WARNING ...: WARNING``).
    """
    if line.startswith("WARNING "):
        return logging.WARNING, "%s", line.removeprefix("WARNING ")
    warn = line.startswith(("FAILED", "no models"))
    return (logging.WARNING if warn else logging.INFO), "%s", line


class ServingStack:
    """The whole service; ``await start()`` then ``await stop()`` (or ``serve_forever``)."""

    def __init__(self, settings: Settings, registry: CollectorRegistry | None = None) -> None:
        self.settings = settings
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = ServingMetrics(self.registry)
        self.repository = ModelRepository(settings.model_store)
        self.manager = ModelManager(self.repository, settings, self.metrics)
        self.pools = WorkerPools(settings)
        self.data_plane = DataPlane(settings, self.manager, self.metrics, self.pools)
        self.streams = StreamManager(self.data_plane)
        self.app = create_app(settings, self.data_plane, self.streams)
        self.http_port = 0
        self.grpc_port = 0
        self.startup_report: list[str] = []
        self._http: _UvicornServer | None = None
        self._http_task: asyncio.Task[None] | None = None
        self._grpc: GrpcServer | None = None
        self._health_syncs: set[asyncio.Task[None]] = set()  # kept until done (weak refs)
        self.manager.on_change.append(self._sync_grpc_health)
        self.watcher: StoreWatcher | None = None
        self.janitor = MemoryJanitor(lambda: self.data_plane.inflight)
        self.tls: TlsMaterial | None = None

    async def start(self) -> None:
        """Load the start-up models, then start REST and gRPC."""
        configure_pillow(self.settings.max_image_pixels)
        map_large_blocks()  # large images and bodies go back to the OS when freed
        settings = self.settings
        if settings.tls_cert is not None and settings.tls_key is not None:
            try:
                self.tls = TlsMaterial(settings.tls_cert, settings.tls_key, settings.tls_client_ca)
            except TlsError as exc:
                raise ConfigurationError(str(exc)) from None
        # A store without a model, or a --models entry it lacks, is refused before any port.
        self.manager.check_store()
        self.streams.check()
        # Both ports first: a port in use is refused before minutes of model loading.
        sock = _bind(self.settings.host, self.settings.http_port)
        if self.settings.enable_grpc:
            try:
                self._grpc = GrpcServer(
                    self.data_plane,
                    self.settings.host,
                    self.settings.grpc_port,
                    self.tls,
                    streams=self.streams,
                )
            except PortInUse:
                sock.close()
                raise
        self.startup_report = await self.manager.start()
        for line in self.startup_report:
            log.log(*report_level(line))
        if self.settings.model_control == "poll":
            self.watcher = StoreWatcher(self.manager, self.settings.repository_poll_s)
            self.watcher.start()
        self.http_port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            log_config=None,
            access_log=False,
            lifespan="off",
            # Past the drain: by then the data plane has answered every request itself.
            timeout_graceful_shutdown=math.ceil(
                self.settings.graceful_shutdown_s + _ANSWER_MARGIN_S
            ),
            **(self.tls.uvicorn_options() if self.tls is not None else {}),
        )
        config.load()
        if self.tls is not None:
            self.tls.track(config.ssl)
        self._http = _UvicornServer(config)
        self._http_task = asyncio.create_task(self._http.serve(sockets=[sock]))
        while not self._http.started:
            if self._http_task.done():
                self._http_task.result()
                raise RuntimeError("the HTTP server stopped during start-up")
            await asyncio.sleep(0.01)
        if self._grpc is not None:
            await self._grpc.start()
            await self._grpc.set_serving(self.data_plane.ready())
            self.grpc_port = self._grpc.port
        await self.streams.start()
        self.janitor.start()
        log.info(
            "care-serve ready: REST %s://%s:%d, gRPC %s%s",
            "https" if self.tls else "http",
            self.settings.host,
            self.http_port,
            f"{self.settings.host}:{self.grpc_port}" if self._grpc else "disabled",
            (" (TLS, client certificates required)" if self.tls.mutual else " (TLS)")
            if self.tls
            else "",
        )

    def _sync_grpc_health(self) -> None:
        """gRPC health follows readiness (the manager calls this when what serves changes)."""
        grpc_server = self._grpc
        if grpc_server is None or self.data_plane.draining:
            return

        async def sync() -> None:
            # Read when it runs, so the last of several quick changes wins.
            if not self.data_plane.draining:
                await grpc_server.set_serving(self.data_plane.ready())

        task = asyncio.get_running_loop().create_task(sync())
        self._health_syncs.add(task)
        task.add_done_callback(self._health_syncs.discard)

    def reload_tls(self) -> bool:
        """Re-read the TLS files (SIGHUP); on a bad file, log it and keep the old ones."""
        if self.tls is None:
            log.info("SIGHUP: TLS is off, nothing to reload")
            return False
        try:
            self.tls.reload()
        except TlsError as exc:
            log.error("TLS reload refused, the previous certificate stays in use: %s", exc)
            return False
        return True

    async def stop(self) -> None:
        """Drain: refuse new requests, finish what fits in the grace period, answer the rest."""
        loop = asyncio.get_running_loop()
        grace = self.settings.graceful_shutdown_s
        end = loop.time() + grace
        if self.watcher is not None:
            await self.watcher.stop()
        await self.streams.stop()  # ends their event and preview feeds, so connections close
        await self.janitor.stop()
        self.data_plane.start_draining()
        waits: list[Coroutine[Any, Any, Any]] = []
        if self._grpc is not None:
            await self._grpc.set_serving(False)
            waits.append(self._grpc.stop(grace + _ANSWER_MARGIN_S))
        if self._http is not None and self._http_task is not None:
            self._http.should_exit = True
            waits.append(asyncio.wait_for(asyncio.shield(self._http_task), grace + 1.0))
        stopping = asyncio.gather(*waits, return_exceptions=True)
        while self.data_plane.inflight > 0 and loop.time() < end:
            await asyncio.sleep(0.01)
        if self.data_plane.inflight:
            log.warning(
                "grace period of %.1f s over: answering %d %s still running with 503",
                grace,
                self.data_plane.inflight,
                "request" if self.data_plane.inflight == 1 else "requests",
            )
        self.data_plane.abort_inflight()
        for result in await stopping:
            if isinstance(result, BaseException):
                log.warning("error while stopping a server: %r", result)
        await self.manager.close()
        self.pools.shutdown()
        log.info("care-serve stopped")

    async def serve_forever(self) -> None:
        """Start, run until SIGINT/SIGTERM, stop gracefully."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        with contextlib.suppress(NotImplementedError, AttributeError):
            loop.add_signal_handler(signal.SIGHUP, self.reload_tls)
        await self.start()
        await stop.wait()
        log.info("shutting down: finishing in-flight requests")
        await self.stop()


class BackgroundStack:
    """A ``ServingStack`` on its own event loop in a thread (tests, ``benchmarks.load``)."""

    def __init__(self, settings: Settings, registry: CollectorRegistry | None = None) -> None:
        self.loop = asyncio.new_event_loop()
        self.stack = ServingStack(settings, registry)
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> BackgroundStack:
        self._thread.start()
        self.run(self.stack.start())
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = 120) -> T:
        """Run ``coro`` on the stack's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        if self._thread.is_alive():
            with contextlib.suppress(Exception):
                self.run(self.stack.stop())
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
        if not self.loop.is_running():
            self.loop.close()

    @property
    def http_url(self) -> str:
        scheme = "https" if self.stack.settings.tls else "http"
        return f"{scheme}://{self.stack.settings.host}:{self.stack.http_port}"

    @property
    def grpc_target(self) -> str:
        return f"{self.stack.settings.host}:{self.stack.grpc_port}"
