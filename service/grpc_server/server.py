"""The gRPC server: the inference service, the standard health service, reflection."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from service.errors import PortInUse
from service.grpc_gen.care_serve.v1 import inference_pb2 as pb
from service.grpc_gen.care_serve.v1 import inference_pb2_grpc as pb_grpc
from service.grpc_server.access import AccessLogInterceptor
from service.grpc_server.servicer import InferenceServicer
from service.inference import DataPlane

__all__ = ["SERVICE_NAME", "GrpcServer", "port_message"]

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


class GrpcServer:
    """A ``grpc.aio`` server on the data plane's event loop."""

    def __init__(self, data_plane: DataPlane, host: str, port: int) -> None:
        # Room above the image limit, so an image too large gets the data plane's
        # INVALID_ARGUMENT naming max_image_bytes rather than gRPC's own RESOURCE_EXHAUSTED
        # (which means "retry later"); only a message over twice the limit meets the latter.
        limit = 2 * data_plane.settings.max_image_bytes + MAX_MESSAGE_OVERHEAD
        self.server = grpc.aio.server(
            interceptors=[AccessLogInterceptor()],
            options=[
                ("grpc.max_receive_message_length", limit),
                ("grpc.max_send_message_length", 64 * 1024 * 1024),
                # gRPC sets SO_REUSEPORT by default: two servers would split the calls.
                ("grpc.so_reuseport", 0),
            ],
        )
        pb_grpc.add_InferenceServiceServicer_to_server(InferenceServicer(data_plane), self.server)
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), self.server
        )
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        try:
            self.port = self.server.add_insecure_port(address)
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

    async def stop(self, grace: float) -> None:
        """Refuse new calls, let in-flight ones finish for up to ``grace`` seconds."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
