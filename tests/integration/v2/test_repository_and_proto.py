"""The repository extension (admin token), and the gRPC service definition itself.

The proto is checked against the stock client's own copy of the protocol: every
message, field name, number and type care-serve defines matches tritonclient's, and
the service's methods have the same request and response types. Health and
reflection cover ``inference.GRPCInferenceService``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as tgrpc
import tritonclient.http as thttp
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client import CollectorRegistry
from tritonclient.grpc import service_pb2 as triton_pb
from tritonclient.grpc import service_pb2_grpc as triton_grpc
from tritonclient.utils import InferenceServerException

from care_serve.grpc_gen.inference import grpc_service_pb2 as ours
from care_serve.server import BackgroundStack
from tests.helpers.stacks import test_settings

TOKEN = "s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
GRPC_AUTH = {"authorization": f"Bearer {TOKEN}"}  # gRPC metadata keys are lower case


@pytest.fixture(scope="module")
def admin_stack() -> Iterator[BackgroundStack]:
    """Only the classifier loaded at start; load/unload need the admin token; 100 kB requests."""
    settings = test_settings(
        models=["shapes-classifier"], admin_token=TOKEN, max_request_bytes=100_000
    )
    with BackgroundStack(settings, CollectorRegistry()) as stack:
        yield stack


def test_rest_repository_index_load_unload_need_the_admin_token(
    admin_stack: BackgroundStack,
) -> None:
    url = admin_stack.http_url
    assert httpx.post(f"{url}/v2/repository/index").status_code == 401
    index = httpx.post(f"{url}/v2/repository/index", headers=AUTH).json()
    states = {m["name"]: m["state"] for m in index}
    assert states == {
        "shapes-classifier": "READY",
        "shapes-detector": "UNAVAILABLE",
        "shapes-segmenter": "UNAVAILABLE",
        "shapes-detect-classify": "UNAVAILABLE",  # a pipeline: its detector is not serving
    }
    (pipeline,) = [m for m in index if m["name"] == "shapes-detect-classify"]
    assert "shapes-detector" in pipeline["reason"]
    ready_only = httpx.post(f"{url}/v2/repository/index", json={"ready": True}, headers=AUTH).json()
    assert [m["name"] for m in ready_only] == ["shapes-classifier"]
    r = httpx.post(f"{url}/v2/repository/models/shapes-detector/load")
    assert r.status_code == 401 and "admin token" in r.json()["error"]
    client = thttp.InferenceServerClient(url.removeprefix("http://"), network_timeout=120)
    assert not client.is_model_ready("shapes-detector")
    client.load_model("shapes-detector", headers=AUTH)
    assert client.is_model_ready("shapes-detector")
    with pytest.raises(InferenceServerException, match="admin token"):
        client.unload_model("shapes-detector")
    client.unload_model("shapes-detector", headers=AUTH)
    assert not client.is_model_ready("shapes-detector")
    r = httpx.post(f"{url}/v2/repository/models/nope/unload", headers=AUTH)
    assert r.status_code == 404 and "not loaded" in r.json()["error"]
    r = httpx.post(f"{url}/v2/repository/index", content=b"{oops", headers=AUTH)
    assert r.status_code == 400 and "cannot be parsed" in r.json()["error"]
    client.close()


def test_grpc_repository_index_load_unload_need_the_admin_token(
    admin_stack: BackgroundStack,
) -> None:
    client = tgrpc.InferenceServerClient(admin_stack.grpc_target)
    with pytest.raises(InferenceServerException, match="UNAUTHENTICATED"):
        client.get_model_repository_index()
    index = client.get_model_repository_index(headers=GRPC_AUTH)
    names = {m.name: m.state for m in index.models}
    assert names["shapes-classifier"] == "READY"
    with pytest.raises(InferenceServerException) as info:
        client.load_model("shapes-segmenter")
    assert "UNAUTHENTICATED" in str(info.value.status())
    client.load_model("shapes-segmenter", headers=GRPC_AUTH)
    assert client.is_model_ready("shapes-segmenter")
    client.unload_model("shapes-segmenter", headers=GRPC_AUTH)
    assert not client.is_model_ready("shapes-segmenter")
    client.close()


def _fields(message: Any, prefix: str = "") -> dict[str, tuple[int, int, bool, str | None]]:
    out = {}
    for f in message.fields:
        kind = f.message_type.full_name if f.message_type else None
        out[f"{prefix}{message.name}.{f.name}"] = (f.number, f.type, f.is_repeated, kind)
    for nested in message.nested_types:
        out.update(_fields(nested, f"{prefix}{message.name}."))
    return out


def test_the_proto_matches_the_stock_clients_copy_of_the_protocol() -> None:
    assert ours.DESCRIPTOR.package == "inference"
    for name, message in ours.DESCRIPTOR.message_types_by_name.items():
        theirs = triton_pb.DESCRIPTOR.message_types_by_name[name]
        mine = _fields(message)
        assert mine == {k: v for k, v in _fields(theirs).items() if k in mine}, name
        assert set(mine) <= set(_fields(theirs))
    service = ours.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    used = {t.name for m in service.methods for t in (m.input_type, m.output_type)}
    shared = {"InferParameter", "InferTensorContents", "ModelRepositoryParameter"}
    assert set(ours.DESCRIPTOR.message_types_by_name) == used | shared
    theirs_service = triton_pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert service.full_name == "inference.GRPCInferenceService"
    for method in service.methods:
        other = theirs_service.methods_by_name[method.name]
        assert method.input_type.full_name == other.input_type.full_name
        assert method.output_type.full_name == other.output_type.full_name
    assert {m.name for m in service.methods} >= {
        "ServerLive",
        "ServerReady",
        "ModelReady",
        "ServerMetadata",
        "ModelMetadata",
        "ModelInfer",
        "RepositoryIndex",
        "RepositoryModelLoad",
        "RepositoryModelUnload",
    }


def test_health_and_reflection_cover_the_v2_service(admin_stack: BackgroundStack) -> None:
    channel = grpc.insecure_channel(admin_stack.grpc_target)
    health = health_pb2_grpc.HealthStub(channel)
    answer = health.Check(health_pb2.HealthCheckRequest(service="inference.GRPCInferenceService"))
    assert answer.status == health_pb2.HealthCheckResponse.SERVING
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    requests = [
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(
            file_containing_symbol="inference.GRPCInferenceService"
        ),
        reflection_pb2.ServerReflectionRequest(
            file_containing_symbol="care_serve.v1.InferenceService"
        ),
    ]
    listed, v2_file, own_file = list(stub.ServerReflectionInfo(iter(requests)))
    services = {s.name for s in listed.list_services_response.service}
    assert {"inference.GRPCInferenceService", "care_serve.v1.InferenceService"} <= services
    assert v2_file.file_descriptor_response.file_descriptor_proto
    assert own_file.file_descriptor_response.file_descriptor_proto
    channel.close()


def test_requests_over_max_request_bytes_are_413s(admin_stack: BackgroundStack) -> None:
    frames = np.zeros((1, 200, 200, 3), np.uint8)  # 120 kB
    client = thttp.InferenceServerClient(admin_stack.http_url.removeprefix("http://"))
    frame = thttp.InferInput("frame", list(frames.shape), "UINT8")
    frame.set_data_from_numpy(frames)
    with pytest.raises(InferenceServerException, match="max_request_bytes"):
        client.infer("shapes-classifier", [frame])
    r = httpx.post(
        f"{admin_stack.http_url}/v2/models/shapes-classifier/infer", content=b"{" * 150_000
    )
    assert r.status_code == 413 and "max_request_bytes" in r.json()["error"]
    client.close()
    over_grpc = tgrpc.InferenceServerClient(admin_stack.grpc_target)
    frame = tgrpc.InferInput("frame", list(frames.shape), "UINT8")
    frame.set_data_from_numpy(frames)
    with pytest.raises(InferenceServerException, match="max_request_bytes") as info:
        over_grpc.infer("shapes-classifier", [frame])
    assert "INVALID_ARGUMENT" in str(info.value.status())
    over_grpc.close()


def test_repository_parameters_are_strict(admin_stack: BackgroundStack) -> None:
    url = admin_stack.http_url
    r = httpx.post(
        f"{url}/v2/repository/models/shapes-classifier/load",
        json={"parameters": {"versoin": 1}},
        headers=AUTH,
    )
    assert r.status_code == 400, r.text
    message = r.json()["error"]
    assert "'versoin'" in message and "accepted: version" in message
    r = httpx.post(
        f"{url}/v2/repository/models/shapes-classifier/unload",
        json={"parameters": {"force": True}},
        headers=AUTH,
    )
    assert r.status_code == 400 and "accepted: unload_dependents" in r.json()["error"]
    # Without the admin token the answer is 401 whatever the parameters.
    r = httpx.post(
        f"{url}/v2/repository/models/shapes-classifier/load", json={"parameters": {"x": 1}}
    )
    assert r.status_code == 401
    stub = triton_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(admin_stack.grpc_target))
    request = triton_pb.RepositoryModelLoadRequest(model_name="shapes-classifier")
    request.parameters["config"].string_param = "{}"
    with pytest.raises(grpc.RpcError) as info:
        stub.RepositoryModelLoad(request, metadata=list(GRPC_AUTH.items()), timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "'config'" in str(info.value.details())
    request = triton_pb.RepositoryModelLoadRequest(model_name="shapes-classifier")
    request.parameters["version"].int64_param = 1
    stub.RepositoryModelLoad(request, metadata=list(GRPC_AUTH.items()), timeout=60)
