"""A pipeline over the Open Inference Protocol, with the stock tritonclient (HTTP and gRPC):
a model of its own (platform "ensemble"), its metadata, readiness, inference and the
repository index; a model of the same name comes first."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as tgrpc
import tritonclient.http as thttp
from PIL import Image
from tritonclient.utils import InferenceServerException

from care_serve.server import BackgroundStack
from tests.helpers.scenes import SCENES, box_iou
from tests.helpers.stacks import ADMIN, ADMIN_TOKEN, serving_stack

TRIO = SCENES[0]
SHAPES = {o.label: o.box for o in TRIO.objects}
PIPELINE = "shapes-detect-classify"
CLIENTS = {"http": thttp, "grpc": tgrpc}
OUTPUTS = {
    "boxes": ("FP32", [-1, -1, 4]),
    "scores": ("FP32", [-1, -1]),
    "labels": ("BYTES", [-1, -1]),
    "class_labels": ("BYTES", [-1, -1]),
    "class_scores": ("FP32", [-1, -1]),
    "num_detections": ("INT32", [-1]),
    "image_size": ("INT32", [-1, 2]),
    "detections": ("BYTES", [-1]),
}


def client(stack: BackgroundStack, kind: str) -> Any:
    if kind == "http":
        return thttp.InferenceServerClient(stack.http_url.removeprefix("http://"))
    return tgrpc.InferenceServerClient(stack.grpc_target)


def image_input(kind: str, images: list[bytes]) -> Any:
    inp = CLIENTS[kind].InferInput("image", [len(images)], "BYTES")
    inp.set_data_from_numpy(np.array(images, dtype=object))
    return inp


def reference(stack: BackgroundStack, png: bytes) -> dict[str, Any]:
    """What ``POST /pipelines/{name}`` answers for ``png``."""
    answer = httpx.post(f"{stack.http_url}/pipelines/{PIPELINE}", content=png, timeout=30)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def blank_png() -> bytes:
    """Plain grey, 200x100: nothing to find."""
    buffer = io.BytesIO()
    Image.new("RGB", (200, 100), (200, 200, 200)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(params=["http", "grpc"])
def kind(request: pytest.FixtureRequest) -> str:
    value: str = request.param
    return value


def test_metadata_and_readiness(served: BackgroundStack, kind: str) -> None:
    c = client(served, kind)
    meta = c.get_model_metadata(PIPELINE)
    if kind == "grpc":
        meta = {
            "name": meta.name,
            "versions": list(meta.versions),
            "platform": meta.platform,
            "inputs": [
                {"name": t.name, "datatype": t.datatype, "shape": list(t.shape)}
                for t in meta.inputs
            ],
            "outputs": [
                {"name": t.name, "datatype": t.datatype, "shape": list(t.shape)}
                for t in meta.outputs
            ],
        }
    assert (meta["name"], meta["versions"], meta["platform"]) == (PIPELINE, ["1"], "ensemble")
    assert [(t["name"], t["datatype"], t["shape"]) for t in meta["inputs"]] == [
        ("image", "BYTES", [-1]),
        ("frame", "UINT8", [-1, -1, -1, 3]),
    ]
    assert {t["name"]: (t["datatype"], t["shape"]) for t in meta["outputs"]} == OUTPUTS
    if kind == "http":
        assert meta["parameters"]["task"] == "pipeline"
        assert [s["model"] for s in meta["parameters"]["steps"]] == [
            "shapes-detector",
            "shapes-classifier",
        ]
    assert c.is_model_ready(PIPELINE) and c.is_model_ready(PIPELINE, "1")
    assert not c.is_model_ready(PIPELINE, "2")
    with pytest.raises(InferenceServerException, match="one version"):
        c.get_model_metadata(PIPELINE, "2")
    c.close()


def test_infer_answers_what_the_rest_pipeline_answers(served: BackgroundStack, kind: str) -> None:
    """Two images (the shapes and a plain grey one) in one request, every output."""
    pngs = [TRIO.png(), blank_png()]
    refs = [reference(served, png) for png in pngs]
    c = client(served, kind)
    result = c.infer(PIPELINE, [image_input(kind, pngs)])
    response = result.get_response()
    name, version = (
        (response["model_name"], response["model_version"])
        if kind == "http"
        else (response.model_name, response.model_version)
    )
    assert (name, version) == (PIPELINE, "1")
    counts = result.as_numpy("num_detections")
    assert counts.tolist() == [3, 0] == [len(r["detections"]) for r in refs]
    boxes, scores = result.as_numpy("boxes"), result.as_numpy("scores")
    labels, class_labels = result.as_numpy("labels"), result.as_numpy("class_labels")
    class_scores = result.as_numpy("class_scores")
    assert boxes.shape == (2, 3, 4) and boxes.dtype == np.float32
    assert scores.shape == class_scores.shape == labels.shape == class_labels.shape == (2, 3)
    assert result.as_numpy("image_size").tolist() == [[480, 640], [100, 200]]
    found = refs[0]["detections"]
    for j, d in enumerate(found):
        top = d["classification"]["predictions"][0]
        assert labels[0, j].decode() == d["label"] == class_labels[0, j].decode() == top["label"]
        assert np.allclose(boxes[0, j], d["box"], rtol=1e-5, atol=1e-3)
        assert abs(scores[0, j] - d["score"]) < 1e-5
        assert abs(class_scores[0, j] - top["score"]) < 1e-5
        assert box_iou(tuple(float(v) for v in boxes[0, j]), SHAPES[d["label"]]) > 0.7
    assert np.all(boxes[1] == 0) and all(s == b"" for s in class_labels[1])
    detections = [json.loads(s) for s in result.as_numpy("detections")]
    assert detections == [r["detections"] for r in refs]
    c.close()


def test_frames_and_chosen_outputs(served: BackgroundStack, kind: str) -> None:
    mod = CLIENTS[kind]
    frame = TRIO.frame[None]
    inp = mod.InferInput("frame", list(frame.shape), "UINT8")
    inp.set_data_from_numpy(frame)
    c = client(served, kind)
    outputs = [mod.InferRequestedOutput("class_labels"), mod.InferRequestedOutput("num_detections")]
    result = c.infer(PIPELINE, [inp], outputs=outputs, model_version="1")
    assert result.as_numpy("boxes") is None
    assert sorted(s.decode() for s in result.as_numpy("class_labels")[0]) == sorted(SHAPES)
    assert result.as_numpy("num_detections").tolist() == [3]
    c.close()


def test_bad_requests_say_what_the_pipeline_takes(served: BackgroundStack, kind: str) -> None:
    mod = CLIENTS[kind]
    c = client(served, kind)
    with pytest.raises(InferenceServerException, match="not an image"):
        c.infer(PIPELINE, [image_input(kind, [b"not an image"])])
    tensor = mod.InferInput("input", [1, 3, 8, 8], "FP32")
    tensor.set_data_from_numpy(np.zeros((1, 3, 8, 8), np.float32))
    with pytest.raises(InferenceServerException, match=r"no input 'input' \(accepted: image"):
        c.infer(PIPELINE, [tensor])
    top = mod.InferRequestedOutput("class_labels", class_count=2)
    with pytest.raises(InferenceServerException, match="classification parameter"):
        c.infer(PIPELINE, [image_input(kind, [TRIO.png()])], outputs=[top])
    with pytest.raises(InferenceServerException, match="score_threshold"):
        c.infer(PIPELINE, [image_input(kind, [TRIO.png()])], parameters={"score_threshold": 0.5})
    c.close()


def test_a_model_of_the_same_name_comes_first(served: BackgroundStack) -> None:
    config = served.stack.manager.config
    spec = config.pipelines[PIPELINE]
    served.stack.manager.config = config.model_copy(
        update={"pipelines": {**config.pipelines, "shapes-detector": spec}}
    )
    try:
        meta = httpx.get(f"{served.http_url}/v2/models/shapes-detector").json()
        assert meta["platform"] != "ensemble" and meta["parameters"]["task"] == "detection"
    finally:
        served.stack.manager.config = config


@pytest.fixture(scope="module")
def admin_stack() -> Iterator[BackgroundStack]:
    with serving_stack(admin_token=ADMIN_TOKEN) as stack:
        yield stack


def test_the_repository_index_lists_the_pipeline(admin_stack: BackgroundStack) -> None:
    http = thttp.InferenceServerClient(admin_stack.http_url.removeprefix("http://"))
    index = http.get_model_repository_index(headers=ADMIN)
    assert {"name": PIPELINE, "version": "1", "state": "READY"} in index
    grpc_client = tgrpc.InferenceServerClient(admin_stack.grpc_target)
    grpc_headers = {"authorization": ADMIN["Authorization"]}
    entries = grpc_client.get_model_repository_index(headers=grpc_headers).models
    assert (PIPELINE, "1", "READY") in [(m.name, m.version, m.state) for m in entries]
    http.close()
    grpc_client.close()
