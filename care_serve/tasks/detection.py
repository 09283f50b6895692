"""Object detection: letterbox in, boxes in the client's image pixels out.

The network (``care_serve.models.detection.CAREDetector``, or any model with the
same output contract, see ``docs/dense.md``) gives ``cls_logits (N, K)`` and
``box_ltrb (N, 4)`` per image, in the order ``manifest.outputs`` names them.
Decoding, score threshold, NMS and the mapping back through the letterbox are
numpy (``care_serve.postprocess.detection``), the same for every
backend.

Manifest ``postprocessing`` (all optional): ``score_threshold`` (0.3),
``nms_iou`` (0.6), ``max_detections`` (100, the default per request),
``pre_nms_top_k`` (1000, also the largest ``max_detections`` a request may ask
for), ``strides`` ([8, 16, 32]), ``class_agnostic_nms`` (false: boxes of
different classes never suppress each other; true, for models whose classes are
mutually exclusive in space: one box per place, whatever the class). A request
may override ``score_threshold``, ``max_detections`` and ``class_agnostic_nms``.

On request (``return_overlay``) the task also draws the boxes, each with its
label and score, on the image, with the count per class in a strip below it
(``care_serve.postprocess.drawing``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from care_serve.errors import InferenceError, InvalidInput, ModelStoreError
from care_serve.grpc_gen.care_serve.v1 import inference_pb2 as pb
from care_serve.imaging.preprocess import PreprocessMeta
from care_serve.postprocess.detection import DETECTION_STRIDES, make_points, postprocess_detections
from care_serve.postprocess.drawing import (
    LegendEntry,
    detection_palette,
    draw_boxes,
    encode_png,
    with_legend,
)
from care_serve.postprocess.segmentation import make_palette
from care_serve.settings import Settings
from care_serve.store.manifest import Manifest
from care_serve.tasks.base import (
    BinaryAnswer,
    InferenceResult,
    RestQuery,
    TensorSpec,
    Timings,
)
from care_serve.tasks.dense import DenseMeta, DenseTask, parse_config, parse_number
from care_serve.tasks.wire import (
    grpc_envelope,
    image_sizes,
    rest_envelope,
    strings_tensor,
)

MAX_PRE_NMS_TOP_K = 100_000  # the largest pre_nms_top_k (and so max_detections) a manifest may set

__all__ = [
    "DetectQuery",
    "DetectResponse",
    "Detection",
    "DetectionConfig",
    "DetectionParams",
    "DetectionResult",
    "DetectionTask",
]
DETECTION_PARAMETERS = ("score_threshold", "max_detections", "class_agnostic_nms")


class DetectionConfig(BaseModel):
    """The manifest's detection settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    score_threshold: float = Field(0.3, ge=0.0, le=1.0)
    nms_iou: float = Field(0.6, ge=0.0, le=1.0)
    max_detections: int = Field(100, ge=1)
    pre_nms_top_k: int = Field(1000, ge=1, le=MAX_PRE_NMS_TOP_K)
    strides: tuple[int, ...] = Field(DETECTION_STRIDES, min_length=1)
    class_agnostic_nms: bool = Field(False, strict=True)

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
    class_agnostic_nms: bool = Field(
        False, description="Suppress overlapping boxes whatever their classes."
    )
    return_overlay: bool = Field(False, description="Also draw the boxes on the image (PNG).")


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
    """Detections, highest score first, and on request the image with the boxes drawn."""

    detections: list[Detection]
    overlay_png: bytes | None = Field(
        None,
        exclude=True,
        description="RGB PNG (when asked for): the image with each box, label and score "
        "drawn, unchanged in size at the top, and the count per class in a strip below.",
    )


class DetectQuery(RestQuery):
    """Query parameters of ``POST /detect``."""

    score_threshold: float | None = Field(
        None, description="Minimum score to return, in [0, 1] (default: the model's manifest)."
    )
    max_detections: int | None = Field(
        None,
        description="At most this many detections, best first (default: the model's "
        "manifest; at most its pre_nms_top_k, 1000 by default).",
    )
    class_agnostic_nms: bool | None = Field(
        None,
        description="true: overlapping boxes suppress each other whatever their classes (one box "
        "per object); false: only boxes of the same class do (default: the model's manifest).",
    )
    format: Literal["json", "overlay"] = Field(
        "json",
        description="json: the detections as JSON; overlay: an RGB PNG for people, the image "
        "with each box, label and score drawn and the count per class in a strip below it.",
    )


class DetectResponse(BaseModel):
    """The JSON answer of ``POST /detect``."""

    model: str = Field(description="The model that answered.")
    version: int = Field(description="Its version.")
    image_width: int = Field(description="Width of the image sent, after EXIF orientation.")
    image_height: int = Field(description="Height of the image sent, after EXIF orientation.")
    detections: list[Detection] = Field(description="Detections, highest score first.")
    batch_size: int = Field(description="How many requests shared the batch.")
    timings_ms: Timings


def _parse_flag(params: Mapping[str, Any], name: str, default: bool) -> bool:
    """Parameter ``name`` as a boolean (absent or null: ``default``)."""
    value = params.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise InvalidInput(f"{name} must be true or false, got {value!r}")
    return value


class DetectionTask(DenseTask):
    """Detection with an anchor-free point head (``cls_logits``, ``box_ltrb``)."""

    name = "detection"
    num_outputs = 2
    route = "detect"
    summary = "Detect objects: labelled boxes in pixels of the image sent, or a PNG of them"
    rest_query = DetectQuery
    rest_response = DetectResponse
    grpc_method = "Detect"
    v2_parameters = DETECTION_PARAMETERS

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
        self.colours = [
            (int(r), int(g), int(b))
            for r, g, b in detection_palette(make_palette(manifest.num_classes + 1))
        ]

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
        return DetectionParams(
            score_threshold=score,
            max_detections=int(max_dets),
            class_agnostic_nms=_parse_flag(
                params, "class_agnostic_nms", self.config.class_agnostic_nms
            ),
            return_overlay=_parse_flag(params, "return_overlay", False),
        )

    def served_parameters(self) -> dict[str, dict[str, Any]]:
        limit = self.max_detections_limit
        return {
            "score_threshold": {
                "default": self.config.score_threshold,
                "minimum": 0.0,
                "maximum": 1.0,
            },
            "max_detections": {
                "default": min(self.config.max_detections, limit),
                "minimum": 1,
                "maximum": limit,
            },
            "class_agnostic_nms": {"default": self.config.class_agnostic_nms},
        }

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
            class_agnostic=params.class_agnostic_nms,
        )
        labels = self.labels
        detections = [
            Detection(label=labels[c], class_id=c, score=s, box=(b[0], b[1], b[2], b[3]))
            for b, s, c in zip(
                dets.boxes.tolist(), dets.scores.tolist(), dets.class_ids.tolist(), strict=True
            )
        ]
        overlay = self.draw(meta, detections) if params.return_overlay else None
        return DetectionResult(detections=detections, overlay_png=overlay)

    def draw(self, meta: DenseMeta, detections: list[Detection]) -> bytes:
        """The image with the boxes drawn and a count per class below it, as a PNG.

        The image may be smaller than the one sent (``max_output_pixels``): boxes,
        in the sent image's pixels, are scaled to it.
        """
        sx, sy = meta.image.width / meta.orig_width, meta.image.height / meta.orig_height
        drawn = draw_boxes(
            meta.image,
            [[d.box[0] * sx, d.box[1] * sy, d.box[2] * sx, d.box[3] * sy] for d in detections],
            [f"{d.label} {d.score:.2f}" for d in detections],
            [self.colours[d.class_id] for d in detections],
        )
        counts: dict[int, int] = {}
        for d in detections:
            counts[d.class_id] = counts.get(d.class_id, 0) + 1
        entries = [
            LegendEntry(self.colours[c], f"{self.labels[c]}: {n}")
            for c, n in sorted(counts.items(), key=lambda item: (-item[1], item[0]))
        ]
        n = len(detections)
        title = f"{n} detection{'s' if n != 1 else ''}" if n else "no detection"
        return encode_png(with_legend(drawn, entries, title))

    # -- protocols ----------------------------------------------------------------------------
    @classmethod
    def rest_params(cls, query: RestQuery) -> dict[str, Any]:
        assert isinstance(query, DetectQuery)
        return {**super().rest_params(query), "return_overlay": query.format == "overlay"}

    @classmethod
    def rest_answer(cls, result: InferenceResult, query: RestQuery) -> Any:
        assert isinstance(result.result, DetectionResult) and isinstance(query, DetectQuery)
        if query.format == "overlay":
            assert result.result.overlay_png is not None
            return BinaryAnswer(result.result.overlay_png)
        return DetectResponse(
            **rest_envelope(result),
            detections=result.result.detections,
        )

    @classmethod
    def openapi_limits(cls, settings: Settings) -> dict[str, dict[str, float]]:
        return {
            "score_threshold": {"minimum": 0, "maximum": 1},
            "max_detections": {"minimum": 1, "maximum": MAX_PRE_NMS_TOP_K},
        }

    @classmethod
    def grpc_params(cls, request: Any) -> dict[str, Any]:
        params = {name: getattr(request, name) for name in DETECTION_PARAMETERS}
        params = {k: v for k, v in params.items() if request.HasField(k)}
        return {**params, "return_overlay": request.return_overlay}

    @classmethod
    def grpc_reply(cls, result: InferenceResult) -> Any:
        assert isinstance(result.result, DetectionResult)
        return pb.DetectResponse(
            **grpc_envelope(result),
            detections=[
                pb.Detection(
                    label=d.label,
                    class_id=d.class_id,
                    score=d.score,
                    box=pb.Box(x1=d.box[0], y1=d.box[1], x2=d.box[2], y2=d.box[3]),
                )
                for d in result.result.detections
            ],
            overlay_png=result.result.overlay_png or b"",
        )

    def v2_outputs(self) -> list[TensorSpec]:
        d = self.config.max_detections
        return [
            TensorSpec("boxes", "FP32", (-1, d, 4)),
            TensorSpec("scores", "FP32", (-1, d)),
            TensorSpec("class_ids", "INT32", (-1, d)),
            TensorSpec("labels", "BYTES", (-1, d)),
            TensorSpec("num_detections", "INT32", (-1,)),
            TensorSpec("image_size", "INT32", (-1, 2)),
        ]

    def v2_params(self, parameters: Mapping[str, Any]) -> Mapping[str, Any]:
        params = {k: parameters[k] for k in DETECTION_PARAMETERS if k in parameters}
        limit = self.config.max_detections
        wanted = params.get("max_detections")
        if isinstance(wanted, int) and not isinstance(wanted, bool) and wanted > limit:
            raise InvalidInput(
                f"max_detections must be at most {limit} over v2 (the outputs hold {limit} "
                f"detections per image), got {wanted}"
            )
        return params

    def v2_values(self, results: Sequence[InferenceResult]) -> dict[str, Any]:
        n, d = len(results), self.config.max_detections
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
            "labels": strings_tensor([s for row in labels for s in row], (n, d)),
            "num_detections": counts,
            "image_size": image_sizes(results),
        }
