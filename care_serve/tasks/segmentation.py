"""Semantic segmentation: letterbox in, a class-index mask at the original size out.

The network (``care_serve.models.segmentation.CARESegmenter`` or any model with the
same contract, see ``docs/dense.md``) gives ``seg_logits (K, H/4, W/4)`` per
image; class 0 is background and ``num_classes`` counts it. The mask is made at
the size of the image the client sent (after EXIF orientation; images over the
``max_output_pixels`` setting get a mask of that many pixels at most, same
aspect ratio) in numpy/Pillow
(``care_serve.postprocess.segmentation``), encoded as a single-channel PNG of class
indices, and summarised as each class's share of the pixels. On request the
task also renders a colour overlay (the image blended with the VOC palette;
background pixels unchanged) with a legend strip below the image: each class
present, its colour and its share of the pixels.

Manifest ``postprocessing`` (all optional): ``exact`` (false: when the image was
shrunk for the network the mask is computed at the network's resolution and
enlarged by nearest neighbour; true: always at the original size, slower),
``overlay_alpha`` (0.5), ``output_stride`` (4).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from care_serve.errors import InferenceError, InvalidInput, ModelStoreError
from care_serve.grpc_gen.care_serve.v1 import inference_pb2 as pb
from care_serve.imaging.preprocess import PreprocessMeta
from care_serve.postprocess.segmentation import (
    SEGMENTATION_OUTPUT_STRIDE,
    make_palette,
    mask_to_png,
    overlay_with_legend_png,
    postprocess_segmentation,
)
from care_serve.settings import Settings
from care_serve.store.manifest import Manifest
from care_serve.tasks.base import (
    BinaryAnswer,
    InferenceResult,
    RestQuery,
    TensorSpec,
    Timings,
)
from care_serve.tasks.dense import DenseMeta, DenseTask, parse_config
from care_serve.tasks.wire import (
    grpc_envelope,
    image_sizes,
    rest_envelope,
    strings_tensor,
)

__all__ = [
    "ClassShare",
    "SegmentQuery",
    "SegmentResponse",
    "SegmentationConfig",
    "SegmentationParams",
    "SegmentationResult",
    "SegmentationTask",
]


class SegmentationConfig(BaseModel):
    """The manifest's segmentation settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    exact: bool = False
    overlay_alpha: float = Field(0.5, ge=0.0, le=1.0)
    output_stride: int = Field(SEGMENTATION_OUTPUT_STRIDE, ge=1)


class SegmentationParams(BaseModel):
    """Request parameters of /segment."""

    return_overlay: bool = Field(False, description="Also render the colour overlay PNG.")


class ClassShare(BaseModel):
    """How much of the image one class covers."""

    label: str
    class_id: int
    share: float = Field(description="Fraction of the image's pixels, in [0, 1].")


class SegmentationResult(BaseModel):
    """The mask (array and PNG), the class shares and, on request, the overlay."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    class_names: list[str]
    class_shares: list[ClassShare]
    mask: np.ndarray = Field(exclude=True, description="(H, W) class indices, uint8/uint16.")
    mask_png: bytes = Field(
        description="Single-channel PNG of class indices: the original size, or at most "
        "max_output_pixels (same aspect ratio)."
    )
    overlay_png: bytes | None = Field(
        None,
        description="RGB PNG overlay (when asked for): the image with the mask blended in, "
        "unchanged in size at the top, and a legend strip below it.",
    )


class SegmentQuery(RestQuery):
    """Query parameters of ``POST /segment``."""

    format: Literal["json", "png", "overlay"] = Field(
        "json",
        description="json: JSON with the base64 mask PNG and class shares; png: the mask PNG "
        "itself (class indices); overlay: an RGB PNG for people, the image blended with the mask "
        "colours and a legend below it (each class present, its colour and share of the pixels).",
    )


class SegmentResponse(BaseModel):
    """The JSON answer of ``POST /segment``."""

    model: str = Field(description="The model that answered.")
    version: int = Field(description="Its version.")
    image_width: int = Field(description="Width of the image sent, after EXIF orientation.")
    image_height: int = Field(description="Height of the image sent, after EXIF orientation.")
    class_names: list[str] = Field(description="Class names; index = value in the mask.")
    mask_png: str = Field(
        description="Base64 single-channel PNG of class indices, mask_width x mask_height "
        "(8-bit; 16-bit above 256 classes)."
    )
    mask_width: int = Field(
        description="Width of the mask: image_width, or less when the image has more than "
        "max_output_pixels pixels (same aspect ratio)."
    )
    mask_height: int = Field(description="Height of the mask (see mask_width).")
    class_shares: list[ClassShare] = Field(description="Each class's fraction of the pixels.")
    batch_size: int = Field(description="How many requests shared the batch.")
    timings_ms: Timings


class SegmentationTask(DenseTask):
    """Segmentation with a stride-4 logit map (``seg_logits``)."""

    name = "segmentation"
    num_outputs = 1
    route = "segment"
    summary = "Segment an image: class mask (PNG) and class shares, or the PNG itself"
    rest_query = SegmentQuery
    rest_response = SegmentResponse
    grpc_method = "Segment"

    def __init__(self, manifest: Manifest, labels: list[str], settings: Settings) -> None:
        super().__init__(manifest, labels, settings)
        self.config = parse_config(SegmentationConfig, manifest)
        stride = self.config.output_stride
        if manifest.input.height % stride or manifest.input.width % stride:
            raise ModelStoreError(
                f"{manifest.name}/{manifest.version}: input "
                f"{manifest.input.height}x{manifest.input.width} is not a multiple of "
                f"output_stride {stride}"
            )
        if manifest.num_classes < 2:
            raise ModelStoreError(
                f"{manifest.name}/{manifest.version}: num_classes counts the background and "
                f"must be at least 2, got {manifest.num_classes}"
            )
        self.expected_shape = (
            manifest.num_classes,
            manifest.input.height // stride,
            manifest.input.width // stride,
        )
        self.palette = make_palette(manifest.num_classes)

    def parse_params(self, params: Mapping[str, Any]) -> SegmentationParams:
        overlay = params.get("return_overlay", False)
        if overlay is None:
            overlay = False
        if not isinstance(overlay, bool):
            raise InvalidInput(f"return_overlay must be true or false, got {overlay!r}")
        return SegmentationParams(return_overlay=overlay)

    def postprocess(
        self, outputs: Mapping[str, np.ndarray], meta: PreprocessMeta, params: Any
    ) -> SegmentationResult:
        assert isinstance(meta, DenseMeta)
        name = self.manifest.outputs[0]
        logits = np.asarray(outputs[name])
        if logits.shape != self.expected_shape:
            raise InferenceError(
                f"model output {name} has shape {logits.shape}; expected {self.expected_shape} "
                f"(num_classes, height / {self.config.output_stride}, "
                f"width / {self.config.output_stride})"
            )
        seg = postprocess_segmentation(
            logits,
            meta.letterbox,
            exact=self.config.exact,
            stride=self.config.output_stride,
            max_pixels=self.settings.max_output_pixels,
        )
        overlay = None
        if params.return_overlay:
            overlay = overlay_with_legend_png(
                meta.image,
                seg.mask,
                seg.shares.tolist(),
                self.labels,
                self.config.overlay_alpha,
                self.palette,
            )
        return SegmentationResult(
            class_names=list(self.labels),
            class_shares=[
                ClassShare(label=label, class_id=i, share=share)
                for i, (label, share) in enumerate(
                    zip(self.labels, seg.shares.tolist(), strict=True)
                )
            ],
            mask=seg.mask,
            mask_png=mask_to_png(seg.mask),
            overlay_png=overlay,
        )

    # -- protocols ----------------------------------------------------------------------------
    @classmethod
    def rest_params(cls, query: RestQuery) -> dict[str, Any]:
        assert isinstance(query, SegmentQuery)
        return {"return_overlay": query.format == "overlay"}

    @classmethod
    def rest_answer(cls, result: InferenceResult, query: RestQuery) -> Any:
        seg = result.result
        assert isinstance(seg, SegmentationResult) and isinstance(query, SegmentQuery)
        if query.format != "json":
            png = seg.overlay_png if query.format == "overlay" else seg.mask_png
            assert png is not None
            return BinaryAnswer(png, headers={"X-Class-Names": ",".join(seg.class_names)})
        return SegmentResponse(
            **rest_envelope(result),
            class_names=seg.class_names,
            mask_png=base64.b64encode(seg.mask_png).decode("ascii"),
            mask_width=int(seg.mask.shape[1]),
            mask_height=int(seg.mask.shape[0]),
            class_shares=seg.class_shares,
        )

    @classmethod
    def grpc_params(cls, request: Any) -> dict[str, Any]:
        return {"return_overlay": request.return_overlay}

    @classmethod
    def grpc_reply(cls, result: InferenceResult) -> Any:
        seg = result.result
        assert isinstance(seg, SegmentationResult)
        return pb.SegmentResponse(
            **grpc_envelope(result),
            class_names=seg.class_names,
            mask_png=seg.mask_png,
            class_shares=[
                pb.ClassShare(label=c.label, class_id=c.class_id, share=c.share)
                for c in seg.class_shares
            ],
            overlay_png=seg.overlay_png or b"",
            mask_width=int(seg.mask.shape[1]),
            mask_height=int(seg.mask.shape[0]),
        )

    def v2_outputs(self) -> list[TensorSpec]:
        k = self.manifest.num_classes
        return [
            TensorSpec("mask", "UINT8" if k <= 256 else "UINT16", (-1, -1, -1)),
            TensorSpec("class_shares", "FP32", (-1, k)),
            TensorSpec("image_size", "INT32", (-1, 2)),
            TensorSpec("class_names", "BYTES", (k,)),
        ]

    def v2_params(self, parameters: Mapping[str, Any]) -> Mapping[str, Any]:
        return {"return_overlay": False}

    def v2_values(self, results: Sequence[InferenceResult]) -> dict[str, Any]:
        k = self.manifest.num_classes
        sizes = image_sizes(results)
        height, width = int(sizes[:, 0].max()), int(sizes[:, 1].max())
        masks = np.zeros((len(results), height, width), np.uint8 if k <= 256 else np.uint16)
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
            "class_names": strings_tensor(self.labels),
        }
