"""The gRPC server: care-serve's own service, the v2 protocol's, health and reflection.

Both inference services share the port. Health reports each by name (and ""), and
reflection describes all of them: the v2 messages live in their own descriptor pool
(see ``scripts/gen_protos.py``), so reflection looks there first, then in the default.
"""

from __future__ import annotations

import socket

import grpc
from google.protobuf import descriptor_pool
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from care_serve.errors import PortInUse
from care_serve.grpc_gen.care_serve.v1 import inference_pb2 as pb
from care_serve.grpc_gen.care_serve.v1 import inference_pb2_grpc as pb_grpc
from care_serve.grpc_gen.inference import POOL as V2_POOL
from care_serve.grpc_gen.inference import grpc_service_pb2_grpc as v2_grpc
from care_serve.security.tls import TlsMaterial
from care_serve.serving.data_plane import DataPlane
from care_serve.streams.manager import StreamManager
from care_serve.transports.grpc.access import AccessLogInterceptor
from care_serve.transports.grpc.auth import AuthInterceptor
from care_serve.transports.grpc.servicer import InferenceServicer
from care_serve.transports.v2.grpc_servicer import SERVICE_NAME as V2_SERVICE_NAME
from care_serve.transports.v2.grpc_servicer import V2Servicer

__all__ = ["SERVICE_NAME", "V2_SERVICE_NAME", "GrpcServer", "port_message", "port_unavailable"]

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["InferenceService"].full_name
MAX_MESSAGE_OVERHEAD = 1024 * 1024
_PORT_OPTIONS = {"REST": "http_port", "gRPC": "grpc_port"}


def port_message(server: str, host: str, port: int, reason: str) -> str:
    """The start-up error for a port that cannot be bound, naming the option that sets it."""
    field = _PORT_OPTIONS[server]
    option, env = "--" + field.replace("_", "-"), f"CARE_SERVE_{field.upper()}"
    return (
        f"cannot listen for {server} on {host}:{port} ({reason}); stop what uses the port or "
        f"choose another with {option} or {env} (0 = any free port)"
    )


def port_unavailable(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be listened on (the system's words), or None when it can.

    Binds as gRPC does (``SO_REUSEADDR``, no ``SO_REUSEPORT``) to every address ``host``
    resolves to, and releases the sockets at once; gRPC listens when any address binds.
    Port 0 (any free port) is always available.
    """
    if port == 0:
        return None
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as exc:
        return exc.strerror or str(exc)
    reason = "no address to listen on"
    for family, kind, proto, _, sockaddr in addresses:
        try:
            with socket.socket(family, kind, proto) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind(sockaddr)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            continue
        return None
    return reason


class _ChainedPool:
    """The descriptor look-ups reflection makes, tried in several pools in order."""

    def __init__(self, *pools: descriptor_pool.DescriptorPool) -> None:
        self._pools = pools

    def _first(self, method: str, *args: object) -> object:
        for pool in self._pools[:-1]:
            try:
                return getattr(pool, method)(*args)
            except KeyError:
                continue
        return getattr(self._pools[-1], method)(*args)

    def FindFileByName(self, name: str) -> object:
        return self._first("FindFileByName", name)

    def FindFileContainingSymbol(self, symbol: str) -> object:
        return self._first("FindFileContainingSymbol", symbol)

    def FindMessageTypeByName(self, name: str) -> object:
        return self._first("FindMessageTypeByName", name)

    def FindExtensionByNumber(self, message: object, number: int) -> object:
        return self._first("FindExtensionByNumber", message, number)

    def FindAllExtensions(self, message: object) -> object:
        return self._first("FindAllExtensions", message)


class GrpcServer:
    """A ``grpc.aio`` server on the data plane's event loop."""

    def __init__(
        self,
        data_plane: DataPlane,
        host: str,
        port: int,
        tls: TlsMaterial | None = None,
        streams: StreamManager | None = None,
    ) -> None:
        settings = data_plane.settings
        # Room above the image limit, so an image too large gets the data plane's
        # INVALID_ARGUMENT naming max_image_bytes rather than gRPC's own RESOURCE_EXHAUSTED
        # (which means "retry later"); only a message over twice the limit meets the latter.
        limit = max(2 * settings.max_image_bytes, settings.max_request_bytes) + MAX_MESSAGE_OVERHEAD
        self.server = grpc.aio.server(
            interceptors=[AccessLogInterceptor(), AuthInterceptor(data_plane.auth)],
            options=[
                ("grpc.max_receive_message_length", limit),
                ("grpc.max_send_message_length", 64 * 1024 * 1024),
                # gRPC sets SO_REUSEPORT by default: two servers would split the calls.
                ("grpc.so_reuseport", 0),
            ],
        )
        own = InferenceServicer(data_plane, streams or StreamManager(data_plane))
        pb_grpc.add_InferenceServiceServicer_to_server(own, self.server)
        v2_grpc.add_GRPCInferenceServiceServicer_to_server(V2Servicer(data_plane), self.server)
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, V2_SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME),
            self.server,
            pool=_ChainedPool(V2_POOL, descriptor_pool.Default()),
        )
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        # Checked with a plain socket first: gRPC's own failure would print a C-core log
        # line (``E... add_port.cc ... bind ...``) before the message below.
        busy = port_unavailable(host, port)
        if busy is not None:
            raise PortInUse(port_message("gRPC", host, port, busy))
        try:
            if tls is None:
                self.port = self.server.add_insecure_port(address)
            else:
                self.port = self.server.add_secure_port(address, tls.grpc_credentials())
        except RuntimeError:
            self.port = 0
        if self.port == 0:
            raise PortInUse(port_message("gRPC", host, port, "address in use or not permitted"))

    async def start(self) -> None:
        await self.server.start()

    async def set_serving(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        await self.health.set("", status)
        await self.health.set(SERVICE_NAME, status)
        await self.health.set(V2_SERVICE_NAME, status)

    async def stop(self, grace: float) -> None:
        """Refuse new calls, let in-flight ones finish for up to ``grace`` seconds."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
