"""Consistency of errors and of the OpenAPI document."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from pydantic import ValidationError

from care_serve.grpc_gen.care_serve.v1 import inference_pb2 as pb
from care_serve.grpc_gen.care_serve.v1 import inference_pb2_grpc as pb_grpc
from care_serve.server import BackgroundStack
from care_serve.settings import Settings
from care_serve.store.manifest import NAME_PATTERN
from tests.helpers.packages import jpeg_bytes

MAX_BYTES = 300_000


@pytest.fixture
def running(store: Path, start_stack: Any) -> BackgroundStack:
    return start_stack(store, admin_token="s3cret", max_image_bytes=MAX_BYTES, max_top_k=7)


def _error(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}, body
    assert {"type", "message"} <= set(body["error"]), body
    return dict(body["error"])


def test_404_and_405_use_the_error_envelope(running: BackgroundStack) -> None:
    missing = httpx.get(f"{running.http_url}/no/such/route")
    assert missing.status_code == 404
    assert _error(missing)["type"] == "NotFound"
    wrong = httpx.get(f"{running.http_url}/classify")
    assert wrong.status_code == 405 and "POST" in wrong.headers["allow"]
    assert _error(wrong)["type"] == "MethodNotAllowed"


def test_401_asks_for_a_bearer_token(running: BackgroundStack) -> None:
    for headers in ({}, {"Authorization": "Bearer"}, {"Authorization": "Bearer wrong"}):
        denied = httpx.post(f"{running.http_url}/models/tiny/load", headers=headers)
        assert denied.status_code == 401
        assert denied.headers["www-authenticate"].startswith("Bearer")
        assert _error(denied)["type"] == "Unauthorized"


@pytest.mark.parametrize("fields", [("file", "file"), ("file", "image"), ("image", "image")])
def test_two_image_fields_are_refused(running: BackgroundStack, fields: tuple[str, str]) -> None:
    data = jpeg_bytes()
    files = [(fields[0], ("a.jpg", data, "image/jpeg")), (fields[1], ("b.jpg", data, "image/jpeg"))]
    response = httpx.post(f"{running.http_url}/classify", files=files)
    assert response.status_code == 400
    assert "exactly one" in _error(response)["message"]


def test_grpc_image_over_the_limit_is_invalid_argument(running: BackgroundStack) -> None:
    options = [("grpc.max_send_message_length", 64 * 1024 * 1024)]
    with grpc.insecure_channel(running.grpc_target, options=options) as channel:
        stub = pb_grpc.InferenceServiceStub(channel)
        for size in (MAX_BYTES + 1, MAX_BYTES * 3 // 2, MAX_BYTES + 1024 * 1024 + 1):
            with pytest.raises(grpc.RpcError) as info:
                stub.Classify(pb.ClassifyRequest(image=b"\0" * size), timeout=30)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (size, info.value)
            assert "max_image_bytes" in (info.value.details() or "")


@pytest.mark.parametrize("token", ["", "   "])
def test_an_empty_admin_token_is_refused(token: str) -> None:
    with pytest.raises(ValidationError, match="admin_token"):
        Settings(admin_token=token)


def _operation(doc: dict[str, Any], path: str, method: str = "post") -> dict[str, Any]:
    return dict(doc["paths"][path][method])


def _params(op: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["name"]: p["schema"] for p in op.get("parameters", [])}


def _schema_of(schema: dict[str, Any]) -> dict[str, Any]:
    """The non-null branch of an ``anyOf [X, null]`` schema."""
    for branch in schema.get("anyOf", [schema]):
        if branch.get("type") != "null":
            return dict(branch)
    raise AssertionError(schema)


def test_openapi_lists_only_the_errors_each_route_can_give(running: BackgroundStack) -> None:
    doc = httpx.get(f"{running.http_url}/openapi.json").json()
    codes = {
        ("/classify", "post"): {"200", "400", "404", "413", "503", "504"},
        ("/detect", "post"): {"200", "400", "404", "413", "503", "504"},
        ("/segment", "post"): {"200", "400", "404", "413", "503", "504"},
        ("/models", "get"): {"200"},
        ("/models/{name}", "get"): {"200", "400", "404"},
        ("/models/{name}/load", "post"): {"200", "400", "401", "403", "404", "409", "422"},
        ("/models/{name}/unload", "post"): {"200", "400", "401", "403", "404", "409"},
        ("/health/live", "get"): {"200"},
        ("/health/ready", "get"): {"200", "503"},
    }
    for (path, method), expected in codes.items():
        assert set(_operation(doc, path, method)["responses"]) == expected, path
    assert "HTTPValidationError" not in doc.get("components", {}).get("schemas", {})


def test_openapi_declares_the_parameter_constraints(running: BackgroundStack) -> None:
    doc = httpx.get(f"{running.http_url}/openapi.json").json()
    for path in ("/classify", "/detect", "/segment"):
        params = _params(_operation(doc, path))
        assert _schema_of(params["model"])["pattern"] == NAME_PATTERN
        assert _schema_of(params["version"])["minimum"] == 1
    top_k = _schema_of(_params(_operation(doc, "/classify"))["top_k"])
    assert (top_k["minimum"], top_k["maximum"]) == (1, 7)
    detect = _params(_operation(doc, "/detect"))
    score = _schema_of(detect["score_threshold"])
    assert (score["minimum"], score["maximum"]) == (0, 1)
    assert _schema_of(detect["max_detections"])["minimum"] == 1
    for path in ("/models/{name}", "/models/{name}/load", "/models/{name}/unload"):
        method = "get" if path == "/models/{name}" else "post"
        assert _params(_operation(doc, path, method))["name"]["pattern"] == NAME_PATTERN
    assert _schema_of(_params(_operation(doc, "/models/{name}/load"))["version"])["minimum"] == 1


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ({"model": "../etc"}, "invalid model name"),
        ({"version": "0"}, "invalid model version"),
        ({"top_k": "8"}, "top_k must be an integer from 1 to 7"),
        ({"top_k": "0"}, "top_k must be an integer from 1 to 7"),
    ],
)
def test_constraint_violations_keep_the_servers_own_messages(
    running: BackgroundStack, query: dict[str, str], says: str
) -> None:
    response = httpx.post(f"{running.http_url}/classify", params=query, content=jpeg_bytes())
    assert response.status_code == 400
    assert says in _error(response)["message"]
    bad_name = httpx.get(f"{running.http_url}/models/..x")
    assert bad_name.status_code == 400 and "invalid model name" in _error(bad_name)["message"]


@pytest.mark.parametrize(
    ("path", "query", "named", "accepted"),
    [
        ("/classify", {"topk": "1"}, "'topk'", "model, version, top_k"),
        ("/classify", {"format": "overlay"}, "'format'", "model, version, top_k"),
        ("/segment", {"top_k": "1", "x": "2"}, "'top_k', 'x'", "model, version, format"),
    ],
)
def test_an_unknown_query_parameter_is_refused_naming_it_and_the_accepted_ones(
    running: BackgroundStack, path: str, query: dict[str, str], named: str, accepted: str
) -> None:
    response = httpx.post(f"{running.http_url}{path}", params=query, content=jpeg_bytes())
    assert response.status_code == 400
    message = _error(response)["message"]
    assert "does not take the query parameter" in message and named in message
    assert f"(accepted: {accepted})" in message
