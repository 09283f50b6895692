"""The real servers (uvicorn + grpc on loopback ports) over both transports."""

from __future__ import annotations

import io
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import torch
from grpc_health.v1 import health_pb2, health_pb2_grpc
from PIL import Image

from care_serve.grpc_gen.care_serve.v1 import inference_pb2 as pb
from care_serve.grpc_gen.care_serve.v1 import inference_pb2_grpc as pb_grpc
from care_serve.imaging.decode import decode_image
from care_serve.imaging.preprocess import preprocess_image
from care_serve.server import BackgroundStack
from care_serve.store import BatchingConfig, write_package
from care_serve.tasks.classification import softmax
from tests.helpers.numerics import rel_error
from tests.helpers.packages import LABELS, jpeg_bytes, make_manifest, png_bytes


@pytest.fixture
def running(store: Path, start_stack: Any) -> BackgroundStack:
    return start_stack(store, max_image_bytes=300_000, max_image_pixels=1_000_000)


@pytest.fixture
def stub(running: BackgroundStack) -> Iterator[Any]:
    with grpc.insecure_channel(running.grpc_target) as channel:
        yield pb_grpc.InferenceServiceStub(channel)


def _torch_probs(model: Any, data: bytes) -> np.ndarray:
    """What the torch model says for the same image, preprocessed as the server does."""
    image = decode_image(data, max_bytes=10**7, max_pixels=10**7)
    array, _ = preprocess_image(image.image, make_manifest(), crop_only=True)  # served default
    with torch.inference_mode():
        logits = model(torch.from_numpy(array[None])).numpy()[0]
    return softmax(logits)


def test_classify_matches_torch_over_rest_and_grpc(
    running: BackgroundStack, stub: Any, tiny_models: dict[int, Any]
) -> None:
    data = jpeg_bytes(120, 90, seed=3)
    ref = _torch_probs(tiny_models[1][0], data)
    url = running.http_url
    multipart = httpx.post(f"{url}/classify?top_k=5", files={"file": ("x.jpg", data)})
    raw = httpx.post(f"{url}/classify", content=data, headers={"content-type": "image/jpeg"})
    assert multipart.status_code == 200, multipart.text
    assert raw.status_code == 200, raw.text
    body = multipart.json()
    assert body["model"] == "tiny" and body["version"] == 1
    assert (body["image_width"], body["image_height"]) == (120, 90)
    assert set(body["timings_ms"]) == {
        "decode", "preprocess", "queue", "compute", "postprocess", "total"
    }  # fmt: skip
    got = np.zeros(5)
    for p in body["predictions"]:
        got[p["class_id"]] = p["probability"]
        assert p["label"] == LABELS[p["class_id"]]
    assert rel_error(got, ref) < 1e-5
    assert [p["class_id"] for p in body["predictions"]] == list(np.argsort(-ref))
    assert raw.json()["predictions"] == body["predictions"]

    reply = stub.Classify(pb.ClassifyRequest(image=data, top_k=5), timeout=10)
    got_grpc = np.zeros(5)
    for p in reply.predictions:
        got_grpc[p.class_id] = p.probability
    assert reply.model == "tiny" and reply.version == 1
    assert rel_error(got_grpc, ref) < 1e-5  # float32 on the wire
    assert len(stub.Classify(pb.ClassifyRequest(image=data, top_k=2)).predictions) == 2


def _truncated_jpeg() -> bytes:
    data = jpeg_bytes(200, 160, seed=1)
    return data[: len(data) // 2]


def _bomb() -> bytes:
    return png_bytes(Image.new("1", (2000, 1000)))


def _noise_png(n: int) -> bytes:
    arr = np.random.default_rng(0).integers(0, 256, (n, n, 3), dtype=np.uint8)
    return png_bytes(Image.fromarray(arr))


BAD_INPUTS = [
    ("empty", b"", {}, 400, "empty"),
    ("not an image", b"%PDF-1.4 hello" * 20, {}, 400, "not an image"),
    ("truncated", _truncated_jpeg(), {}, 400, "truncated"),
    ("too many bytes", _noise_png(400), {}, 413, "bytes"),
    ("too many pixels", _bomb(), {}, 413, "pixels"),
    ("unknown model", jpeg_bytes(), {"model": "nope"}, 404, "not found"),
    ("unknown version", jpeg_bytes(), {"version": 9}, 404, "version 9"),
    ("bad version", jpeg_bytes(), {"version": -1}, 400, "version"),
    ("top_k zero", jpeg_bytes(), {"top_k": 0}, 400, "top_k"),
    ("top_k huge", jpeg_bytes(), {"top_k": 10_000}, 400, "top_k"),
    ("top_k text", jpeg_bytes(), {"top_k": "abc"}, 400, "top_k"),
    ("path traversal", jpeg_bytes(), {"model": "../../etc"}, 400, "invalid model name"),
]
GRPC_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    413: grpc.StatusCode.INVALID_ARGUMENT,
    404: grpc.StatusCode.NOT_FOUND,
}


@pytest.mark.parametrize(("case", "data", "params", "status", "text"), BAD_INPUTS)
def test_bad_input_rest_and_grpc(
    running: BackgroundStack,
    stub: Any,
    case: str,
    data: bytes,
    params: dict[str, Any],
    status: int,
    text: str,
) -> None:
    response = httpx.post(f"{running.http_url}/classify", params=params, content=data)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert text in error["message"], error
    if case in ("top_k text",):
        return  # not expressible in the typed proto
    request = pb.ClassifyRequest(image=data, model=str(params.get("model", "")))
    if isinstance(params.get("version"), int) and params["version"] > 0:
        request.version = params["version"]
    if "top_k" in params:
        request.top_k = params["top_k"]
    if case == "bad version":
        return  # uint32 in the proto
    with pytest.raises(grpc.RpcError) as info:
        stub.Classify(request, timeout=10)
    assert info.value.code() == GRPC_CODES[status]
    assert text in info.value.details()
    # the server keeps serving
    assert stub.Classify(pb.ClassifyRequest(image=jpeg_bytes()), timeout=10).predictions


@pytest.mark.parametrize("over", [1, 100_000])  # just over; over it and the multipart room
def test_a_multipart_image_over_the_limit_is_measured_and_names_the_setting(
    running: BackgroundStack, over: int
) -> None:
    """The 413 quotes max_image_bytes (300000 here) and the image's size, not the body's."""
    data = np.random.default_rng(over).bytes(300_000 + over)
    response = httpx.post(f"{running.http_url}/classify", files={"file": ("x.png", data)})
    assert response.status_code == 413, response.text
    message = response.json()["error"]["message"]
    assert "the limit is 300000 bytes (max_image_bytes)" in message, message
    measured = re.fullmatch(r"image is (more than )?(\d+) bytes; .*", message)
    assert measured, message
    size = int(measured.group(2))
    if measured.group(1):  # the image was not read to its end: at least this much
        assert 300_000 < size <= 300_000 + over, message
    else:
        assert size == 300_000 + over, message


def test_multipart_fields_besides_the_image_are_limited_too(running: BackgroundStack) -> None:
    response = httpx.post(
        f"{running.http_url}/classify",
        files={"file": ("x.jpg", jpeg_bytes())},
        data={"note": "x" * 200_000},
    )
    assert response.status_code == 413, response.text
    assert "besides the image" in response.json()["error"]["message"]


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK", "I;16"])
def test_image_modes_are_served(running: BackgroundStack, mode: str) -> None:
    img = Image.open(io.BytesIO(jpeg_bytes(80, 64)))
    if mode == "I;16":
        img = Image.fromarray(np.asarray(img.convert("L")).astype(np.uint16) * 257)
    else:
        img = img.convert(mode)
    buf = io.BytesIO()
    img.save(buf, "JPEG" if mode == "CMYK" else "PNG")
    response = httpx.post(f"{running.http_url}/classify", content=buf.getvalue())
    assert response.status_code == 200, response.text


def _block_compute(stack: BackgroundStack, name: str = "tiny") -> threading.Event:
    """Hold the model's compute thread so requests pile up in its queue."""
    gate = threading.Event()
    stack.stack.manager.loaded()[name].executor.submit(gate.wait, 20)
    return gate


def test_overload_and_deadlines(store: Path, start_stack: Any, tiny_models: dict) -> None:
    manifest = make_manifest(
        version=2,
        batching=BatchingConfig(max_batch_size=1, max_queue_delay_ms=0, max_queue_size=2),
    )
    write_package(store, manifest, tiny_models[2][1], LABELS)
    stack = start_stack(store)
    url = stack.http_url
    data = jpeg_bytes()
    gate = _block_compute(stack)
    results: list[httpx.Response] = []
    with httpx.Client(timeout=30) as client:
        # one request enters the (held) backend, two fill the queue

        def send() -> None:
            results.append(client.post(f"{url}/classify", content=data))

        threads = [threading.Thread(target=send) for _ in range(3)]
        for t in threads:
            t.start()
            time.sleep(0.15)
        busy = client.post(f"{url}/classify", content=data)
        assert busy.status_code == 503 and busy.headers["retry-after"] == "1", busy.text
        assert "max_queue_size" in busy.json()["error"]["message"]
        with grpc.insecure_channel(stack.grpc_target) as channel:
            stub = pb_grpc.InferenceServiceStub(channel)
            with pytest.raises(grpc.RpcError) as info:
                stub.Classify(pb.ClassifyRequest(image=data), timeout=10)
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        gate.set()
        for t in threads:
            t.join()
        assert [r.status_code for r in results] == [200, 200, 200]

        # deadlines: held backend, short deadline -> timeout, over both transports
        gate = _block_compute(stack)
        started = time.monotonic()
        late = client.post(f"{url}/classify", content=data, headers={"X-Request-Timeout-Ms": "300"})
        assert late.status_code == 504, late.text
        assert time.monotonic() - started < 5
        with grpc.insecure_channel(stack.grpc_target) as channel:
            stub = pb_grpc.InferenceServiceStub(channel)
            with pytest.raises(grpc.RpcError) as info:
                stub.Classify(pb.ClassifyRequest(image=data), timeout=0.3)
            assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        gate.set()
        assert client.post(f"{url}/classify", content=data).status_code == 200
        metrics = client.get(f"{url}/metrics").text
    assert 'outcome="overloaded",protocol="rest",version="2"' in metrics
    assert 'outcome="overloaded",protocol="grpc",version="2"' in metrics
    assert 'outcome="timeout",protocol="rest",version="2"' in metrics


def test_reload_under_traffic_and_failed_load(
    store: Path, start_stack: Any, tiny_models: dict
) -> None:
    stack = start_stack(store, admin_token="s3cret")
    url = stack.http_url
    data = jpeg_bytes(seed=5)
    v2_probs = _torch_probs(tiny_models[2][0], data)
    write_package(store, make_manifest(version=2), tiny_models[2][1], LABELS)
    stop = threading.Event()
    statuses: list[int] = []
    versions: list[int] = []

    def rest_traffic() -> None:
        with httpx.Client(timeout=30) as client:
            while not stop.is_set():
                r = client.post(f"{url}/classify", content=data)
                statuses.append(r.status_code)
                if r.status_code == 200:
                    versions.append(r.json()["version"])

    def grpc_traffic() -> None:
        with grpc.insecure_channel(stack.grpc_target) as channel:
            stub = pb_grpc.InferenceServiceStub(channel)
            while not stop.is_set():
                try:
                    versions.append(
                        stub.Classify(pb.ClassifyRequest(image=data), timeout=30).version
                    )
                    statuses.append(200)
                except grpc.RpcError as exc:
                    statuses.append(exc.code().value[0])

    workers = [threading.Thread(target=fn) for fn in (rest_traffic, rest_traffic, grpc_traffic)]
    for w in workers:
        w.start()
    try:
        time.sleep(0.3)
        denied = httpx.post(f"{url}/models/tiny/load", params={"version": 2})
        assert denied.status_code == 401
        auth = {"Authorization": "Bearer s3cret"}
        loaded = httpx.post(
            f"{url}/models/tiny/load", params={"version": 2}, headers=auth, timeout=60
        )
        assert loaded.status_code == 200, loaded.text
        assert loaded.json()["loaded_version"] == 2
        time.sleep(0.3)
        # a broken version 3 fails to load and leaves version 2 serving
        broken = store / "broken.onnx"
        broken.write_bytes(b"this is not an onnx file")
        write_package(store, make_manifest(version=3), broken, LABELS)
        failed = httpx.post(f"{url}/models/tiny/load", headers=auth, timeout=60)
        assert failed.status_code == 422, failed.text
        assert "cannot load" in failed.json()["error"]["message"]
        time.sleep(0.3)
    finally:
        stop.set()
        for w in workers:
            w.join()
    assert statuses and set(statuses) == {200}, sorted(set(statuses))
    assert versions[0] == 1 and versions[-1] == 2 and set(versions) == {1, 2}
    response = httpx.post(f"{url}/classify", content=data, params={"top_k": 5})
    assert response.json()["version"] == 2
    got = np.zeros(5)
    for p in response.json()["predictions"]:
        got[p["class_id"]] = p["probability"]
    assert rel_error(got, v2_probs) < 1e-5
    detail = httpx.get(f"{url}/models/tiny").json()
    assert detail["state"] == "ready" and detail["versions"] == [1, 2, 3]
    assert "cannot load" in detail["error"] or detail["error"] is None
    unloaded = httpx.post(f"{url}/models/tiny/unload", headers={"Authorization": "Bearer s3cret"})
    assert unloaded.status_code == 200 and unloaded.json()["state"] == "available"
    gone = httpx.post(f"{url}/classify", content=data, params={"model": "tiny"})
    assert gone.status_code == 404 and "not loaded" in gone.json()["error"]["message"]


def test_listing_health_metrics_and_unimplemented_tasks(
    running: BackgroundStack, stub: Any
) -> None:
    url = running.http_url
    assert httpx.get(f"{url}/health/live").status_code == 200
    ready = httpx.get(f"{url}/health/ready")
    assert ready.status_code == 200 and ready.json()["models"] == ["tiny"]
    models = httpx.get(f"{url}/models").json()["models"]
    assert [(m["name"], m["state"], m["loaded_version"]) for m in models] == [("tiny", "ready", 1)]
    assert httpx.get(f"{url}/models/zzz").status_code == 404
    assert httpx.get(f"{url}/openapi.json").json()["paths"]["/classify"]["post"]
    listed = stub.ListModels(pb.ListModelsRequest())
    assert [(m.name, m.state, m.task) for m in listed.models] == [
        ("tiny", "ready", "classification")
    ]
    with pytest.raises(grpc.RpcError) as info:
        stub.GetModel(pb.GetModelRequest(name="../x"))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # The dense tasks exist, but this store has no detection/segmentation model.
    detect = httpx.post(f"{url}/detect", content=jpeg_bytes())
    assert detect.status_code == 404 and "no detection model" in detect.json()["error"]["message"]
    with pytest.raises(grpc.RpcError) as info:
        stub.Segment(pb.SegmentRequest(image=jpeg_bytes()))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    with grpc.insecure_channel(running.grpc_target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        status = health.Check(
            health_pb2.HealthCheckRequest(service="care_serve.v1.InferenceService")
        )
        assert status.status == health_pb2.HealthCheckResponse.SERVING

    data = jpeg_bytes()
    for _ in range(3):
        assert httpx.post(f"{url}/classify", content=data).status_code == 200
        stub.Classify(pb.ClassifyRequest(image=data))
    metrics = httpx.get(f"{url}/metrics").text
    for protocol in ("rest", "grpc"):
        labels = f'model="tiny",protocol="{protocol}",version="1"'
        success = f'key="",model="tiny",outcome="success",protocol="{protocol}",version="1"'
        assert f"care_inference_requests_total{{{success}}} 3.0" in metrics
        for hist in ("request", "queue", "preprocess", "compute", "postprocess"):
            assert f"care_inference_{hist}_duration_seconds_count{{{labels}}} 3.0" in metrics
    assert 'care_inference_batch_size_count{model="tiny",version="1"}' in metrics
    assert 'care_inference_queue_depth{model="tiny",version="1"} 0.0' in metrics
    assert 'care_model_load_duration_seconds{model="tiny",version="1"}' in metrics
    assert 'care_model_ready{model="tiny",version="1"} 1.0' in metrics


def test_empty_store_starts_and_explains(tmp_path: Path, start_stack: Any) -> None:
    stack = start_stack(tmp_path / "empty", allow_empty_store=True)
    assert any("empty" in line for line in stack.stack.startup_report)
    url = stack.http_url
    assert httpx.get(f"{url}/models").json() == {"models": [], "defaults": {}}
    response = httpx.post(f"{url}/classify", content=jpeg_bytes())
    assert response.status_code == 404
    assert "no classification model is loaded" in response.json()["error"]["message"]


def test_http_socket_is_tcp_so_responses_are_not_delayed() -> None:
    """asyncio sets TCP_NODELAY only on sockets created with proto=IPPROTO_TCP (Nagle + delayed
    ACK cost ~40 ms per REST response before this was fixed)."""
    import socket

    from care_serve.server import _bind

    sock = _bind("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP
    finally:
        sock.close()
