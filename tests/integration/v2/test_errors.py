"""Malformed and wrong v2 requests get protocol errors that say what is accepted, never a 500."""

from __future__ import annotations

import asyncio
import base64
import json
import struct
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
from tritonclient.grpc import service_pb2 as tpb
from tritonclient.grpc import service_pb2_grpc as tpb_grpc

from care_serve.errors import (
    CareServeError,
    DeadlineExceeded,
    InvalidInput,
    ModelNotReady,
    NotFound,
    ServerBusy,
)
from care_serve.server import BackgroundStack
from care_serve.transports.v2 import grpc_servicer as v2_grpc
from care_serve.transports.v2 import rest as v2_rest
from tests.helpers.stacks import BUNDLED_MODELS as MODELS
from tests.helpers.v2 import own_api, rgb, scene_png

CLS = MODELS["classification"]
HEADER = "Inference-Header-Content-Length"


def post(
    served: BackgroundStack,
    doc: Any,
    binary: bytes = b"",
    *,
    model: str = CLS,
    header: str | None = None,
    raw_json: bytes | None = None,
    path: str = "",
) -> httpx.Response:
    head = raw_json if raw_json is not None else json.dumps(doc).encode()
    headers = {"Content-Type": "application/octet-stream"}
    if binary or header is not None:
        headers[HEADER] = header if header is not None else str(len(head))
    url = f"{served.http_url}/v2/models/{model}{path}/infer"
    return httpx.post(url, content=head + binary, headers=headers, timeout=60)


def error_of(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and isinstance(body["error"], str)
    return str(body["error"])


def binary_input(name: str, datatype: str, shape: list[int], size: int) -> dict[str, Any]:
    return {
        "inputs": [
            {
                "name": name,
                "datatype": datatype,
                "shape": shape,
                "parameters": {"binary_data_size": size},
            }
        ]
    }


def bytes_element(data: bytes) -> bytes:
    return struct.pack("<I", len(data)) + data


def test_bad_json_is_a_400(served: BackgroundStack) -> None:
    assert "cannot be parsed" in error_of(post(served, None, raw_json=b"{not json"), 400)
    assert "JSON object" in error_of(post(served, [1, 2]), 400)
    assert "'inputs'" in error_of(post(served, {"outputs": []}), 400)


def test_header_length_past_the_body_is_a_400(served: BackgroundStack) -> None:
    doc = json.dumps({"inputs": []}).encode()
    message = error_of(post(served, None, raw_json=doc, header=str(len(doc) + 100)), 400)
    assert HEADER in message and "only" in message
    assert HEADER in error_of(post(served, None, raw_json=doc, header="12x"), 400)
    # A header length inside the JSON cuts it: a parse error naming the header.
    assert HEADER in error_of(post(served, None, raw_json=doc, header="3"), 400)


def test_byte_counts_that_do_not_match_the_shape_are_400s(served: BackgroundStack) -> None:
    message = error_of(
        post(served, binary_input("input", "FP32", [1, 3, 320, 320], 12), b"\0" * 12), 400
    )
    assert f"needs {320 * 320 * 3 * 4} bytes, got 12" in message
    # binary_data_size larger than the binary part
    message = error_of(
        post(served, binary_input("frame", "UINT8", [1, 2, 2, 3], 12), b"\0" * 5), 400
    )
    assert "claims 12 bytes" in message
    # binary bytes left over after the inputs
    message = error_of(
        post(served, binary_input("frame", "UINT8", [1, 2, 2, 3], 12), b"\0" * 20), 400
    )
    assert "add up to 12" in message
    # a BYTES element whose length prefix runs past the data
    bad = struct.pack("<I", 1000) + b"abc"
    assert "claims 1000 bytes" in error_of(
        post(served, binary_input("image", "BYTES", [1], len(bad)), bad), 400
    )
    # fewer BYTES elements than the shape holds
    one = bytes_element(b"x")
    assert "holds 2 BYTES" in error_of(
        post(served, binary_input("image", "BYTES", [2], len(one)), one), 400
    )
    # JSON data of the wrong length or type
    doc = {
        "inputs": [{"name": "frame", "datatype": "UINT8", "shape": [1, 2, 2, 3], "data": [1, 2]}]
    }
    assert "holds 12 element(s), data has 2" in error_of(post(served, doc), 400)
    doc["inputs"][0]["data"] = ["a"] * 12
    assert "UINT8 numbers" in error_of(post(served, doc), 400)
    doc["inputs"][0]["data"] = [300] * 12
    assert "[0, 255]" in error_of(post(served, doc), 400)


def test_unknown_datatypes_and_bad_shapes_are_400s(served: BackgroundStack) -> None:
    doc = {"inputs": [{"name": "input", "datatype": "FP128", "shape": [1], "data": [1.0]}]}
    message = error_of(post(served, doc), 400)
    assert "unknown datatype 'FP128'" in message and "FP32" in message
    doc = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 3], "data": [1.0]}]}
    assert "non-negative integers" in error_of(post(served, doc), 400)


def test_mixed_binary_and_json_data_is_a_400(served: BackgroundStack) -> None:
    doc = binary_input("frame", "UINT8", [1, 2, 2, 3], 12)
    doc["inputs"][0]["data"] = [0] * 12
    assert "both JSON 'data' and binary data" in error_of(post(served, doc, b"\0" * 12), 400)
    doc = {"inputs": [{"name": "frame", "datatype": "UINT8", "shape": [1, 2, 2, 3]}]}
    assert "neither 'data' nor" in error_of(post(served, doc), 400)


def test_wrong_input_name_datatype_or_shape_says_what_the_model_accepts(
    served: BackgroundStack,
) -> None:
    accepted = "image BYTES [-1]; input FP32 [-1, 3, 320, 320]; frame UINT8 [-1, -1, -1, 3]"
    frame = b"\0" * 12
    cases = [
        binary_input("pixels", "UINT8", [1, 2, 2, 3], 12),  # name
        binary_input("frame", "FP32", [1, 1, 1, 3], 12),  # datatype
        binary_input("frame", "UINT8", [1, 2, 6], 12),  # shape
    ]
    for doc in cases:
        assert accepted in error_of(post(served, doc, frame), 400)
    doc = {
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3, 2, 2], "data": [0.0] * 12}]
    }
    message = error_of(post(served, doc), 400)
    assert "must be FP32 [-1, 3, 320, 320], got FP32 [1, 3, 2, 2]" in message
    two = {"inputs": [doc["inputs"][0], doc["inputs"][0]]}
    assert "exactly one input tensor, got 2" in error_of(post(served, two), 400)


def test_bad_images_frames_and_tensors_are_400s(served: BackgroundStack) -> None:
    corrupt = scene_png("classification", 0)[:200]
    r = httpx.post(served.http_url + "/classify", content=corrupt, params={"model": CLS})
    own = r.json()["error"]["message"]
    element = bytes_element(corrupt)
    v2 = error_of(post(served, binary_input("image", "BYTES", [1], len(element)), element), 400)
    assert v2 == own  # the same decoding and the same error as /classify
    empty = binary_input("frame", "UINT8", [1, 0, 4, 3], 0)
    assert "must not be empty" in error_of(post(served, empty), 400)
    nan = np.full((1, 3, 320, 320), np.nan, np.float32).tobytes()
    doc = binary_input("input", "FP32", [1, 3, 320, 320], len(nan))
    assert "NaN" in error_of(post(served, doc, nan), 400)
    too_many = bytes_element(b"x") * 65
    doc = binary_input("image", "BYTES", [65], len(too_many))
    assert "1 to 64 images" in error_of(post(served, doc, too_many), 400)


def test_unknown_models_versions_and_outputs(served: BackgroundStack) -> None:
    frame = rgb(scene_png("classification", 0)).tobytes()
    doc = binary_input(
        "frame", "UINT8", [1, *rgb(scene_png("classification", 0)).shape], len(frame)
    )
    assert "not found" in error_of(post(served, doc, frame, model="nope"), 404)
    assert "version 3" in error_of(post(served, doc, frame, path="/versions/3"), 404)
    assert "positive integer" in error_of(post(served, doc, frame, path="/versions/x"), 400)
    doc["outputs"] = [{"name": "logits"}]
    assert "outputs: probabilities, class_names" in error_of(post(served, doc, frame), 400)
    doc["outputs"] = [{"name": "class_names", "parameters": {"classification": 2}}]
    assert "applies to the 'probabilities'" in error_of(post(served, doc, frame), 400)
    assert "not found" in error_of(httpx.get(f"{served.http_url}/v2/models/nope"), 404)
    assert "version 9" in error_of(httpx.get(f"{served.http_url}/v2/models/{CLS}/versions/9"), 404)
    det = MODELS["detection"]
    doc = {**doc, "outputs": [], "parameters": {"max_detections": 500}}
    assert "at most 100" in error_of(post(served, doc, frame, model=det), 400)


def test_detection_parameters_reach_the_task(served: BackgroundStack) -> None:
    png = scene_png("detection", 4)
    frame = rgb(png)
    raw = frame.tobytes()
    doc = binary_input("frame", "UINT8", [1, *frame.shape], len(raw))

    def same_count_as_detect(parameters: dict[str, Any]) -> None:
        doc["parameters"] = parameters
        r = post(served, doc, raw, model=MODELS["detection"])
        assert r.status_code == 200, r.text
        head = json.loads(r.content[: int(r.headers[HEADER])]) if HEADER in r.headers else r.json()
        ref = httpx.post(
            served.http_url + "/detect",
            content=png,
            params={"model": MODELS["detection"], **parameters},
        ).json()
        counts = next(o for o in head["outputs"] if o["name"] == "num_detections")
        assert counts["data"] == [len(ref["detections"])], parameters

    same_count_as_detect({"score_threshold": 0.9, "max_detections": 2})
    same_count_as_detect({"score_threshold": 0.05, "class_agnostic_nms": False})
    same_count_as_detect({"score_threshold": 0.05, "class_agnostic_nms": True})
    for bad in ("score_threshold", "class_agnostic_nms"):
        doc["parameters"] = {bad: 2 if bad == "score_threshold" else "maybe"}
        assert bad in error_of(post(served, doc, raw, model=MODELS["detection"]), 400)


# -- gRPC ---------------------------------------------------------------------------------
def stub(served: BackgroundStack) -> Any:
    return tpb_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(served.grpc_target))


def grpc_error(call: Any, request: Any, code: grpc.StatusCode) -> str:
    with pytest.raises(grpc.RpcError) as info:
        call(request, timeout=30)
    assert info.value.code() == code, info.value.details()
    return str(info.value.details())


def frame_request(frame: np.ndarray, model: str = CLS, raw: bool = True) -> Any:
    request = tpb.ModelInferRequest(model_name=model)
    tensor = request.inputs.add(name="frame", datatype="UINT8", shape=[1, *frame.shape])
    if raw:
        request.raw_input_contents.append(frame.tobytes())
    else:
        tensor.contents.uint_contents.extend(frame.reshape(-1).tolist())
    return request


def test_grpc_errors_have_the_protocol_codes(served: BackgroundStack) -> None:
    s = stub(served)
    frame = rgb(scene_png("classification", 1))
    bad = frame_request(frame)
    bad.inputs[0].datatype = "FP128"
    assert "unknown datatype" in grpc_error(s.ModelInfer, bad, grpc.StatusCode.INVALID_ARGUMENT)
    short = frame_request(frame)
    short.raw_input_contents[0] = b"\0" * 10
    message = grpc_error(s.ModelInfer, short, grpc.StatusCode.INVALID_ARGUMENT)
    assert f"needs {frame.size} bytes, got 10" in message
    mixed = frame_request(frame)
    mixed.inputs[0].contents.uint_contents.append(1)
    assert "one or the other" in grpc_error(s.ModelInfer, mixed, grpc.StatusCode.INVALID_ARGUMENT)
    extra = frame_request(frame)
    extra.raw_input_contents.append(b"")
    assert "2 entries for 1 inputs" in grpc_error(
        s.ModelInfer, extra, grpc.StatusCode.INVALID_ARGUMENT
    )
    wrong = frame_request(frame)
    wrong.inputs[0].name = "pixels"
    assert "accepted: image BYTES" in grpc_error(
        s.ModelInfer, wrong, grpc.StatusCode.INVALID_ARGUMENT
    )
    assert "not found" in grpc_error(
        s.ModelInfer, frame_request(frame, model="nope"), grpc.StatusCode.NOT_FOUND
    )
    assert "not found" in grpc_error(
        s.ModelMetadata, tpb.ModelMetadataRequest(name="nope"), grpc.StatusCode.NOT_FOUND
    )
    unknown_out = frame_request(frame)
    unknown_out.outputs.add(name="logits")
    assert "no output 'logits'" in grpc_error(
        s.ModelInfer, unknown_out, grpc.StatusCode.INVALID_ARGUMENT
    )


def test_grpc_typed_contents_answer_typed_contents(served: BackgroundStack) -> None:
    """Typed ``contents`` in, typed ``contents`` out; equal to the raw answer and to /classify."""
    s = stub(served)
    png = scene_png("classification", 2, 64)
    frame = rgb(png)
    typed = s.ModelInfer(frame_request(frame, raw=False), timeout=30)
    raw = s.ModelInfer(frame_request(frame), timeout=30)
    assert not typed.raw_output_contents and len(raw.raw_output_contents) == 2
    probs = np.asarray(typed.outputs[0].contents.fp32_contents, np.float32)
    assert np.array_equal(probs, np.frombuffer(raw.raw_output_contents[0], np.float32))
    ref = own_api(served, "classification", CLS, png)
    for p in ref["predictions"]:
        assert abs(probs[p["class_id"]] - p["probability"]) <= 1e-6
    assert list(typed.outputs[1].contents.bytes_contents) == [b"circle", b"square", b"triangle"]


def test_cut_and_corrupted_requests_never_get_a_500(served: BackgroundStack) -> None:
    """A valid binary request cut at many points, or with a wrong header, is a 400."""
    element = bytes_element(scene_png("classification", 3))
    head = json.dumps(binary_input("image", "BYTES", [1], len(element))).encode()
    body = head + element
    assert post(served, None, element, raw_json=head).status_code == 200
    rng = np.random.default_rng(0)
    cuts = sorted({1, len(head) - 1, len(head), len(head) + 3, *rng.integers(1, len(body), 12)})
    for cut in cuts:
        r = post(served, None, raw_json=body[:cut], header=str(min(len(head), cut)))
        assert r.status_code == 400, (cut, r.text)
        assert isinstance(r.json()["error"], str)
    for header in ("0", str(len(head) - 5), str(len(head) + 4), "-1", "x", "1e3"):
        r = post(served, None, raw_json=body, header=header)
        assert r.status_code == 400, (header, r.text)
    noisy = bytearray(body)
    for i in rng.integers(len(head) + 4, len(body), 40):
        noisy[i] ^= 0xFF
    r = post(served, None, raw_json=bytes(noisy), header=str(len(head)))
    assert r.status_code in (200, 400), r.text


def test_request_deadlines_apply_to_v2(served: BackgroundStack) -> None:
    element = bytes_element(scene_png("classification", 6))
    doc = binary_input("image", "BYTES", [1], len(element))
    head = json.dumps(doc).encode()
    url = f"{served.http_url}/v2/models/{CLS}/infer"

    def call(timeout_ms: str) -> httpx.Response:
        headers = {HEADER: str(len(head)), "X-Request-Timeout-Ms": timeout_ms}
        return httpx.post(url, content=head + element, headers=headers, timeout=60)

    assert call("60000").status_code == 200
    assert "deadline" in error_of(call("0.001"), 504)
    assert "positive" in error_of(call("-5"), 400)
    assert "must be a number" in error_of(call("soon"), 400)


def test_the_openapi_document_covers_the_v2_routes(served: BackgroundStack) -> None:
    doc = httpx.get(served.http_url + "/openapi.json").json()
    paths = doc["paths"]
    for path in (
        "/v2",
        "/v2/health/live",
        "/v2/health/ready",
        "/v2/models/{name}",
        "/v2/models/{name}/versions/{version}",
        "/v2/models/{name}/ready",
        "/v2/models/{name}/versions/{version}/ready",
        "/v2/models/{name}/infer",
        "/v2/models/{name}/versions/{version}/infer",
        "/v2/repository/index",
        "/v2/repository/models/{name}/load",
        "/v2/repository/models/{name}/unload",
    ):
        assert path in paths, path
    body = paths["/v2/models/{name}/infer"]["post"]["requestBody"]["content"]
    assert {"application/json", "application/octet-stream"} <= set(body)


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (ServerBusy("queue full"), 503, grpc.StatusCode.UNAVAILABLE),
        (ModelNotReady("loading"), 503, grpc.StatusCode.UNAVAILABLE),
        (NotFound("no such model"), 404, grpc.StatusCode.NOT_FOUND),
        (InvalidInput("bad tensor"), 400, grpc.StatusCode.INVALID_ARGUMENT),
        (DeadlineExceeded("late"), 504, grpc.StatusCode.DEADLINE_EXCEEDED),
    ],
)
def test_data_plane_errors_map_to_the_protocols_codes(
    error: CareServeError, status: int, code: grpc.StatusCode
) -> None:
    """Queue full and not-ready are 503 + Retry-After over REST and UNAVAILABLE over gRPC."""

    async def fail() -> Any:
        raise error

    response = asyncio.run(v2_rest._answer(fail))
    assert response.status_code == status
    assert json.loads(bytes(response.body)) == {"error": error.message}
    assert ("retry-after" in response.headers) == (status == 503)
    assert v2_grpc._code(error) == code


# -- strict parameters ------------------------------------------------------------------
def frame_doc() -> tuple[dict[str, Any], bytes]:
    frame = rgb(scene_png("classification", 0, 64))
    raw = frame.tobytes()
    return binary_input("frame", "UINT8", [1, *frame.shape], len(raw)), raw


def test_unknown_rest_parameters_are_named_with_the_accepted_ones(served: BackgroundStack) -> None:
    doc, raw = frame_doc()
    doc["parameters"] = {"top_k": 3}
    message = error_of(post(served, doc, raw), 400)
    assert "does not take the request parameter 'top_k'" in message
    for accepted in ("binary_data_output", "timeout", "priority", "sequence_id"):
        assert accepted in message.split("accepted:")[1], message
    doc["parameters"] = {"score_treshold": 0.5}
    message = error_of(post(served, doc, raw, model=MODELS["detection"]), 400)
    assert "'score_treshold'" in message
    assert "score_threshold" in message.split("accepted:")[1], message
    assert "max_detections" in message.split("accepted:")[1], message

    doc, raw = frame_doc()
    doc["inputs"][0]["parameters"]["layout"] = "NHWC"
    message = error_of(post(served, doc, raw), 400)
    assert "input 'frame' does not take the parameter 'layout'" in message
    assert "(accepted: binary_data_size, content_type)" in message
    doc, raw = frame_doc()
    doc["inputs"][0]["parameters"]["shared_memory_region"] = "r"
    assert "shared memory" in error_of(post(served, doc, raw), 400)

    doc, raw = frame_doc()
    doc["outputs"] = [{"name": "probabilities", "parameters": {"binary": True}}]
    message = error_of(post(served, doc, raw), 400)
    assert "output 'probabilities' does not take the parameter 'binary'" in message
    assert "accepted: binary_data, classification, content_type" in message


def test_unknown_grpc_parameters_are_invalid_arguments(served: BackgroundStack) -> None:
    s = stub(served)
    frame = rgb(scene_png("classification", 1, 64))
    request = frame_request(frame)
    request.parameters["top_k"].int64_param = 3
    message = grpc_error(s.ModelInfer, request, grpc.StatusCode.INVALID_ARGUMENT)
    assert "'top_k'" in message and "priority" in message.split("accepted:")[1]
    request = frame_request(frame)
    request.inputs[0].parameters["layout"].string_param = "NHWC"
    message = grpc_error(s.ModelInfer, request, grpc.StatusCode.INVALID_ARGUMENT)
    assert "input 'frame' does not take the parameter 'layout'" in message
    request = frame_request(frame)
    request.outputs.add(name="probabilities").parameters["top"].int64_param = 1
    message = grpc_error(s.ModelInfer, request, grpc.StatusCode.INVALID_ARGUMENT)
    assert "output 'probabilities' does not take the parameter 'top'" in message


# -- base64 in JSON: what people try first with curl -----------------------------------
def test_base64_images_in_json_get_told_how_to_send_an_image(served: BackgroundStack) -> None:
    png = scene_png("classification", 2, 64)
    for text in (
        base64.b64encode(png).decode(),
        "data:image/png;base64," + base64.b64encode(png).decode(),
        base64.encodebytes(png).decode(),  # wrapped at 76 characters, as base64(1) writes it
    ):
        doc = {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": [text]}]}
        message = error_of(post(served, doc), 400)
        assert "base64" in message and "raw" in message, message
        assert HEADER in message and "binary_data_size" in message, message
        assert "'frame' UINT8" in message and "'input' FP32" in message, message
    not_base64 = {
        "inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": ["cat.jpg"]}]
    }
    assert "not an image in an accepted format" in error_of(post(served, not_base64), 400)


def test_base64_images_over_grpc_get_told_to_send_the_bytes(served: BackgroundStack) -> None:
    png = scene_png("classification", 2, 64)
    request = tpb.ModelInferRequest(model_name=CLS)
    tensor = request.inputs.add(name="image", datatype="BYTES", shape=[1])
    tensor.contents.bytes_contents.append(base64.b64encode(png))
    message = grpc_error(stub(served).ModelInfer, request, grpc.StatusCode.INVALID_ARGUMENT)
    assert "base64" in message and "raw_input_contents" in message, message


def test_an_image_sent_without_its_length_prefix_is_told_the_layout(
    served: BackgroundStack,
) -> None:
    """The binary extension's BYTES elements carry a 4-byte length; a bare file says so."""
    png = scene_png("classification", 2, 64)
    message = error_of(post(served, binary_input("image", "BYTES", [1], len(png)), png), 400)
    assert "length as 4 little-endian bytes" in message, message
    assert f"binary_data_size {len(png) + 4}" in message, message
