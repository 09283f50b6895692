"""Pieces the tasks share when they shape their answers for the protocols."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from care_serve.grpc_gen.care_serve.v1 import inference_pb2 as pb
from care_serve.tasks.base import InferenceResult, Timings

__all__ = [
    "grpc_envelope",
    "grpc_timings",
    "image_sizes",
    "rest_envelope",
    "strings_tensor",
]


def grpc_timings(ms: dict[str, float]) -> Any:
    """The ``Timings`` message of a result's ``timings_ms``."""
    return pb.Timings(
        decode_ms=ms["decode"],
        preprocess_ms=ms["preprocess"],
        queue_ms=ms["queue"],
        compute_ms=ms["compute"],
        postprocess_ms=ms["postprocess"],
        total_ms=ms["total"],
    )


def strings_tensor(values: Sequence[str], shape: tuple[int, ...] | None = None) -> np.ndarray:
    """A v2 ``BYTES`` tensor (an object array of UTF-8 bytes) of ``values``."""
    array = np.empty(len(values), dtype=object)
    array[:] = [v.encode("utf-8") for v in values]
    return array.reshape(shape if shape is not None else (len(values),))


def image_sizes(results: Sequence[InferenceResult]) -> np.ndarray:
    """``INT32 [n, 2]``: the (height, width) of each image sent."""
    return np.asarray([[r.image_height, r.image_width] for r in results], np.int32).reshape(-1, 2)


def rest_envelope(result: InferenceResult) -> dict[str, Any]:
    """The fields every REST answer carries besides the task's own."""
    return {
        "model": result.model,
        "version": result.version,
        "image_width": result.image_width,
        "image_height": result.image_height,
        "batch_size": result.batch_size,
        "timings_ms": Timings(**result.timings_ms),
    }


def grpc_envelope(result: InferenceResult) -> dict[str, Any]:
    """The fields every own-gRPC reply carries besides the task's own."""
    return {
        "model": result.model,
        "version": result.version,
        "image_width": result.image_width,
        "image_height": result.image_height,
        "batch_size": result.batch_size,
        "timings": grpc_timings(result.timings_ms),
    }
