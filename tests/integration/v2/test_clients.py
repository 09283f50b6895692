"""The stock tritonclient (HTTP and gRPC) against the real server, for every task and input.

Every v2 answer is compared with the own API's answer for the same image:
``/classify``, ``/detect`` and ``/segment``. Encoded images and RGB frames come from
the same PNG (lossless), so the server sees the same pixels; preprocessed FP32
tensors are made by the model's own preprocessing of a PNG at the model's input
size (320x320), where the own API's letterbox is the identity.
"""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as tgrpc
import tritonclient.http as thttp
from tritonclient.utils import InferenceServerException

from care_serve.server import BackgroundStack
from tests.helpers.stacks import BUNDLED_MODELS as MODELS
from tests.helpers.v2 import own_api, preprocessed, probabilities, rel, rgb, scene_png

CLIENTS = {"http": thttp, "grpc": tgrpc}
TOL = 1e-5  # FP32 outputs against the own API's float64 JSON


def client(served: BackgroundStack, kind: str) -> Any:
    if kind == "http":
        return thttp.InferenceServerClient(served.http_url.removeprefix("http://"))
    return tgrpc.InferenceServerClient(served.grpc_target)


def make_input(
    kind: str, input_kind: str, served: BackgroundStack, model: str, pngs: list[bytes]
) -> Any:
    mod = CLIENTS[kind]
    if input_kind == "image":
        inp = mod.InferInput("image", [len(pngs)], "BYTES")
        inp.set_data_from_numpy(np.array(pngs, dtype=object))
    elif input_kind == "frame":
        frames = np.stack([rgb(p) for p in pngs])
        inp = mod.InferInput("frame", list(frames.shape), "UINT8")
        inp.set_data_from_numpy(frames)
    else:
        tensors = np.stack([preprocessed(served, model, p) for p in pngs])
        inp = mod.InferInput("input", list(tensors.shape), "FP32")
        inp.set_data_from_numpy(tensors)
    return inp


def input_side(served: BackgroundStack, model: str) -> int:
    manifest = served.stack.manager.loaded()[model].manifest
    assert manifest.input.width == manifest.input.height
    return manifest.input.width


def images(served: BackgroundStack, model: str, task: str, input_kind: str, n: int) -> list[bytes]:
    """``n`` test images; frames of one request share a size, FP32 inputs are at input size."""
    if input_kind == "image":
        return [scene_png(task, i) for i in range(n)]  # sizes differ
    side = input_side(served, model) if input_kind == "input" else 256
    return [scene_png(task, i, side) for i in range(n)]


def check_classification(result: Any, refs: list[dict[str, Any]], k: int) -> None:
    probs = result.as_numpy("probabilities")
    assert probs.dtype == np.float32 and probs.shape == (len(refs), k)
    for row, ref in zip(probs, refs, strict=True):
        assert rel(row, probabilities(ref, k)) < TOL
    names = [n.decode() for n in result.as_numpy("class_names")]
    assert names == ["circle", "square", "triangle"]


def check_detection(result: Any, refs: list[dict[str, Any]]) -> None:
    boxes, scores = result.as_numpy("boxes"), result.as_numpy("scores")
    ids, labels = result.as_numpy("class_ids"), result.as_numpy("labels")
    counts, sizes = result.as_numpy("num_detections"), result.as_numpy("image_size")
    assert boxes.shape == (len(refs), 100, 4) and boxes.dtype == np.float32
    assert ids.dtype == np.int32 and counts.dtype == np.int32
    for i, ref in enumerate(refs):
        dets = ref["detections"]
        n = len(dets)
        assert n > 0, "the test scenes have shapes to find"
        assert int(counts[i]) == n
        assert [int(c) for c in ids[i, :n]] == [d["class_id"] for d in dets]
        assert [s.decode() for s in labels[i, :n]] == [d["label"] for d in dets]
        assert rel(boxes[i, :n], [d["box"] for d in dets]) < TOL
        assert rel(scores[i, :n], [d["score"] for d in dets]) < TOL
        assert np.all(boxes[i, n:] == 0) and np.all(ids[i, n:] == -1)
        assert all(s == b"" for s in labels[i, n:])
        assert list(sizes[i]) == [ref["image_height"], ref["image_width"]]


def check_segmentation(result: Any, refs: list[dict[str, Any]]) -> None:
    masks, shares = result.as_numpy("mask"), result.as_numpy("class_shares")
    sizes = result.as_numpy("image_size")
    assert masks.dtype == np.uint8 and shares.dtype == np.float32
    for i, ref in enumerate(refs):
        h, w = ref["image_height"], ref["image_width"]
        assert list(sizes[i]) == [h, w]
        assert np.array_equal(masks[i, :h, :w], ref["mask"])
        assert np.all(masks[i, h:, :] == 0) and np.all(masks[i, :, w:] == 0)
        expected = [c["share"] for c in sorted(ref["class_shares"], key=lambda c: c["class_id"])]
        assert rel(shares[i], expected) < TOL
    names = [n.decode() for n in result.as_numpy("class_names")]
    assert names[0] == "background" and len(names) == shares.shape[1]


@pytest.mark.parametrize("kind", ["http", "grpc"])
@pytest.mark.parametrize("input_kind", ["image", "input", "frame"])
@pytest.mark.parametrize("task", ["classification", "detection", "segmentation"])
def test_v2_answers_equal_the_own_api(
    served: BackgroundStack, kind: str, input_kind: str, task: str
) -> None:
    """Two images in one request, every output, compared with the own API image by image."""
    model = MODELS[task]
    pngs = images(served, model, task, input_kind, 2)
    refs = [own_api(served, task, model, p) for p in pngs]
    c = client(served, kind)
    result = c.infer(model, [make_input(kind, input_kind, served, model, pngs)])
    response = result.get_response()
    name = response["model_name"] if kind == "http" else response.model_name
    assert name == model
    if task == "classification":
        check_classification(result, refs, 3)
    elif task == "detection":
        check_detection(result, refs)
    else:
        check_segmentation(result, refs)
    c.close()


@pytest.mark.parametrize("kind", ["http", "grpc"])
def test_classification_extension_answers_score_index_label(
    served: BackgroundStack, kind: str
) -> None:
    model = MODELS["classification"]
    png = scene_png("classification", 5)
    ref = own_api(served, "classification", model, png)
    mod = CLIENTS[kind]
    c = client(served, kind)
    out = mod.InferRequestedOutput("probabilities", class_count=2)
    result = c.infer(model, [make_input(kind, "image", served, model, [png])], outputs=[out])
    top = result.as_numpy("probabilities")
    assert top.shape == (1, 2)
    for entry, pred in zip(top[0], ref["predictions"][:2], strict=True):
        score, index, label = entry.decode().split(":")
        assert (int(index), label) == (pred["class_id"], pred["label"])
        assert abs(float(score) - pred["probability"]) <= 1e-6 * pred["probability"]
    c.close()


@pytest.mark.parametrize("kind", ["http", "grpc"])
def test_versions_in_the_path_and_json_outputs(served: BackgroundStack, kind: str) -> None:
    """``/versions/1`` answers like the unversioned call; JSON (non-binary) outputs too."""
    model = MODELS["classification"]
    png = scene_png("classification", 3)
    mod = CLIENTS[kind]
    c = client(served, kind)
    inp = make_input(kind, "frame", served, model, [png])
    extra = {"binary_data": False} if kind == "http" else {}
    outs = [mod.InferRequestedOutput("probabilities", **extra)]
    a = c.infer(model, [inp], model_version="1", outputs=outs).as_numpy("probabilities")
    b = c.infer(model, [inp]).as_numpy("probabilities")
    assert np.array_equal(a, b)
    with pytest.raises(InferenceServerException, match="version 2"):
        c.infer(model, [inp], model_version="2")
    c.close()


@pytest.mark.parametrize("kind", ["http", "grpc"])
def test_every_parameter_the_stock_clients_send_is_accepted(
    served: BackgroundStack, kind: str
) -> None:
    """Strict parameters still take what tritonclient sends: sequence, priority, timeout,
    binary data, the classification extension, and the task's own request parameters."""
    model = MODELS["detection"]
    png = scene_png("detection", 2)
    task_parameters = {"score_threshold": 0.05, "max_detections": 100, "class_agnostic_nms": False}
    ref = httpx.post(
        served.http_url + "/detect", content=png, params={"model": model, **task_parameters}
    ).json()
    mod = CLIENTS[kind]
    c = client(served, kind)
    extra = {"binary_data": True} if kind == "http" else {}
    result = c.infer(
        model,
        [make_input(kind, "image", served, model, [png])],
        outputs=[mod.InferRequestedOutput("num_detections", **extra)],
        request_id="r-1",
        sequence_id=7,
        sequence_start=True,
        sequence_end=True,
        priority=1,
        timeout=30_000_000,
        parameters=task_parameters,
    )
    assert result.as_numpy("num_detections").tolist() == [len(ref["detections"])]
    classifier = MODELS["classification"]
    top = c.infer(
        classifier,
        [make_input(kind, "frame", served, classifier, [scene_png("classification", 1)])],
        outputs=[mod.InferRequestedOutput("probabilities", class_count=1, **extra)],
    )
    assert top.as_numpy("probabilities").shape == (1, 1)
    c.close()


@pytest.mark.parametrize("kind", ["http", "grpc"])
def test_health_and_metadata_describe_the_models(served: BackgroundStack, kind: str) -> None:
    c = client(served, kind)
    assert c.is_server_live() and c.is_server_ready()
    meta = c.get_server_metadata()
    extensions = meta["extensions"] if kind == "http" else list(meta.extensions)
    assert {"binary_tensor_data", "classification", "model_repository"} <= set(extensions)
    for task, model in MODELS.items():
        assert c.is_model_ready(model) and c.is_model_ready(model, "1")
        assert not c.is_model_ready(model, "7")
        md = c.get_model_metadata(model, as_json=True) if kind == "grpc" else None
        md = md or c.get_model_metadata(model)
        inputs = {i["name"]: (i["datatype"], [int(d) for d in i["shape"]]) for i in md["inputs"]}
        side = input_side(served, model)
        assert inputs == {
            "image": ("BYTES", [-1]),
            "input": ("FP32", [-1, 3, side, side]),
            "frame": ("UINT8", [-1, -1, -1, 3]),
        }
        outputs = {o["name"]: o["datatype"] for o in md["outputs"]}
        expected = {
            "classification": {"probabilities": "FP32", "class_names": "BYTES"},
            "detection": {
                "boxes": "FP32",
                "scores": "FP32",
                "class_ids": "INT32",
                "labels": "BYTES",
                "num_detections": "INT32",
                "image_size": "INT32",
            },
            "segmentation": {
                "mask": "UINT8",
                "class_shares": "FP32",
                "image_size": "INT32",
                "class_names": "BYTES",
            },
        }[task]
        assert outputs == expected
    assert not c.is_model_ready("no-such-model")
    c.close()


def test_v2_requests_count_in_the_metrics_with_their_protocol(served: BackgroundStack) -> None:
    for kind in ("http", "grpc"):
        c = client(served, kind)
        model = MODELS["classification"]
        c.infer(model, [make_input(kind, "image", served, model, [scene_png("classification", 1)])])
        c.close()
    text = httpx.get(served.http_url + "/metrics").text
    for protocol in ("v2-rest", "v2-grpc"):
        line = next(
            line
            for line in text.splitlines()
            if line.startswith("care_inference_requests_total{")
            and f'protocol="{protocol}"' in line
            and 'outcome="success"' in line
            and "shapes-classifier" in line
        )
        assert float(line.rsplit(" ", 1)[1]) >= 1
        assert any(
            line.startswith("care_inference_queue_duration_seconds_count{")
            and f'protocol="{protocol}"' in line
            for line in text.splitlines()
        )


def test_json_tensors_answer_like_binary_ones(served: BackgroundStack) -> None:
    """tritonclient.http with ``binary_data=False``: JSON data in, JSON data out, same answer."""
    model = MODELS["segmentation"]
    png = scene_png("segmentation", 2, 96)
    c = client(served, "http")
    as_json = thttp.InferInput("frame", [1, 96, 96, 3], "UINT8")
    as_json.set_data_from_numpy(rgb(png)[None], binary_data=False)
    outs = [thttp.InferRequestedOutput(n, binary_data=False) for n in ("mask", "class_shares")]
    by_json = c.infer(model, [as_json], outputs=outs)
    by_binary = c.infer(model, [make_input("http", "frame", served, model, [png])])
    assert np.array_equal(by_json.as_numpy("mask"), by_binary.as_numpy("mask"))
    assert np.array_equal(by_json.as_numpy("class_shares"), by_binary.as_numpy("class_shares"))
    ref = own_api(served, "segmentation", model, png)
    assert np.array_equal(by_json.as_numpy("mask")[0], ref["mask"])
    c.close()


def test_a_request_counts_once_and_each_image_once_per_stage(served: BackgroundStack) -> None:
    model = MODELS["detection"]
    registry = served.stack.registry
    labels = {"model": model, "version": "1", "protocol": "v2-grpc"}

    def sample(name: str, **extra: str) -> float:
        if name == "care_inference_requests_total":
            extra["key"] = ""
        return registry.get_sample_value(name, {**labels, **extra}) or 0.0

    requests0 = sample("care_inference_requests_total", outcome="success")
    stages0 = sample("care_inference_preprocess_duration_seconds_count")
    queued0 = sample("care_inference_queue_duration_seconds_count")
    c = client(served, "grpc")
    pngs = images(served, model, "detection", "image", 3)
    c.infer(model, [make_input("grpc", "image", served, model, pngs)])
    c.close()
    assert sample("care_inference_requests_total", outcome="success") == requests0 + 1
    assert sample("care_inference_preprocess_duration_seconds_count") == stages0 + 3
    assert sample("care_inference_queue_duration_seconds_count") == queued0 + 3


def test_refused_requests_count_with_their_outcome(served: BackgroundStack) -> None:
    model = MODELS["classification"]
    registry = served.stack.registry

    def refused(model_label: str, outcome: str) -> float:
        labels = {"model": model_label, "protocol": "v2-rest", "key": "", "outcome": outcome}
        labels["version"] = "1" if model_label else ""
        return registry.get_sample_value("care_inference_requests_total", labels) or 0.0

    invalid0, unknown0 = refused(model, "invalid_input"), refused("", "not_found")
    c = client(served, "http")
    wrong = thttp.InferInput("pixels", [1], "BYTES")
    wrong.set_data_from_numpy(np.array([b"x"], dtype=object))
    with pytest.raises(InferenceServerException, match="no input 'pixels'"):
        c.infer(model, [wrong])
    with pytest.raises(InferenceServerException, match="not found"):
        c.infer("no-such-model", [wrong])
    c.close()
    assert refused(model, "invalid_input") == invalid0 + 1
    assert refused("", "not_found") == unknown0 + 1
