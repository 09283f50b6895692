"""Pipelines: a detector, then a classifier of each box, as one request.

``store.json`` declares them (``care_serve.store.pipelines``). A run decodes the
image once, sends it to the detector's batcher, crops the highest-scoring boxes
(padded) from the original pixels and sends all the crops of the image to the
classifier's batcher together, where they batch with each other. Both steps go
through ``DataPlane.infer_images``: the same admission (the crops count as that
many images), limits, metrics and errors as any request, and one deadline for
the whole run. Transports and streams call ``PipelineRunner.run``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np
from pydantic import BaseModel, Field

from care_serve.errors import (
    CareServeError,
    DeadlineExceeded,
    InvalidInput,
    ModelNotReady,
    NotFound,
)
from care_serve.imaging.decode import load_image, probe_image
from care_serve.imaging.inputs import EncodedImage, ImageInput, RgbFrame
from care_serve.observability.metrics import ServingMetrics
from care_serve.serving.manager import ModelManager
from care_serve.serving.outcomes import outcome_of
from care_serve.serving.workers import WorkerPools
from care_serve.settings import Settings
from care_serve.store.pipelines import CropSpec, PipelineSpec
from care_serve.tasks.base import InferenceResult

__all__ = [
    "CropClassification",
    "CropPrediction",
    "PipelineDetection",
    "PipelineInfo",
    "PipelineResult",
    "PipelineRunner",
    "crop_boxes",
]

Reader = Callable[[], Awaitable[bytes]]


class CropPrediction(BaseModel):
    """One class of a crop's top-k."""

    label: str
    score: float = Field(description="The class's probability.")


class CropClassification(BaseModel):
    """What the classifier said about one box."""

    model: str
    version: int
    predictions: list[CropPrediction] = Field(description="Top-k classes, most probable first.")
    uncertain: bool = Field(False, description="The crop looks unlike the classifier's training.")


class PipelineDetection(BaseModel):
    """One detected object and, when it was classified, its classification."""

    label: str
    score: float
    box: tuple[float, float, float, float] = Field(
        description="[x1, y1, x2, y2] in pixels of the image sent."
    )
    classification: CropClassification | None = Field(
        default=None, description="Null for boxes beyond max_boxes or smaller than min_size."
    )


class PipelineResult(BaseModel):
    """The answer of ``POST /pipelines/{name}``."""

    pipeline: str
    image_width: int
    image_height: int
    detections: list[PipelineDetection] = Field(description="Highest detection score first.")
    timings_ms: dict[str, float] = Field(
        description="decode, each step by its name, crop and total, in milliseconds."
    )


class PipelineStepInfo(BaseModel):
    name: str
    model: str
    task: str | None = Field(description="The model's task (null when it is not serving).")
    serving: bool


class PipelineInfo(BaseModel):
    """A pipeline as ``GET /pipelines`` lists it."""

    name: str
    description: str
    ready: bool = Field(description="Every step's model serves, with the task its step needs.")
    steps: list[PipelineStepInfo]
    problem: str | None = None


STEP_TASKS = ("detection", "classification")


def crop_boxes(
    pixels: np.ndarray, boxes: list[tuple[float, float, float, float]], spec: CropSpec
) -> tuple[list[int], list[RgbFrame]]:
    """The padded crops of the first ``spec.max_boxes`` boxes big enough, and their indices."""
    height, width = int(pixels.shape[0]), int(pixels.shape[1])
    kept: list[int] = []
    crops: list[RgbFrame] = []
    for index, (x1, y1, x2, y2) in enumerate(boxes):
        if len(kept) == spec.max_boxes:
            break
        bw, bh = x2 - x1, y2 - y1
        if bw < spec.min_size or bh < spec.min_size:
            continue
        pad_x, pad_y = bw * spec.padding, bh * spec.padding
        left, top = max(0, int(np.floor(x1 - pad_x))), max(0, int(np.floor(y1 - pad_y)))
        right = min(width, int(np.ceil(x2 + pad_x)))
        bottom = min(height, int(np.ceil(y2 + pad_y)))
        if right - left < 1 or bottom - top < 1:
            continue
        kept.append(index)
        crops.append(RgbFrame(pixels[top:bottom, left:right]))
    return kept, crops


class Plane(Protocol):
    """What a pipeline needs of the data plane (``care_serve.serving.data_plane``)."""

    settings: Settings
    manager: ModelManager
    metrics: ServingMetrics
    pools: WorkerPools

    async def infer_images(
        self,
        name: str,
        items: Sequence[ImageInput],
        *,
        version: int | str | None = None,
        params: Mapping[str, Any] | None = None,
        protocol: str,
        timeout_s: float | None = None,
        background: bool = False,
    ) -> list[InferenceResult]: ...


class PipelineRunner:
    """Runs the pipelines of the store's configuration over a data plane."""

    def __init__(self, plane: Plane) -> None:
        self.plane = plane

    # -- what exists -------------------------------------------------------------------
    def specs(self) -> dict[str, PipelineSpec]:
        """The pipelines of ``store.json``, by name."""
        return dict(self.plane.manager.config.pipelines)

    def spec(self, name: str) -> PipelineSpec:
        """The pipeline ``name`` or ``NotFound`` listing the others."""
        spec = self.specs().get(name)
        if spec is None:
            known = ", ".join(sorted(self.specs())) or "none (add them to store.json)"
            raise NotFound(f"no pipeline named {name!r}; pipelines: {known}")
        return spec

    def describe(self, name: str) -> PipelineInfo:
        """A pipeline, its steps and whether every step's model serves."""
        spec = self.spec(name)
        steps = []
        problem = None
        for step, needed in zip(spec.steps, STEP_TASKS, strict=False):
            task = self.plane.manager.serving_task(step.model)
            steps.append(
                PipelineStepInfo(
                    name=step.name, model=step.model, task=task, serving=task is not None
                )
            )
            if problem is None:
                problem = _step_problem(name, step.name, step.model, task, needed)
        return PipelineInfo(
            name=name,
            description=spec.description,
            ready=problem is None,
            steps=steps,
            problem=problem,
        )

    def list(self) -> list[PipelineInfo]:
        return [self.describe(name) for name in sorted(self.specs())]

    # -- running -------------------------------------------------------------------------
    async def run(
        self,
        name: str,
        data: bytes | Reader | ImageInput,
        *,
        protocol: str,
        timeout_s: float | None = None,
        background: bool = False,
    ) -> PipelineResult:
        """Run pipeline ``name`` on one image (bytes, a body reader or an RGB frame)."""
        plane = self.plane
        metrics = plane.metrics
        try:
            spec = self.spec(name)
        except CareServeError:
            metrics.pipeline_requests.labels("", protocol, "not_found").inc()
            raise
        try:
            result = await self._run(name, spec, data, protocol, timeout_s, background)
        except CareServeError as exc:
            metrics.pipeline_requests.labels(name, protocol, outcome_of(exc)).inc()
            raise
        except Exception:
            metrics.pipeline_requests.labels(name, protocol, "error").inc()
            raise
        metrics.pipeline_requests.labels(name, protocol, "success").inc()
        for step, ms in result.timings_ms.items():
            metrics.pipeline_step_duration.labels(name, step).observe(ms / 1000.0)
        return result

    async def _run(
        self,
        name: str,
        spec: PipelineSpec,
        data: bytes | Reader | ImageInput,
        protocol: str,
        timeout_s: float | None,
        background: bool,
    ) -> PipelineResult:
        plane = self.plane
        loop = asyncio.get_running_loop()
        started = loop.time()
        limit = plane.settings.request_timeout_s
        if timeout_s is not None:
            if not timeout_s > 0:
                raise InvalidInput(f"the request timeout must be positive, got {timeout_s}")
            limit = min(limit, timeout_s)
        deadline = started + limit

        def remaining(stage: str) -> float:
            left = deadline - loop.time()
            if left <= 0:
                raise DeadlineExceeded(
                    f"the pipeline's deadline ({limit:.3g} s) passed before {stage}; send a "
                    "smaller image or raise the deadline"
                )
            return left

        for step, needed in zip(spec.steps, STEP_TASKS, strict=False):
            problem = _step_problem(
                name, step.name, step.model, plane.manager.serving_task(step.model), needed
            )
            if problem is not None:
                raise ModelNotReady(problem)

        timings: dict[str, float] = {}
        t0 = loop.time()
        if callable(data):
            data = await asyncio.wait_for(data(), remaining("the upload"))
        if isinstance(data, bytes):
            data = EncodedImage(data)
        pixels = await self._pixels(data, remaining("decoding"))
        timings["decode"] = loop.time() - t0

        detector = spec.detector
        t0 = loop.time()
        (found,) = await plane.infer_images(
            detector.model,
            [RgbFrame(pixels)],
            params=detector.parameters,
            protocol=protocol,
            timeout_s=remaining(f"step {detector.name}"),
            background=background,
        )
        timings[detector.name] = loop.time() - t0
        detections = [
            PipelineDetection(label=d.label, score=d.score, box=d.box)
            for d in found.result.detections  # type: ignore[attr-defined]
        ]

        classifier = spec.classifier
        if classifier is not None and classifier.crops is not None and detections:
            t0 = loop.time()
            kept, crops = crop_boxes(pixels, [d.box for d in detections], classifier.crops)
            timings["crop"] = loop.time() - t0
            plane.metrics.pipeline_crops.labels(name).observe(len(crops))
            if crops:
                t0 = loop.time()
                named = await plane.infer_images(
                    classifier.model,
                    crops,
                    params=classifier.parameters,
                    protocol=protocol,
                    timeout_s=remaining(f"step {classifier.name}"),
                    background=background,
                )
                timings[classifier.name] = loop.time() - t0
                for index, answer in zip(kept, named, strict=True):
                    detections[index].classification = _classification(answer)
        timings["total"] = loop.time() - started
        return PipelineResult(
            pipeline=name,
            image_width=int(pixels.shape[1]),
            image_height=int(pixels.shape[0]),
            detections=detections,
            timings_ms={k: round(v * 1000.0, 3) for k, v in timings.items()},
        )

    async def _pixels(self, item: ImageInput, timeout_s: float) -> np.ndarray:
        """The image's RGB pixels at full size (decoded within the server's limits)."""
        if isinstance(item, RgbFrame):
            return item.pixels
        if not isinstance(item, EncodedImage):
            raise InvalidInput("a pipeline takes an encoded image, not a preprocessed tensor")
        plane = self.plane
        settings = plane.settings
        loop = asyncio.get_running_loop()

        def probe() -> Any:
            return probe_image(
                item.data,
                max_bytes=settings.max_image_bytes,
                max_pixels=settings.max_image_pixels,
                allowed_formats=settings.allowed_image_formats,
            )

        def decode(probed: Any) -> np.ndarray:
            return np.asarray(load_image(probed).image)

        async def both() -> np.ndarray:
            probed = await loop.run_in_executor(plane.pools.small, probe)
            pool = plane.pools.for_pixels(probed.pixels)
            if plane.pools.is_large(probed.pixels):
                return await loop.run_in_executor(pool, plane.pools.trimmed, decode, probed)
            return await loop.run_in_executor(pool, decode, probed)

        try:
            return await asyncio.wait_for(both(), timeout_s)
        except asyncio.TimeoutError:
            raise DeadlineExceeded("the pipeline's deadline passed while decoding") from None


def _classification(answer: InferenceResult) -> CropClassification:
    result: Any = answer.result
    return CropClassification(
        model=answer.model,
        version=answer.version,
        predictions=[
            CropPrediction(label=p.label, score=p.probability) for p in result.predictions
        ],
        uncertain=bool(getattr(result, "uncertain", False)),
    )


def _step_problem(
    pipeline: str, step: str, model: str, task: str | None, needed: str
) -> str | None:
    """Why a step cannot run (its model does not serve, or serves another task)."""
    if task is None:
        return f"pipeline {pipeline}: the model {model!r} of step {step} is not serving"
    if task != needed:
        return (
            f"pipeline {pipeline}: step {step} needs a {needed} model, but {model!r} is a "
            f"{task} model"
        )
    return None
