"""What each care-serve model accepts and answers over the v2 protocol.

Inputs (a request sends exactly one of them; the first dimension is the images):

- ``image``  ``BYTES [-1]``: encoded images, decoded and checked as ``/classify`` does;
- ``input``  ``FP32 [-1, 3, H, W]``: normalised network inputs at the model's size;
- ``frame``  ``UINT8 [-1, -1, -1, 3]``: RGB frames of any size (resized and normalised).

Outputs, by task (``D`` = the detector's ``max_detections``, ``K`` = classes):

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

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel

from care_serve.errors import InvalidInput
from care_serve.imaging.inputs import EncodedImage, ImageInput, InputTensor, RgbFrame
from care_serve.serving.data_plane import InferenceResult
from care_serve.serving.manager import LoadedModel
from care_serve.tasks.classification import ClassificationParams, ClassificationResult
from care_serve.tasks.detection import DetectionResult, DetectionTask
from care_serve.tasks.segmentation import SegmentationResult
from care_serve.transports.v2.codec import Tensor

__all__ = [
    "CLASSIFICATION_PARAMETER",
    "IMAGE_INPUT",
    "RequestedOutput",
    "TensorSpec",
    "build_outputs",
    "check_requested",
    "image_inputs",
    "input_specs",
    "output_specs",
    "task_params",
]

IMAGE_INPUT, TENSOR_INPUT, FRAME_INPUT = "image", "input", "frame"
CLASSIFICATION_PARAMETER = "classification"
DETECTION_PARAMETERS = ("score_threshold", "max_detections", "class_agnostic_nms")


@dataclass(frozen=True)
class TensorSpec:
    """Name, datatype and shape (-1 = variable) of a model input or output."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def describe(self) -> str:
        return f"{self.name} {self.datatype} {list(self.shape)}"


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


def _mask_datatype(num_classes: int) -> str:
    return "UINT8" if num_classes <= 256 else "UINT16"


def max_detections(model: LoadedModel) -> int:
    """``D``: how many detections each image's outputs hold (the manifest's default)."""
    assert isinstance(model.task, DetectionTask)
    return model.task.config.max_detections


def output_specs(model: LoadedModel) -> list[TensorSpec]:
    """The outputs ``model`` answers, by task."""
    k = model.manifest.num_classes
    task = model.manifest.task
    if task == "classification":
        return [
            TensorSpec("probabilities", "FP32", (-1, k)),
            TensorSpec("class_names", "BYTES", (k,)),
        ]
    if task == "detection":
        d = max_detections(model)
        return [
            TensorSpec("boxes", "FP32", (-1, d, 4)),
            TensorSpec("scores", "FP32", (-1, d)),
            TensorSpec("class_ids", "INT32", (-1, d)),
            TensorSpec("labels", "BYTES", (-1, d)),
            TensorSpec("num_detections", "INT32", (-1,)),
            TensorSpec("image_size", "INT32", (-1, 2)),
        ]
    return [
        TensorSpec("mask", _mask_datatype(k), (-1, -1, -1)),
        TensorSpec("class_shares", "FP32", (-1, k)),
        TensorSpec("image_size", "INT32", (-1, 2)),
        TensorSpec("class_names", "BYTES", (k,)),
    ]


def _accepted(model: LoadedModel) -> str:
    return "; ".join(s.describe() for s in input_specs(model))


def image_inputs(model: LoadedModel, inputs: Sequence[Tensor]) -> list[ImageInput]:
    """The images of a request's input tensors, or ``InvalidInput`` saying what is accepted."""
    accepted = _accepted(model)
    if len(inputs) != 1:
        raise InvalidInput(
            f"model {model.name} takes exactly one input tensor, got {len(inputs)} "
            f"(accepted: {accepted})"
        )
    tensor = inputs[0]
    specs = {s.name: s for s in input_specs(model)}
    spec = specs.get(tensor.name)
    if spec is None:
        raise InvalidInput(
            f"model {model.name} has no input {tensor.name!r} (accepted: {accepted})"
        )
    shape_ok = len(tensor.shape) == len(spec.shape) and all(
        want in (-1, got) for want, got in zip(spec.shape, tensor.shape, strict=True)
    )
    if tensor.datatype != spec.datatype or not shape_ok:
        raise InvalidInput(
            f"input {tensor.name!r} of model {model.name} must be {spec.datatype} "
            f"{list(spec.shape)}, got {tensor.datatype} {list(tensor.shape)} "
            f"(accepted: {accepted})"
        )
    if tensor.name == IMAGE_INPUT:
        return [EncodedImage(bytes(e)) for e in tensor.data.reshape(-1)]
    if tensor.name == TENSOR_INPUT:
        return [InputTensor(np.asarray(a, dtype=np.float32)) for a in tensor.data]
    return [RgbFrame(np.asarray(f, dtype=np.uint8)) for f in tensor.data]


def task_params(model: LoadedModel, parameters: Mapping[str, Any]) -> Mapping[str, Any] | BaseModel:
    """The task parameters of a v2 request (``parameters`` of the request)."""
    task = model.manifest.task
    if task == "classification":
        # Every class's probability; the top-k strings are cut from them.
        return ClassificationParams(top_k=model.manifest.num_classes)
    if task == "detection":
        params = {k: parameters[k] for k in DETECTION_PARAMETERS if k in parameters}
        limit = max_detections(model)
        wanted = params.get("max_detections")
        if isinstance(wanted, int) and not isinstance(wanted, bool) and wanted > limit:
            raise InvalidInput(
                f"max_detections must be at most {limit} over v2 (the outputs hold {limit} "
                f"detections per image), got {wanted}"
            )
        return params
    return {"return_overlay": False}


def _strings(values: Sequence[str], shape: tuple[int, ...]) -> np.ndarray:
    array = np.empty(len(values), dtype=object)
    array[:] = [v.encode("utf-8") for v in values]
    return array.reshape(shape)


def _classification(model: LoadedModel, results: Sequence[InferenceResult]) -> dict[str, Any]:
    k = model.manifest.num_classes
    probs = np.zeros((len(results), k), np.float32)
    for i, r in enumerate(results):
        assert isinstance(r.result, ClassificationResult)
        for p in r.result.predictions:
            probs[i, p.class_id] = p.probability
    return {"probabilities": probs, "class_names": model.task.labels}


def _top_k_strings(probs: np.ndarray, labels: Sequence[str], k: int) -> np.ndarray:
    """Triton's classification output: ``"score:index:label"``, best first."""
    rows = []
    for row in probs:
        order = np.lexsort((np.arange(row.shape[0]), -row))[:k]
        rows.append([f"{float(row[i])!r}:{int(i)}:{labels[i]}" for i in order])
    return _strings([s for row in rows for s in row], (len(rows), min(k, probs.shape[1])))


def _detection(model: LoadedModel, results: Sequence[InferenceResult]) -> dict[str, Any]:
    n, d = len(results), max_detections(model)
    boxes = np.zeros((n, d, 4), np.float32)
    scores = np.zeros((n, d), np.float32)
    class_ids = np.full((n, d), -1, np.int32)
    labels = [[""] * d for _ in range(n)]
    counts = np.zeros(n, np.int32)
    for i, r in enumerate(results):
        assert isinstance(r.result, DetectionResult)
        dets = r.result.detections[:d]
        counts[i] = len(dets)
        for j, det in enumerate(dets):
            boxes[i, j] = det.box
            scores[i, j] = det.score
            class_ids[i, j] = det.class_id
            labels[i][j] = det.label
    return {
        "boxes": boxes,
        "scores": scores,
        "class_ids": class_ids,
        "labels": _strings([s for row in labels for s in row], (n, d)),
        "num_detections": counts,
        "image_size": _sizes(results),
    }


def _sizes(results: Sequence[InferenceResult]) -> np.ndarray:
    return np.asarray([[r.image_height, r.image_width] for r in results], np.int32).reshape(-1, 2)


def _segmentation(model: LoadedModel, results: Sequence[InferenceResult]) -> dict[str, Any]:
    k = model.manifest.num_classes
    dtype = np.uint8 if k <= 256 else np.uint16
    sizes = _sizes(results)
    height, width = int(sizes[:, 0].max()), int(sizes[:, 1].max())
    masks = np.zeros((len(results), height, width), dtype)
    shares = np.zeros((len(results), k), np.float32)
    for i, r in enumerate(results):
        assert isinstance(r.result, SegmentationResult)
        mask = r.result.mask
        masks[i, : mask.shape[0], : mask.shape[1]] = mask
        for c in r.result.class_shares:
            shares[i, c.class_id] = c.share
    return {
        "mask": masks,
        "class_shares": shares,
        "image_size": sizes,
        "class_names": model.task.labels,
    }


def check_requested(model: LoadedModel, requested: Sequence[RequestedOutput]) -> None:
    """``InvalidInput`` unless every requested output (and classification count) exists."""
    specs = {s.name: s for s in output_specs(model)}
    for req in requested:
        if req.name not in specs:
            raise InvalidInput(
                f"model {model.name} has no output {req.name!r} (outputs: {', '.join(specs)})"
            )
        if req.classification and req.name != "probabilities":
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
    task = model.manifest.task
    build = {"classification": _classification, "detection": _detection}.get(task, _segmentation)
    values = build(model, results)
    wanted = list(requested) or [RequestedOutput(name) for name in specs]
    tensors = []
    for req in wanted:
        spec = specs[req.name]
        value = values[req.name]
        if req.classification:
            data = _top_k_strings(value, model.task.labels, req.classification)
            tensors.append(Tensor(req.name, "BYTES", tuple(data.shape), data))
        elif spec.datatype == "BYTES" and not isinstance(value, np.ndarray):
            data = _strings(list(value), (len(value),))
            tensors.append(Tensor(req.name, "BYTES", tuple(data.shape), data))
        else:
            tensors.append(Tensor(req.name, spec.datatype, tuple(value.shape), value))
    return tensors
