"""What a pipeline accepts and answers over the v2 protocol: a model of its own, as a
Triton ensemble is.

Inputs (a request sends exactly one; the first dimension is the images, each run
through the pipeline on its own):

- ``image``  ``BYTES [-1]``: encoded images, decoded and checked as ``/pipelines/{name}`` does;
- ``frame``  ``UINT8 [-1, -1, -1, 3]``: RGB frames of any size.

Outputs (``M`` = the most detections of an image of the request; each image's rows past
its own count are padding):

- ``boxes FP32 [-1, M, 4]`` (x1, y1, x2, y2 in pixels of the image sent), ``scores FP32
  [-1, M]``, ``labels BYTES [-1, M]``: the detector's, highest score first ("" past the count);
- ``class_labels BYTES [-1, M]``, ``class_scores FP32 [-1, M]``: the classifier's top class of
  each box and its probability ("" and 0 for a box not classified, and past the count);
- ``num_detections INT32 [-1]``, ``image_size INT32 [-1, 2]`` (height, width);
- ``detections BYTES [-1]``: per image, the JSON list ``detections`` that
  ``POST /pipelines/{name}`` answers (each classification's top-k, model, version, uncertain).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np

from care_serve.errors import InvalidInput
from care_serve.imaging.inputs import ImageInput
from care_serve.serving.pipelines import PipelineResult
from care_serve.tasks.base import TensorSpec
from care_serve.tasks.wire import strings_tensor
from care_serve.transports.v2.codec import Tensor
from care_serve.transports.v2.model_io import (
    FRAME_INPUT,
    IMAGE_INPUT,
    RequestedOutput,
    tensor_images,
)

__all__ = [
    "PIPELINE_INPUTS",
    "PIPELINE_OUTPUTS",
    "PIPELINE_PLATFORM",
    "PIPELINE_VERSION",
    "check_pipeline_requested",
    "pipeline_images",
    "pipeline_outputs",
]

PIPELINE_PLATFORM = "ensemble"  # what Triton calls a model made of models
PIPELINE_VERSION = 1  # a pipeline has one version: its steps' serving versions
PIPELINE_INPUTS = (
    TensorSpec(IMAGE_INPUT, "BYTES", (-1,)),
    TensorSpec(FRAME_INPUT, "UINT8", (-1, -1, -1, 3)),
)
PIPELINE_OUTPUTS = (
    TensorSpec("boxes", "FP32", (-1, -1, 4)),
    TensorSpec("scores", "FP32", (-1, -1)),
    TensorSpec("labels", "BYTES", (-1, -1)),
    TensorSpec("class_labels", "BYTES", (-1, -1)),
    TensorSpec("class_scores", "FP32", (-1, -1)),
    TensorSpec("num_detections", "INT32", (-1,)),
    TensorSpec("image_size", "INT32", (-1, 2)),
    TensorSpec("detections", "BYTES", (-1,)),
)


def pipeline_images(name: str, inputs: Sequence[Tensor], protocol: str) -> list[ImageInput]:
    """The images of a request to pipeline ``name``, or ``InvalidInput`` saying what it takes."""
    return tensor_images(f"pipeline {name}", PIPELINE_INPUTS, inputs, protocol)


def check_pipeline_requested(name: str, requested: Sequence[RequestedOutput]) -> None:
    """``InvalidInput`` unless every requested output exists (and asks for no top-k)."""
    names = [s.name for s in PIPELINE_OUTPUTS]
    for req in requested:
        if req.name not in names:
            raise InvalidInput(
                f"pipeline {name} has no output {req.name!r} (outputs: {', '.join(names)})"
            )
        if req.classification:
            raise InvalidInput(
                f"the classification parameter applies to a classification model's "
                f"'probabilities', not to pipeline {name}'s {req.name!r} (the classes of each box "
                "are in class_labels, class_scores and detections)"
            )


def pipeline_outputs(
    results: Sequence[PipelineResult], requested: Sequence[RequestedOutput]
) -> list[Tensor]:
    """The output tensors asked for (all of them when ``requested`` is empty)."""
    n = len(results)
    m = max((len(r.detections) for r in results), default=0)
    boxes = np.zeros((n, m, 4), np.float32)
    scores = np.zeros((n, m), np.float32)
    class_scores = np.zeros((n, m), np.float32)
    labels = [[""] * m for _ in range(n)]
    class_labels = [[""] * m for _ in range(n)]
    for i, result in enumerate(results):
        for j, det in enumerate(result.detections):
            boxes[i, j], scores[i, j], labels[i][j] = det.box, det.score, det.label
            if det.classification is not None and det.classification.predictions:
                top = det.classification.predictions[0]
                class_labels[i][j], class_scores[i, j] = top.label, top.score
    values = {
        "boxes": boxes,
        "scores": scores,
        "labels": strings_tensor([s for row in labels for s in row], (n, m)),
        "class_labels": strings_tensor([s for row in class_labels for s in row], (n, m)),
        "class_scores": class_scores,
        "num_detections": np.asarray([len(r.detections) for r in results], np.int32),
        "image_size": np.asarray(
            [[r.image_height, r.image_width] for r in results], np.int32
        ).reshape(-1, 2),
        "detections": strings_tensor(
            [json.dumps([d.model_dump(mode="json") for d in r.detections]) for r in results]
        ),
    }
    specs = {s.name: s for s in PIPELINE_OUTPUTS}
    wanted = [r.name for r in requested] or list(specs)
    return [
        Tensor(out, specs[out].datatype, tuple(values[out].shape), values[out]) for out in wanted
    ]
