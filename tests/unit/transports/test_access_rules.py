"""What each REST path and gRPC method needs: open, an infer key or an admin credential."""

from __future__ import annotations

import pytest

from care_serve.grpc_gen.care_serve.v1 import inference_pb2 as pb
from care_serve.grpc_gen.inference import grpc_service_pb2 as v2
from care_serve.transports.grpc.auth import access_of_method, client_address
from care_serve.transports.rest.security import access_of


@pytest.mark.parametrize(
    ("method", "path", "access"),
    [
        ("GET", "/health/live", "open"),
        ("GET", "/health/ready", "open"),
        ("GET", "/v2/health/ready", "open"),
        ("GET", "/", "open"),
        ("GET", "/ui/main.js", "open"),
        ("GET", "/docs", "open"),
        ("GET", "/openapi.json", "open"),
        ("POST", "/classify", "infer"),
        ("POST", "/detect", "infer"),
        ("GET", "/models", "infer"),
        ("GET", "/models/load", "infer"),  # a model called "load"
        ("POST", "/models/x/load", "admin"),
        ("POST", "/models/x/unload", "admin"),
        ("POST", "/v2/models/x/infer", "infer"),
        ("GET", "/v2", "infer"),
        ("POST", "/v2/repository/index", "admin"),
        ("POST", "/v2/repository/models/x/load", "admin"),
        ("GET", "/no/such/route", "infer"),
    ],
)
def test_rest_paths(method: str, path: str, access: str) -> None:
    assert access_of(method, path, metrics_open=True) == access


def test_metrics_follow_the_setting() -> None:
    assert access_of("GET", "/metrics", metrics_open=True) == "open"
    assert access_of("GET", "/metrics", metrics_open=False) == "infer"


def _methods(descriptor: object, service: str) -> list[str]:
    full = descriptor.services_by_name[service]  # type: ignore[attr-defined]
    return [f"/{full.full_name}/{m.name}" for m in full.methods]


def test_every_grpc_method_has_the_access_it_should() -> None:
    admin = {"LoadModel", "UnloadModel", "AddStream", "RemoveStream", "RepositoryIndex",
             "RepositoryModelLoad", "RepositoryModelUnload"}  # fmt: skip
    open_ = {"ServerLive", "ServerReady"}
    methods = _methods(pb.DESCRIPTOR, "InferenceService")
    methods += _methods(v2.DESCRIPTOR, "GRPCInferenceService")
    for method in methods:
        name = method.rsplit("/", 1)[1]
        expected = "admin" if name in admin else "open" if name in open_ else "infer"
        assert access_of_method(method) == expected, method
    assert access_of_method("/grpc.health.v1.Health/Check") == "open"
    assert access_of_method("/grpc.reflection.v1alpha.ServerReflection/Info") == "open"


def test_client_addresses_from_grpc_peers() -> None:
    assert client_address("ipv4:10.0.0.5:41234") == "10.0.0.5"
    assert client_address("ipv6:[::1]:5000") == "::1"
    assert client_address("unix:/tmp/s") == "unix:/tmp/s"
