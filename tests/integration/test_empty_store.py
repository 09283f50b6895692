"""A store that does not exist or holds no model refuses the start, unless allow_empty_store.

The refusal comes before any port is bound (so before minutes of model loading could be
wasted); with ``allow_empty_store`` the server starts and stays not ready, saying why,
until a model serves.
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry
from tritonclient.grpc import service_pb2 as tpb
from tritonclient.grpc import service_pb2_grpc as tpb_grpc

from care_serve import server as server_module
from care_serve.cli import main
from care_serve.errors import ConfigurationError
from care_serve.server import ServingStack
from care_serve.store import write_package
from tests.helpers.packages import LABELS, make_manifest
from tests.helpers.stacks import ADMIN, ADMIN_TOKEN, test_settings


def _refusal(store: Path, monkeypatch: pytest.MonkeyPatch, **overrides: Any) -> str:
    """Start a stack that must be refused; no port may be bound before the refusal."""

    def no_binding(*args: object) -> socket.socket:
        raise AssertionError("a port was bound before the store was checked")

    monkeypatch.setattr(server_module, "_bind", no_binding)
    stack = ServingStack(test_settings(store, **overrides), CollectorRegistry())
    with pytest.raises(ConfigurationError) as info:
        asyncio.run(stack.start())
    message = info.value.message
    assert "\n" not in message
    return message


@pytest.mark.parametrize("layout", ["missing", "empty directory", "model without a version"])
def test_a_store_without_a_model_refuses_the_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, layout: str
) -> None:
    store = tmp_path / "store"
    if layout != "missing":
        store.mkdir()
    if layout == "model without a version":
        (store / "tiny").mkdir()
    message = _refusal(store, monkeypatch)
    assert str(store) in message
    assert ("does not exist" if layout == "missing" else "holds no model") in message
    for remedy in ("--model-store", "care-serve import", "care-serve pull", "--allow-empty-store"):
        assert remedy in message, message


def test_models_absent_from_the_store_refuse_the_start(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    message = _refusal(store, monkeypatch, models=["nosuch"])
    assert "'nosuch'" in message and "--models" in message and "tiny" in message
    message = _refusal(store, monkeypatch, models=["tiny:7"])
    assert "version 7 of 'tiny'" in message and "versions: 1" in message


def test_serve_says_one_line_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "mistyped"
    argv = ["serve", "--model-store", str(missing), "--http-port", "0", "--grpc-port", "0"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("care-serve serve: error: the model store ") and str(missing) in err
    assert len(err.strip().splitlines()) == 1, err


def _grpc_health(target: str) -> int:
    with grpc.insecure_channel(target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        answers = {
            health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status
            for service in ("", "inference.GRPCInferenceService")
        }
    assert len(answers) == 1
    return answers.pop()


def _v2_grpc_ready(target: str) -> bool:
    with grpc.insecure_channel(target) as channel:
        stub = tpb_grpc.GRPCInferenceServiceStub(channel)
        return bool(stub.ServerReady(tpb.ServerReadyRequest(), timeout=10).ready)


def test_allow_empty_store_starts_not_ready_until_a_model_serves(
    tmp_path: Path, start_stack: Any, tiny_models: dict[int, Any]
) -> None:
    store = tmp_path / "store"
    stack = start_stack(store, allow_empty_store=True, admin_token=ADMIN_TOKEN)
    url = stack.http_url
    ready = httpx.get(f"{url}/health/ready")
    assert ready.status_code == 503, ready.text
    body = ready.json()
    assert body["status"] == "not ready" and body["models"] == []
    assert "holds no model" in body["reason"] or "does not exist" in body["reason"]
    v2 = httpx.get(f"{url}/v2/health/ready")
    assert v2.status_code == 503 and v2.json()["ready"] is False
    assert v2.json()["reason"] == body["reason"]
    assert _grpc_health(stack.grpc_target) == health_pb2.HealthCheckResponse.NOT_SERVING
    assert not _v2_grpc_ready(stack.grpc_target)
    assert httpx.get(f"{url}/health/live").status_code == 200

    write_package(store, make_manifest(), tiny_models[1][1], LABELS)
    loaded = httpx.post(f"{url}/models/tiny/load", headers=ADMIN, timeout=60)
    assert loaded.status_code == 200, loaded.text
    ready = httpx.get(f"{url}/health/ready")
    assert ready.status_code == 200 and "reason" not in ready.json()
    assert httpx.get(f"{url}/v2/health/ready").json() == {"ready": True}
    assert _grpc_health(stack.grpc_target) == health_pb2.HealthCheckResponse.SERVING
    assert _v2_grpc_ready(stack.grpc_target)


def test_no_models_at_start_from_a_store_with_models_is_ready(
    store: Path, start_stack: Any
) -> None:
    """``models=[]`` loads nothing at start from a store that holds models: ready, as before."""
    stack = start_stack(store, models=[])
    ready = httpx.get(f"{stack.http_url}/health/ready")
    assert ready.status_code == 200 and ready.json()["models"] == []
    assert _grpc_health(stack.grpc_target) == health_pb2.HealthCheckResponse.SERVING


def test_grpc_health_follows_strict_readiness(
    tmp_path: Path, start_stack: Any, tiny_models: dict[int, Any]
) -> None:
    """A model that should serve and does not keeps every readiness signal not ready."""
    store = tmp_path / "store"
    write_package(store, make_manifest(), tiny_models[1][1], LABELS)
    broken = write_package(store, make_manifest(name="broken"), tiny_models[1][1], LABELS)
    (broken / "model.onnx").write_bytes(b"not an onnx file")
    stack = start_stack(store, admin_token=ADMIN_TOKEN)
    url = stack.http_url
    ready = httpx.get(f"{url}/health/ready")
    assert ready.status_code == 503 and ready.json()["not_serving"] == ["broken"]
    assert "broken" in ready.json()["reason"]
    assert "broken" in httpx.get(f"{url}/v2/health/ready").json()["reason"]
    assert _grpc_health(stack.grpc_target) == health_pb2.HealthCheckResponse.NOT_SERVING
    assert httpx.post(f"{url}/models/tiny/unload", headers=ADMIN).status_code == 200
    assert httpx.get(f"{url}/health/ready").status_code == 503
    write_package(store, make_manifest(name="broken"), tiny_models[1][1], LABELS, overwrite=True)
    assert httpx.post(f"{url}/models/broken/load", headers=ADMIN, timeout=60).status_code == 200
    assert httpx.get(f"{url}/health/ready").status_code == 200
    assert _grpc_health(stack.grpc_target) == health_pb2.HealthCheckResponse.SERVING
