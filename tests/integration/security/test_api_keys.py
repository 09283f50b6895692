"""API keys with scopes, the admin token, model control and rate limits on all four protocols.

One stack per module reads a key file made here: an infer key, an admin key and a
slow key (rate 0.01/s: its second call is refused for about 100 s, so the test
never races the refill). Each credential is tried against an inference call and a
load call on REST, v2 REST, own gRPC and v2 gRPC.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as tgrpc
import tritonclient.http as thttp
from prometheus_client import CollectorRegistry
from tritonclient.utils import InferenceServerException

from care_serve.grpc_gen.care_serve.v1 import inference_pb2 as pb
from care_serve.grpc_gen.care_serve.v1 import inference_pb2_grpc as pb_grpc
from care_serve.grpc_gen.inference import grpc_service_pb2 as v2
from care_serve.grpc_gen.inference import grpc_service_pb2_grpc as v2_grpc
from care_serve.security.keys import KeyFile
from care_serve.server import BackgroundStack
from tests.helpers.paths import ROOT
from tests.helpers.stacks import serving_stack, test_settings

IMAGE = (ROOT / "examples" / "shape.png").read_bytes()
CLASSIFIER = "shapes-classifier"
LOADABLE = "shapes-detector"
TOKEN = "the-admin-token"
_GRPC_STATUS = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
}


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    path = tmp_path_factory.mktemp("keys") / "api-keys.json"
    file = KeyFile()
    made = {
        "infer": file.add("camera-1", "infer"),
        "admin": file.add("ops", "admin"),
        "slow": file.add("slow-camera", "infer", rate=0.01),
    }
    file.write(path)
    return path, made


@pytest.fixture(scope="module")
def keyed(keys: tuple[Path, dict[str, str]]) -> Iterator[BackgroundStack]:
    settings = test_settings(models=[CLASSIFIER], api_keys_file=keys[0], admin_token=TOKEN)
    with BackgroundStack(settings, CollectorRegistry()) as stack:
        yield stack


def _bearer(key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"} if key else {}


def _grpc_call(
    stack: BackgroundStack, call: Callable[[grpc.Channel, list], object], key: str | None
) -> int:
    metadata = [("authorization", f"Bearer {key}")] if key else []
    with grpc.insecure_channel(stack.grpc_target) as channel:
        try:
            call(channel, metadata)
        except grpc.RpcError as exc:
            return _GRPC_STATUS.get(exc.code(), -1)
    return 200


def infer_status(protocol: str, stack: BackgroundStack, key: str | None) -> int:
    url = stack.http_url
    if protocol == "rest":
        return httpx.post(
            f"{url}/classify", content=IMAGE, headers=_bearer(key), timeout=30
        ).status_code
    if protocol == "grpc":
        return _grpc_call(
            stack,
            lambda ch, md: pb_grpc.InferenceServiceStub(ch).Classify(
                pb.ClassifyRequest(image=IMAGE), metadata=md, timeout=30
            ),
            key,
        )
    return v2_infer_status(protocol, stack, key)


def v2_infer_status(protocol: str, stack: BackgroundStack, key: str | None) -> int:
    """A v2 inference with the stock tritonclient of ``protocol`` (v2-rest or v2-grpc)."""
    mod = thttp if protocol == "v2-rest" else tgrpc
    if mod is thttp:
        client = thttp.InferenceServerClient(stack.http_url.removeprefix("http://"))
    else:
        client = tgrpc.InferenceServerClient(stack.grpc_target)
    image = mod.InferInput("image", [1], "BYTES")
    image.set_data_from_numpy(np.array([IMAGE], dtype=object))
    try:
        client.infer(
            CLASSIFIER, [image], headers={"authorization": f"Bearer {key}"} if key else None
        )
    except InferenceServerException as exc:
        status = str(exc.status())
        for code, http in _GRPC_STATUS.items():
            if status in (str(code), code.name, str(http)):
                return http
        return -1
    finally:
        client.close()
    return 200


def load_status(protocol: str, stack: BackgroundStack, key: str | None) -> int:
    url = stack.http_url
    if protocol == "rest":
        return httpx.post(
            f"{url}/models/{LOADABLE}/load", headers=_bearer(key), timeout=60
        ).status_code
    if protocol == "v2-rest":
        return httpx.post(
            f"{url}/v2/repository/models/{LOADABLE}/load", headers=_bearer(key), timeout=60
        ).status_code
    if protocol == "grpc":
        return _grpc_call(
            stack,
            lambda ch, md: pb_grpc.InferenceServiceStub(ch).LoadModel(
                pb.LoadModelRequest(name=LOADABLE), metadata=md, timeout=60
            ),
            key,
        )
    return _grpc_call(
        stack,
        lambda ch, md: v2_grpc.GRPCInferenceServiceStub(ch).RepositoryModelLoad(
            v2.RepositoryModelLoadRequest(model_name=LOADABLE), metadata=md, timeout=60
        ),
        key,
    )


PROTOCOLS = ("rest", "v2-rest", "grpc", "v2-grpc")
# credential -> (inference, load)
EXPECTED = {
    "none": (401, 401),
    "wrong": (401, 401),
    "infer": (200, 403),
    "admin": (200, 200),
    "token": (200, 200),
}


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("credential", list(EXPECTED))
def test_each_credential_against_inference_and_load(
    keyed: BackgroundStack, keys: tuple[Path, dict[str, str]], protocol: str, credential: str
) -> None:
    key = {
        "none": None,
        "wrong": "care_not-a-key-of-this-server",
        "infer": keys[1]["infer"],
        "admin": keys[1]["admin"],
        "token": TOKEN,
    }[credential]
    got = (infer_status(protocol, keyed, key), load_status(protocol, keyed, key))
    assert got == EXPECTED[credential]


def test_refusals_say_what_to_send(
    keyed: BackgroundStack, keys: tuple[Path, dict[str, str]]
) -> None:
    url = keyed.http_url
    missing = httpx.post(f"{url}/classify", content=IMAGE)
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert "Authorization: Bearer" in missing.json()["error"]["message"]
    assert missing.json()["error"]["request_id"] == missing.headers["x-request-id"]
    scoped = httpx.post(f"{url}/models/{LOADABLE}/unload", headers=_bearer(keys[1]["infer"]))
    assert scoped.status_code == 403
    assert "scope 'admin'" in scoped.json()["error"]["message"]
    v2_missing = httpx.post(f"{url}/v2/models/{CLASSIFIER}/infer", json={"inputs": []})
    assert v2_missing.status_code == 401 and "Bearer" in v2_missing.json()["error"]


def test_health_readiness_page_and_metrics_stay_open(keyed: BackgroundStack) -> None:
    url = keyed.http_url
    for path in ("/health/live", "/health/ready", "/v2/health/ready", "/", "/metrics", "/docs"):
        assert httpx.get(f"{url}{path}").status_code == 200, path
    with grpc.insecure_channel(keyed.grpc_target) as channel:
        ready = v2_grpc.GRPCInferenceServiceStub(channel).ServerReady(v2.ServerReadyRequest())
    assert ready.ready


def test_metrics_can_require_a_key(keys: tuple[Path, dict[str, str]]) -> None:
    with serving_stack(models=[], api_keys_file=keys[0], metrics_open=False) as stack:
        assert httpx.get(f"{stack.http_url}/metrics").status_code == 401
        ok = httpx.get(f"{stack.http_url}/metrics", headers=_bearer(keys[1]["infer"]))
        assert ok.status_code == 200


def test_the_key_name_not_the_key_is_logged_and_counted(
    keyed: BackgroundStack, keys: tuple[Path, dict[str, str]], caplog: pytest.LogCaptureFixture
) -> None:
    key = keys[1]["infer"]
    with caplog.at_level(logging.INFO, logger="care_serve.access"):
        assert (
            httpx.post(
                f"{keyed.http_url}/classify", content=IMAGE, headers=_bearer(key)
            ).status_code
            == 200
        )
        # The line is written just after the response is sent: wait for it.
        deadline = time.monotonic() + 10
        lines: list[str] = []
        while time.monotonic() < deadline and not any("key=camera-1" in x for x in lines):
            time.sleep(0.05)
            lines = [r.getMessage() for r in caplog.records if r.name == "care_serve.access"]
    assert any("key=camera-1" in line and "path=/classify" in line for line in lines), lines
    assert not any(key in line for line in lines)
    registry = keyed.stack.registry
    count = registry.get_sample_value(
        "care_inference_requests_total",
        {
            "model": CLASSIFIER,
            "version": "1",
            "protocol": "rest",
            "key": "camera-1",
            "outcome": "success",
        },
    )
    assert count is not None and count >= 1


def test_rate_limit_answers_429_with_retry_after(
    keyed: BackgroundStack, keys: tuple[Path, dict[str, str]]
) -> None:
    slow = keys[1]["slow"]
    url = keyed.http_url
    first = httpx.post(f"{url}/classify", content=IMAGE, headers=_bearer(slow))
    assert first.status_code == 200
    second = httpx.post(f"{url}/classify", content=IMAGE, headers=_bearer(slow))
    assert second.status_code == 429
    assert second.json()["error"]["type"] == "RateLimited"
    assert 1 <= int(second.headers["retry-after"]) <= 100
    with (
        grpc.insecure_channel(keyed.grpc_target) as channel,
        pytest.raises(grpc.RpcError) as refused,
    ):
        pb_grpc.InferenceServiceStub(channel).Classify(
            pb.ClassifyRequest(image=IMAGE), metadata=[("authorization", f"Bearer {slow}")]
        )
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    trailers = dict(refused.value.trailing_metadata())
    assert 1 <= int(trailers["retry-after"]) <= 100
    # Other keys keep their own buckets.
    assert (
        httpx.post(f"{url}/classify", content=IMAGE, headers=_bearer(keys[1]["infer"])).status_code
        == 200
    )
    limited = keyed.stack.registry.get_sample_value(
        "care_rate_limited_requests_total", {"key": "slow-camera"}
    )
    assert limited == 2


def test_rate_limit_by_address_without_keys() -> None:
    with serving_stack(models=[CLASSIFIER], rate_limit=0.01, rate_limit_burst=2) as stack:
        statuses = [
            httpx.post(f"{stack.http_url}/classify", content=IMAGE).status_code for _ in range(3)
        ]
        assert statuses == [200, 200, 429]
        assert httpx.get(f"{stack.http_url}/health/ready").status_code == 200  # never limited


def test_model_control_is_off_without_an_admin_credential(
    keys: tuple[Path, dict[str, str]],
) -> None:
    with serving_stack(models=[]) as stack:
        refused = httpx.post(f"{stack.http_url}/models/{CLASSIFIER}/load")
        assert refused.status_code == 403
        message = refused.json()["error"]["message"]
        assert "model control is off" in message and "--admin-token" in message
        assert "keys add" in message
        assert load_status("grpc", stack, None) == 403
        assert load_status("v2-grpc", stack, None) == 403
        # Inference stays open without keys.
        assert httpx.get(f"{stack.http_url}/models").status_code == 200


def test_a_key_file_change_is_picked_up(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    file = KeyFile()
    first = file.add("first", "infer")
    file.write(path)
    with serving_stack(models=[], api_keys_file=path) as stack:
        url = f"{stack.http_url}/models"
        assert httpx.get(url, headers=_bearer(first)).status_code == 200
        file.revoke("first")
        second = file.add("second", "infer")
        file.write(path)
        deadline = time.monotonic() + 10
        statuses = (200, 401)
        while time.monotonic() < deadline:
            statuses = (
                httpx.get(url, headers=_bearer(first)).status_code,
                httpx.get(url, headers=_bearer(second)).status_code,
            )
            if statuses == (401, 200):
                break
            time.sleep(0.2)
        assert statuses == (401, 200)


def test_the_openapi_document_declares_the_bearer_credential(keyed: BackgroundStack) -> None:
    doc = httpx.get(f"{keyed.http_url}/openapi.json").json()
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    classify = doc["paths"]["/classify"]["post"]
    assert classify["security"] == [{"bearer": []}]
    assert {"401", "429"} <= set(classify["responses"])
    load = doc["paths"]["/models/{name}/load"]["post"]
    assert {"401", "403", "429"} <= set(load["responses"])
    assert "security" not in doc["paths"]["/health/ready"]["get"]
