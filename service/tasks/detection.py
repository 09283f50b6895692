"""Object detection: letterbox in, boxes in the client's image pixels out.

The network (``service.models.detection.CAREDetector``, or any model with the
same output contract, see ``docs/dense.md``) gives ``cls_logits (N, K)`` and
``box_ltrb (N, 4)`` per image, in the order ``manifest.outputs`` names them.
Decoding, score threshold, class-aware NMS and the mapping back through the
letterbox are numpy (``service.postprocess.detection``), the same for every
backend.

Manifest ``postprocessing`` (all optional): ``score_threshold`` (0.3),
``nms_iou`` (0.6), ``max_detections`` (100, the default per request),
``pre_nms_top_k`` (1000, also the largest ``max_detections`` a request may ask
for), ``strides`` ([8, 16, 32]).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from service.errors import InferenceError, ModelStoreError
from service.postprocess.detection import DETECTION_STRIDES, make_points, postprocess_detections
from service.settings import Settings
from service.store.manifest import Manifest
from service.tasks.dense import DenseMeta, DenseTask, parse_config, parse_number
from service.tasks.preprocess import PreprocessMeta

MAX_PRE_NMS_TOP_K = 100_000  # the largest pre_nms_top_k (and so max_detections) a manifest may set

__all__ = [
    "Detection",
    "DetectionConfig",
    "DetectionParams",
    "DetectionResult",
    "DetectionTask",
]


class DetectionConfig(BaseModel):
    """The manifest's detection settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    score_threshold: float = Field(0.3, ge=0.0, le=1.0)
    nms_iou: float = Field(0.6, ge=0.0, le=1.0)
    max_detections: int = Field(100, ge=1)
    pre_nms_top_k: int = Field(1000, ge=1, le=MAX_PRE_NMS_TOP_K)
    strides: tuple[int, ...] = Field(DETECTION_STRIDES, min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> DetectionConfig:
        if self.max_detections > self.pre_nms_top_k:
            raise ValueError(
                f"max_detections ({self.max_detections}) exceeds pre_nms_top_k "
                f"({self.pre_nms_top_k})"
            )
        if any(s <= 0 for s in self.strides):
            raise ValueError(f"strides must be positive, got {list(self.strides)}")
        return self


class DetectionParams(BaseModel):
    """Request parameters of /detect."""

    score_threshold: float = Field(description="Minimum score of a returned detection.")
    max_detections: int = Field(description="At most this many detections, best first.")


class Detection(BaseModel):
    """One detected object."""

    label: str
    class_id: int
    score: float = Field(description="Sigmoid class score in [0, 1].")
    box: tuple[float, float, float, float] = Field(
        description="[x1, y1, x2, y2] in pixels of the image sent (after EXIF orientation); "
        "continuous coordinates, the whole image is [0, 0, width, height]."
    )


class DetectionResult(BaseModel):
    """Detections, highest score first."""

    detections: list[Detection]


class DetectionTask(DenseTask):
    """Detection with an anchor-free point head (``cls_logits``, ``box_ltrb``)."""

    name = "detection"
    num_outputs = 2

    def __init__(self, manifest: Manifest, labels: list[str], settings: Settings) -> None:
        super().__init__(manifest, labels, settings)
        self.config = parse_config(DetectionConfig, manifest)
        if any(manifest.input.height % s or manifest.input.width % s for s in self.config.strides):
            raise ModelStoreError(
                f"{manifest.name}/{manifest.version}: input "
                f"{manifest.input.height}x{manifest.input.width} is not a multiple of every "
                f"stride {list(self.config.strides)}"
            )
        points, _ = make_points(manifest.input.height, manifest.input.width, self.config.strides)
        self.num_points = int(points.shape[0])

    @property
    def max_detections_limit(self) -> int:
        """The largest ``max_detections`` a request may ask for."""
        return self.config.pre_nms_top_k

    def parse_params(self, params: Mapping[str, Any]) -> DetectionParams:
        score = parse_number(params, "score_threshold", self.config.score_threshold, 0.0, 1.0)
        limit = self.max_detections_limit
        max_dets = parse_number(
            params,
            "max_detections",
            min(self.config.max_detections, limit),
            1,
            limit,
            integer=True,
        )
        return DetectionParams(score_threshold=score, max_detections=int(max_dets))

    def postprocess(
        self, outputs: Mapping[str, np.ndarray], meta: PreprocessMeta, params: Any
    ) -> DetectionResult:
        assert isinstance(meta, DenseMeta)
        cls_name, box_name = self.manifest.outputs
        cls_logits, box_ltrb = np.asarray(outputs[cls_name]), np.asarray(outputs[box_name])
        expected_cls = (self.num_points, self.manifest.num_classes)
        if cls_logits.shape != expected_cls or box_ltrb.shape != (self.num_points, 4):
            raise InferenceError(
                f"model outputs {cls_name} {cls_logits.shape} and {box_name} {box_ltrb.shape}; "
                f"expected {expected_cls} and ({self.num_points}, 4) for a "
                f"{self.manifest.input.width}x{self.manifest.input.height} input, "
                f"num_classes={self.manifest.num_classes} and strides "
                f"{list(self.config.strides)}"
            )
        dets = postprocess_detections(
            cls_logits,
            box_ltrb,
            meta.letterbox,
            score_threshold=params.score_threshold,
            iou_threshold=self.config.nms_iou,
            max_detections=params.max_detections,
            pre_nms_top_k=self.config.pre_nms_top_k,
            strides=self.config.strides,
        )
        labels = self.labels
        return DetectionResult(
            detections=[
                Detection(
                    label=labels[c],
                    class_id=c,
                    score=s,
                    box=(b[0], b[1], b[2], b[3]),
                )
                for b, s, c in zip(
                    dets.boxes.tolist(), dets.scores.tolist(), dets.class_ids.tolist(), strict=True
                )
            ]
        )
