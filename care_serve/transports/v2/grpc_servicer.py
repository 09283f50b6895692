"""``inference.GRPCInferenceService``: the v2 protocol over gRPC, over ``V2Protocol``.

Inputs come as ``raw_input_contents`` (one entry per input, as tritonclient sends
them) or as typed ``contents``, never mixed in one request. Outputs go back the way
the inputs came: raw as ``raw_output_contents``, typed as ``contents``. Errors:
INVALID_ARGUMENT, NOT_FOUND, UNAVAILABLE (model not ready, queue full),
DEADLINE_EXCEEDED, UNAUTHENTICATED (repository RPCs without the admin token).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import grpc
import numpy as np

from care_serve.errors import (
    CareServeError,
    InvalidInput,
    ModelNotReady,
    PayloadTooLarge,
    ServerBusy,
)
from care_serve.grpc_gen.inference import grpc_service_pb2 as pb
from care_serve.grpc_gen.inference import grpc_service_pb2_grpc as pb_grpc
from care_serve.serving.data_plane import DataPlane
from care_serve.transports.grpc.context import authorization_of, timeout_of
from care_serve.transports.grpc_abort import answer_or_abort
from care_serve.transports.remedies import client_message, v2_grpc_remedy
from care_serve.transports.v2.codec import (
    DATATYPES,
    Tensor,
    check_datatype,
    check_shape,
    from_json_data,
    from_raw,
    to_raw,
)
from care_serve.transports.v2.model_io import CLASSIFICATION_PARAMETER, RequestedOutput
from care_serve.transports.v2.parameters import (
    INPUT_PARAMETERS,
    OUTPUT_PARAMETERS,
    check_parameters,
)
from care_serve.transports.v2.protocol import V2Protocol

__all__ = ["SERVICE_NAME", "V2Servicer"]

T = TypeVar("T")
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name

# datatype -> the typed contents field that carries it (FP16 has none: raw only).
CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def _code(exc: CareServeError) -> grpc.StatusCode:
    if isinstance(exc, ServerBusy | ModelNotReady):
        return grpc.StatusCode.UNAVAILABLE
    if isinstance(exc, InvalidInput):
        return grpc.StatusCode.INVALID_ARGUMENT
    return getattr(grpc.StatusCode, exc.grpc_code, grpc.StatusCode.INTERNAL)


def _status(exc: CareServeError) -> tuple[grpc.StatusCode, str]:
    return _code(exc), client_message(exc, v2_grpc_remedy)


async def _guard(context: grpc.aio.ServicerContext, call: Callable[[], Awaitable[T]]) -> T:
    return await answer_or_abort(context, call, _status, "v2 gRPC")


def _value(param: Any) -> Any:
    choice = param.WhichOneof("parameter_choice")
    return None if choice is None else getattr(param, choice)


def _params(params: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _value(v) for k, v in params.items()}


def _typed_tensor(name: str, datatype: str, shape: tuple[int, ...], contents: Any) -> Tensor:
    field = CONTENTS_FIELD.get(datatype)
    if field is None:
        raise InvalidInput(f"input {name!r}: {datatype} has no typed contents; send it raw")
    values = list(getattr(contents, field))
    if datatype == "BYTES":
        array = np.empty(len(values), dtype=object)
        array[:] = [bytes(v) for v in values]
        count = int(np.prod(shape))
        if len(values) != count:
            raise InvalidInput(
                f"input {name!r}: shape {list(shape)} holds {count} element(s), "
                f"{field} has {len(values)}"
            )
        return Tensor(name, datatype, shape, array.reshape(shape))
    return from_json_data(name, datatype, shape, values)


def parse_inputs(request: Any) -> tuple[list[Tensor], bool]:
    """The request's input tensors and whether they came raw."""
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise InvalidInput(
            f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs"
        )
    tensors = []
    for i, inp in enumerate(request.inputs):
        name = inp.name
        datatype = check_datatype(name, inp.datatype)
        shape = check_shape(name, list(inp.shape))
        if raw:
            if inp.HasField("contents"):
                raise InvalidInput(
                    f"input {name!r} has typed contents while the request uses "
                    "raw_input_contents; use one or the other for every input"
                )
            tensor = from_raw(name, datatype, shape, raw[i])
        elif inp.HasField("contents"):
            tensor = _typed_tensor(name, datatype, shape, inp.contents)
        else:
            raise InvalidInput(f"input {name!r} has no contents and there is no raw data")
        tensor.parameters = _params(inp.parameters)
        check_parameters(f"input {name!r}", tensor.parameters, INPUT_PARAMETERS)
        tensors.append(tensor)
    if not tensors:
        raise InvalidInput("the request has no inputs")
    return tensors, bool(raw)


def parse_outputs(request: Any) -> list[RequestedOutput]:
    requested = []
    for out in request.outputs:
        params = _params(out.parameters)
        check_parameters(f"output {out.name!r}", params, OUTPUT_PARAMETERS)
        k = params.get(CLASSIFICATION_PARAMETER, 0) or 0
        if not isinstance(k, int) or isinstance(k, bool) or k < 0:
            raise InvalidInput(f"{CLASSIFICATION_PARAMETER} of {out.name!r} is a count, got {k!r}")
        requested.append(RequestedOutput(out.name, k))
    return requested


def _fill_typed(message: Any, tensor: Tensor) -> None:
    field = CONTENTS_FIELD[tensor.datatype]
    flat = tensor.data.reshape(-1)
    values = [bytes(v) for v in flat] if tensor.datatype == "BYTES" else flat.tolist()
    getattr(message.contents, field).extend(values)


class V2Servicer(pb_grpc.GRPCInferenceServiceServicer):
    """Thin adapter from the protocol's messages to ``V2Protocol``."""

    def __init__(self, data_plane: DataPlane) -> None:
        self.protocol = V2Protocol(data_plane)

    async def ServerLive(self, request: Any, context: Any) -> Any:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: Any) -> Any:
        return pb.ServerReadyResponse(ready=self.protocol.server_ready())

    async def ModelReady(self, request: Any, context: Any) -> Any:
        return pb.ModelReadyResponse(ready=self.protocol.model_ready(request.name, request.version))

    async def ServerMetadata(self, request: Any, context: Any) -> Any:
        return pb.ServerMetadataResponse(**self.protocol.server_metadata())

    async def ModelMetadata(self, request: Any, context: Any) -> Any:
        async def call() -> dict[str, Any]:
            return self.protocol.model_metadata(request.name, request.version)

        meta = await _guard(context, call)
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=meta["name"],
            versions=meta["versions"],
            platform=meta["platform"],
            inputs=[tensor(**t) for t in meta["inputs"]],
            outputs=[tensor(**t) for t in meta["outputs"]],
        )

    async def ModelInfer(self, request: Any, context: Any) -> Any:
        async def call() -> Any:
            limit = self.protocol.data_plane.settings.max_request_bytes
            size = sum(len(r) for r in request.raw_input_contents)
            if size > limit:
                raise PayloadTooLarge(
                    f"the request's raw_input_contents hold {size} bytes; the limit is {limit} "
                    "bytes (max_request_bytes)"
                )
            inputs, raw = parse_inputs(request)
            served, served_version, outputs = await self.protocol.infer(
                request.model_name,
                request.model_version,
                inputs,
                parse_outputs(request),
                _params(request.parameters),
                protocol="v2-grpc",
                timeout_s=timeout_of(context),
            )
            response = pb.ModelInferResponse(
                model_name=served, model_version=str(served_version), id=request.id
            )
            for tensor in outputs:
                out = response.outputs.add(
                    name=tensor.name, datatype=tensor.datatype, shape=list(tensor.shape)
                )
                if raw:
                    response.raw_output_contents.append(to_raw(tensor))
                else:
                    _fill_typed(out, tensor)
            return response

        return await _guard(context, call)

    async def RepositoryIndex(self, request: Any, context: Any) -> Any:
        async def call() -> list[dict[str, Any]]:
            return self.protocol.repository_index(request.ready)

        index = await _guard(context, call)
        entry = pb.RepositoryIndexResponse.ModelIndex
        return pb.RepositoryIndexResponse(models=[entry(**m) for m in index])

    async def RepositoryModelLoad(self, request: Any, context: Any) -> Any:
        async def call() -> None:
            await self.protocol.load(
                request.model_name, _params(request.parameters), authorization_of(context)
            )

        await _guard(context, call)
        return pb.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(self, request: Any, context: Any) -> Any:
        async def call() -> None:
            await self.protocol.unload(
                request.model_name, _params(request.parameters), authorization_of(context)
            )

        await _guard(context, call)
        return pb.RepositoryModelUnloadResponse()


assert set(CONTENTS_FIELD) | {"FP16"} == set(DATATYPES) | {"BYTES"}
