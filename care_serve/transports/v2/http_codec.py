"""The v2 REST body: JSON tensors plus Triton's binary tensor data extension.

A request body is a JSON object, optionally followed by binary tensor data; the
``Inference-Header-Content-Length`` header then gives the JSON part's length. An
input with the parameter ``binary_data_size`` takes that many bytes of the binary
part (inputs in order, and together they use it exactly); an input without it has
a ``data`` field. Outputs go back as binary when the requested output has
``binary_data: true``, or when the request has ``binary_data_output: true`` and the
output does not say otherwise; the response then carries the same header.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from care_serve.errors import InvalidInput
from care_serve.transports.v2.codec import (
    Tensor,
    check_datatype,
    check_shape,
    from_json_data,
    from_raw,
    to_json_data,
    to_raw,
)
from care_serve.transports.v2.model_io import CLASSIFICATION_PARAMETER, RequestedOutput
from care_serve.transports.v2.parameters import (
    INPUT_PARAMETERS,
    OUTPUT_PARAMETERS,
    check_parameters,
)

__all__ = [
    "HEADER_LENGTH",
    "InferRequest",
    "encode_response",
    "parse_request",
]

HEADER_LENGTH = "Inference-Header-Content-Length"
BINARY_SIZE = "binary_data_size"


@dataclass
class InferRequest:
    """A parsed v2 inference request."""

    id: str | None
    inputs: list[Tensor]
    requested: list[RequestedOutput]
    parameters: dict[str, Any]
    binary: dict[str, bool] = field(default_factory=dict)  # output name -> binary or not
    binary_default: bool = False


def _object(value: object, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidInput(f"{what} must be a JSON object, got {type(value).__name__}")
    return value


def _header_length(header: str | None, body_size: int) -> int:
    if header is None:
        return body_size
    text = header.strip()
    if not text.isdigit():
        raise InvalidInput(f"{HEADER_LENGTH} must be a non-negative integer, got {header!r}")
    length = int(text)
    if length > body_size:
        raise InvalidInput(f"{HEADER_LENGTH} is {length} but the body has only {body_size} bytes")
    return length


def _positive_int(value: object, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InvalidInput(f"{what} must be a non-negative integer, got {value!r}")
    return value


def parse_request(body: bytes, header: str | None) -> InferRequest:
    """Parse an inference request body (``InvalidInput`` on anything malformed)."""
    length = _header_length(header, len(body))
    try:
        doc = json.loads(body[:length])
    except (UnicodeDecodeError, ValueError) as exc:
        hint = f" (is {HEADER_LENGTH} right?)" if header is not None else ""
        raise InvalidInput(f"the request's JSON cannot be parsed: {exc}{hint}") from None
    doc = _object(doc, "the request")
    binary = memoryview(body)[length:]
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise InvalidInput("the request needs an 'inputs' list with at least one tensor")
    inputs: list[Tensor] = []
    offset = 0
    for i, item in enumerate(raw_inputs):
        item = _object(item, f"inputs[{i}]")
        name = item.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidInput(f"inputs[{i}] needs a 'name' string")
        datatype = check_datatype(name, item.get("datatype"))
        shape = check_shape(name, item.get("shape"))
        params = _object(item.get("parameters"), f"parameters of input {name!r}")
        check_parameters(f"input {name!r}", params, INPUT_PARAMETERS)
        has_data = "data" in item
        if BINARY_SIZE in params:
            if has_data:
                raise InvalidInput(
                    f"input {name!r} has both JSON 'data' and binary data ({BINARY_SIZE}); send one"
                )
            size = _positive_int(params[BINARY_SIZE], f"{BINARY_SIZE} of input {name!r}")
            if offset + size > len(binary):
                raise InvalidInput(
                    f"input {name!r} claims {size} bytes of binary data at offset {offset}, "
                    f"but the binary part of the body has {len(binary)} bytes"
                )
            tensor = from_raw(name, datatype, shape, binary[offset : offset + size])
            offset += size
        elif has_data:
            tensor = from_json_data(name, datatype, shape, item["data"])
        else:
            raise InvalidInput(f"input {name!r} has neither 'data' nor '{BINARY_SIZE}'")
        tensor.parameters = params
        inputs.append(tensor)
    if offset != len(binary):
        raise InvalidInput(
            f"the body has {len(binary)} bytes of binary data but the inputs' "
            f"{BINARY_SIZE} add up to {offset}"
        )
    parameters = _object(doc.get("parameters"), "the request's parameters")
    request = InferRequest(
        id=str(doc["id"]) if doc.get("id") is not None else None,
        inputs=inputs,
        requested=[],
        parameters=parameters,
        binary_default=parameters.get("binary_data_output") is True,
    )
    raw_outputs = doc.get("outputs") or []
    if not isinstance(raw_outputs, list):
        raise InvalidInput("'outputs' must be a list")
    for i, item in enumerate(raw_outputs):
        item = _object(item, f"outputs[{i}]")
        name = item.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidInput(f"outputs[{i}] needs a 'name' string")
        params = _object(item.get("parameters"), f"parameters of output {name!r}")
        check_parameters(f"output {name!r}", params, OUTPUT_PARAMETERS)
        k = params.get(CLASSIFICATION_PARAMETER, 0)
        request.requested.append(
            RequestedOutput(name, _positive_int(k, f"{CLASSIFICATION_PARAMETER} of {name!r}"))
        )
        if "binary_data" in params:
            if not isinstance(params["binary_data"], bool):
                raise InvalidInput(f"binary_data of output {name!r} must be true or false")
            request.binary[name] = params["binary_data"]
    return request


def encode_response(
    model_name: str, model_version: int, request: InferRequest, outputs: list[Tensor]
) -> tuple[bytes, int | None]:
    """The response body and, when it carries binary data, the JSON part's length."""
    chunks: list[bytes] = []
    described = []
    for tensor in outputs:
        entry: dict[str, Any] = {
            "name": tensor.name,
            "datatype": tensor.datatype,
            "shape": list(tensor.shape),
        }
        if request.binary.get(tensor.name, request.binary_default):
            raw = to_raw(tensor)
            entry["parameters"] = {BINARY_SIZE: len(raw)}
            chunks.append(raw)
        else:
            entry["data"] = to_json_data(tensor)
        described.append(entry)
    doc: dict[str, Any] = {
        "model_name": model_name,
        "model_version": str(model_version),
        "outputs": described,
    }
    if request.id is not None:
        doc["id"] = request.id
    header = json.dumps(doc, separators=(",", ":")).encode()
    if not chunks:
        return header, None
    return header + b"".join(chunks), len(header)
