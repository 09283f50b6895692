"""What each care-serve model accepts and answers over the v2 protocol.

Inputs (a request sends exactly one of them; the first dimension is the images):

- ``image``  ``BYTES [-1]``: encoded images, decoded and checked as ``/classify`` does;
- ``input``  ``FP32 [-1, 3, H, W]``: normalised network inputs at the model's size;
- ``frame``  ``UINT8 [-1, -1, -1, 3]``: RGB frames of any size (resized and normalised).

Outputs are the task's own (``Task.v2_outputs``); for the bundled tasks
(``D`` = the detector's ``max_detections``, ``K`` = classes):

- classification: ``probabilities FP32 [-1, K]`` (Triton's classification extension:
  the output parameter ``classification: k`` answers ``BYTES [-1, k]``
  ``"score:index:label"``, best first), ``class_names BYTES [K]``;
- detection: ``boxes FP32 [-1, D, 4]`` (x1, y1, x2, y2 in pixels of the image sent),
  ``scores FP32 [-1, D]``, ``class_ids INT32 [-1, D]`` (-1 past the count),
  ``labels BYTES [-1, D]`` ("" past the count), ``num_detections INT32 [-1]``,
  ``image_size INT32 [-1, 2]`` (height, width);
- segmentation: ``mask UINT8 [-1, -1, -1]`` (UINT16 above 256 classes; class indices at
  the size of the image sent; in a batch of differently sized images each mask sits at
  the top left of the largest size, padded with 0, see ``image_size``),
  ``class_shares FP32 [-1, K]``, ``image_size INT32 [-1, 2]``, ``class_names BYTES [K]``.

Images sent as ``input`` tensors have no other size: boxes and masks are in network
input pixels.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image
from pydantic import BaseModel

from care_serve.errors import InvalidInput
from care_serve.imaging.inputs import EncodedImage, ImageInput, InputTensor, RgbFrame
from care_serve.serving.loader import LoadedModel
from care_serve.tasks.base import InferenceResult, TensorSpec
from care_serve.tasks.wire import strings_tensor
from care_serve.transports.v2.codec import Tensor

__all__ = [
    "CLASSIFICATION_PARAMETER",
    "FRAME_INPUT",
    "IMAGE_INPUT",
    "RequestedOutput",
    "TensorSpec",
    "build_outputs",
    "check_requested",
    "image_inputs",
    "input_specs",
    "output_specs",
    "task_params",
    "tensor_images",
]

IMAGE_INPUT, TENSOR_INPUT, FRAME_INPUT = "image", "input", "frame"
CLASSIFICATION_PARAMETER = "classification"
# Base64 text (standard or URL-safe alphabet, optionally wrapped in lines and padded),
# after an optional ``data:<type>;base64,`` prefix.
_DATA_URL = re.compile(rb"^data:[\w.+/-]*;base64,")
_BASE64 = re.compile(rb"^[A-Za-z0-9+/_-]+={0,2}$")
_MIN_BASE64 = 16  # characters: shorter text is no image anyway


@dataclass(frozen=True)
class RequestedOutput:
    """An output a request asks for; ``classification`` > 0 asks for the top-k strings."""

    name: str
    classification: int = 0


def input_specs(model: LoadedModel) -> list[TensorSpec]:
    """The inputs ``model`` accepts (a request sends exactly one)."""
    inp = model.manifest.input
    return [
        TensorSpec(IMAGE_INPUT, "BYTES", (-1,)),
        TensorSpec(TENSOR_INPUT, "FP32", (-1, 3, inp.height, inp.width)),
        TensorSpec(FRAME_INPUT, "UINT8", (-1, -1, -1, 3)),
    ]


def output_specs(model: LoadedModel) -> list[TensorSpec]:
    """The outputs ``model`` answers: its task's."""
    return model.task.v2_outputs()


def base64_image_format(element: bytes) -> str | None:
    """The image format of ``element`` when it is base64 text of an image (else None).

    Cheap for real images: their first byte is not ASCII text (PNG, JPEG, GIF's ``G`` is,
    but a GIF header is not base64), so only text gets decoded.
    """
    if len(element) < _MIN_BASE64 or not element[:64].isascii() or not element.isascii():
        return None
    text = _DATA_URL.sub(b"", element.strip(), count=1)
    text = b"".join(text.split())  # base64(1) wraps its lines
    if not _BASE64.match(text):
        return None
    try:
        decoded = base64.b64decode(text.replace(b"-", b"+").replace(b"_", b"/") + b"==")
    except (binascii.Error, ValueError):
        return None
    try:
        with Image.open(io.BytesIO(decoded)) as image:
            return image.format
    except Exception:  # not an image under the base64: let decoding say what is wrong
        return None


def _base64_error(fmt: str, protocol: str) -> InvalidInput:
    if protocol == "v2-grpc":
        elements = "BYTES elements are taken as they are, never base64-decoded"
        how = (
            "Put the file's bytes themselves in raw_input_contents (what tritonclient sends, "
            "each BYTES element preceded by its length as 4 little-endian bytes) or in "
            "bytes_contents"
        )
    else:
        elements = "JSON BYTES elements are raw strings (their UTF-8 bytes), never base64-decoded"
        how = (
            "Send the file with the binary tensor data extension instead: the body is the "
            "JSON header, then the file's length as 4 little-endian bytes, then the file; the "
            "header Inference-Header-Content-Length gives the JSON's length and the input's "
            'parameters {"binary_data_size": <4 + file size>} (docs/api.md, "v2 with curl")'
        )
    return InvalidInput(
        f"input 'image' holds base64 text of a {fmt} image, but {elements}. {how}. Or send "
        "the pixels as a JSON tensor: 'frame' UINT8 [1, H, W, 3] (RGB) or 'input' FP32 "
        "[1, 3, H, W] (normalised)"
    )


def image_inputs(
    model: LoadedModel, inputs: Sequence[Tensor], protocol: str = "v2-rest"
) -> list[ImageInput]:
    """The images of a request's input tensors, or ``InvalidInput`` saying what is accepted."""
    return tensor_images(f"model {model.name}", input_specs(model), inputs, protocol)


def tensor_images(
    what: str, specs: Sequence[TensorSpec], inputs: Sequence[Tensor], protocol: str
) -> list[ImageInput]:
    """The images of the one input tensor of a request to ``what`` that takes ``specs``."""
    accepted = "; ".join(s.describe() for s in specs)
    if len(inputs) != 1:
        raise InvalidInput(
            f"{what} takes exactly one input tensor, got {len(inputs)} (accepted: {accepted})"
        )
    tensor = inputs[0]
    spec = {s.name: s for s in specs}.get(tensor.name)
    if spec is None:
        raise InvalidInput(f"{what} has no input {tensor.name!r} (accepted: {accepted})")
    shape_ok = len(tensor.shape) == len(spec.shape) and all(
        want in (-1, got) for want, got in zip(spec.shape, tensor.shape, strict=True)
    )
    if tensor.datatype != spec.datatype or not shape_ok:
        raise InvalidInput(
            f"input {tensor.name!r} of {what} must be {spec.datatype} "
            f"{list(spec.shape)}, got {tensor.datatype} {list(tensor.shape)} "
            f"(accepted: {accepted})"
        )
    if tensor.name == IMAGE_INPUT:
        elements = [bytes(e) for e in tensor.data.reshape(-1)]
        for element in elements:
            fmt = base64_image_format(element)
            if fmt is not None:
                raise _base64_error(fmt, protocol)
        return [EncodedImage(e) for e in elements]
    if tensor.name == TENSOR_INPUT:
        return [InputTensor(np.asarray(a, dtype=np.float32)) for a in tensor.data]
    return [RgbFrame(np.asarray(f, dtype=np.uint8)) for f in tensor.data]


def task_params(model: LoadedModel, parameters: Mapping[str, Any]) -> Mapping[str, Any] | BaseModel:
    """The task parameters of a v2 request (``parameters`` of the request)."""
    return model.task.v2_params(parameters)


def _top_k_strings(probs: np.ndarray, labels: Sequence[str], k: int) -> np.ndarray:
    """Triton's classification output: ``"score:index:label"``, best first."""
    rows = []
    for row in probs:
        order = np.lexsort((np.arange(row.shape[0]), -row))[:k]
        rows.append([f"{float(row[i])!r}:{int(i)}:{labels[i]}" for i in order])
    return strings_tensor([s for row in rows for s in row], (len(rows), min(k, probs.shape[1])))


def check_requested(model: LoadedModel, requested: Sequence[RequestedOutput]) -> None:
    """``InvalidInput`` unless every requested output (and classification count) exists."""
    specs = {s.name: s for s in output_specs(model)}
    for req in requested:
        if req.name not in specs:
            raise InvalidInput(
                f"model {model.name} has no output {req.name!r} (outputs: {', '.join(specs)})"
            )
        if req.classification and req.name != model.task.v2_classification_output:
            raise InvalidInput(
                f"the classification parameter applies to the 'probabilities' output of a "
                f"classification model, not to {model.name}'s {req.name!r}"
            )
        if req.classification < 0:
            raise InvalidInput(f"classification must be a positive count, got {req.classification}")


def build_outputs(
    model: LoadedModel,
    results: Sequence[InferenceResult],
    requested: Sequence[RequestedOutput],
) -> list[Tensor]:
    """The output tensors asked for (all of them when ``requested`` is empty)."""
    check_requested(model, requested)
    specs = {s.name: s for s in output_specs(model)}
    values = model.task.v2_values(results)
    wanted = list(requested) or [RequestedOutput(name) for name in specs]
    tensors = []
    for req in wanted:
        spec = specs[req.name]
        value = values[req.name]
        if req.classification:
            data = _top_k_strings(value, model.task.labels, req.classification)
            tensors.append(Tensor(req.name, "BYTES", tuple(data.shape), data))
        else:
            tensors.append(Tensor(req.name, spec.datatype, tuple(value.shape), value))
    return tensors
