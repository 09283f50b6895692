"""``care_serve.v1.InferenceService``: parse, call the data plane, convert.

Errors map once: a ``CareServeError`` becomes its ``grpc_code`` with the message
as details; anything else becomes INTERNAL without a traceback. The call's
deadline (``context.time_remaining()``) becomes the request deadline.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from care_serve.errors import CareServeError
from care_serve.grpc_gen.care_serve.v1 import inference_pb2 as pb
from care_serve.grpc_gen.care_serve.v1 import inference_pb2_grpc as pb_grpc
from care_serve.serving.data_plane import DataPlane, InferenceResult
from care_serve.tasks.classification import ClassificationResult
from care_serve.tasks.detection import DetectionResult
from care_serve.tasks.segmentation import SegmentationResult
from care_serve.transports.grpc.context import authorization_of, timeout_of

__all__ = ["InferenceServicer"]

log = logging.getLogger(__name__)
T = TypeVar("T")


def _timings(ms: dict[str, float]) -> Any:
    return pb.Timings(
        decode_ms=ms["decode"],
        preprocess_ms=ms["preprocess"],
        queue_ms=ms["queue"],
        compute_ms=ms["compute"],
        postprocess_ms=ms["postprocess"],
        total_ms=ms["total"],
    )


def _model_info(info: dict[str, Any]) -> Any:
    inp = info.get("input") or {}
    card = info.get("model_card") or {}
    return pb.ModelInfo(
        name=info["name"],
        state=info["state"],
        loaded_version=info.get("loaded_version") or 0,
        versions=info.get("versions", []),
        task=info.get("task", ""),
        architecture=info.get("architecture", ""),
        format=info.get("format", ""),
        input_height=inp.get("height", 0),
        input_width=inp.get("width", 0),
        num_classes=info.get("num_classes", 0),
        backend=info.get("backend", ""),
        error=info.get("error") or "",
        description=card.get("description", ""),
        loaded_versions=info.get("loaded_versions", []),
        default_for=info.get("default_for", []),
        version_policy=_policy(info.get("version_policy") or {}),
        version_status=[
            pb.VersionStatus(
                version=s["version"],
                state=s["state"],
                is_default=s["default"],
                in_policy=s["in_policy"],
                error=s["error"] or "",
            )
            for s in info.get("version_status", [])
        ],
        error_version=info.get("error_version") or 0,
    )


def _policy(policy: dict[str, Any]) -> Any:
    if "specific" in policy:
        return pb.VersionPolicy(specific=pb.VersionPolicy.Versions(versions=policy["specific"]))
    if policy.get("all"):
        return pb.VersionPolicy(all=True)
    return pb.VersionPolicy(latest=policy.get("latest", 1))


async def _guard(context: grpc.aio.ServicerContext, call: Callable[[], Awaitable[T]]) -> T:
    try:
        return await call()
    except CareServeError as exc:
        code = getattr(grpc.StatusCode, exc.grpc_code, grpc.StatusCode.INTERNAL)
        await context.abort(code, exc.message)
    except Exception:
        log.exception("internal error in a gRPC call")
        await context.abort(grpc.StatusCode.INTERNAL, "internal server error")
    raise AssertionError("unreachable")  # context.abort raises


class InferenceServicer(pb_grpc.InferenceServiceServicer):
    """Thin adapter from protobuf messages to the data plane."""

    def __init__(self, data_plane: DataPlane) -> None:
        self.data_plane = data_plane

    async def _infer(
        self, task: str, request: Any, params: dict[str, Any], context: Any
    ) -> InferenceResult:
        return await self.data_plane.infer(
            task,
            request.image,
            model=request.model or None,
            version=request.version or None,
            params=params,
            protocol="grpc",
            timeout_s=timeout_of(context),
        )

    async def Classify(self, request: Any, context: Any) -> Any:
        params = {"top_k": request.top_k if request.HasField("top_k") else None}
        result = await _guard(
            context, lambda: self._infer("classification", request, params, context)
        )
        assert isinstance(result.result, ClassificationResult)
        return pb.ClassifyResponse(
            model=result.model,
            version=result.version,
            predictions=[
                pb.Classification(label=p.label, class_id=p.class_id, probability=p.probability)
                for p in result.result.predictions
            ],
            timings=_timings(result.timings_ms),
            batch_size=result.batch_size,
            image_width=result.image_width,
            image_height=result.image_height,
        )

    async def Detect(self, request: Any, context: Any) -> Any:
        params: dict[str, Any] = {}
        if request.HasField("score_threshold"):
            params["score_threshold"] = request.score_threshold
        if request.HasField("max_detections"):
            params["max_detections"] = request.max_detections
        if request.HasField("class_agnostic_nms"):
            params["class_agnostic_nms"] = request.class_agnostic_nms
        params["return_overlay"] = request.return_overlay
        result = await _guard(context, lambda: self._infer("detection", request, params, context))
        assert isinstance(result.result, DetectionResult)
        return pb.DetectResponse(
            model=result.model,
            version=result.version,
            image_width=result.image_width,
            image_height=result.image_height,
            detections=[
                pb.Detection(
                    label=d.label,
                    class_id=d.class_id,
                    score=d.score,
                    box=pb.Box(x1=d.box[0], y1=d.box[1], x2=d.box[2], y2=d.box[3]),
                )
                for d in result.result.detections
            ],
            timings=_timings(result.timings_ms),
            batch_size=result.batch_size,
            overlay_png=result.result.overlay_png or b"",
        )

    async def Segment(self, request: Any, context: Any) -> Any:
        params = {"return_overlay": request.return_overlay}
        result = await _guard(
            context, lambda: self._infer("segmentation", request, params, context)
        )
        seg = result.result
        assert isinstance(seg, SegmentationResult)
        return pb.SegmentResponse(
            model=result.model,
            version=result.version,
            image_width=result.image_width,
            image_height=result.image_height,
            class_names=seg.class_names,
            mask_png=seg.mask_png,
            class_shares=[
                pb.ClassShare(label=c.label, class_id=c.class_id, share=c.share)
                for c in seg.class_shares
            ],
            overlay_png=seg.overlay_png or b"",
            mask_width=int(seg.mask.shape[1]),
            mask_height=int(seg.mask.shape[0]),
            timings=_timings(result.timings_ms),
            batch_size=result.batch_size,
        )

    async def ListModels(self, request: Any, context: Any) -> Any:
        async def call() -> list[dict[str, Any]]:
            return self.data_plane.list_models()

        models = await _guard(context, call)
        defaults = {task: d["model"] for task, d in self.data_plane.manager.defaults().items()}
        return pb.ListModelsResponse(models=[_model_info(m) for m in models], defaults=defaults)

    async def GetModel(self, request: Any, context: Any) -> Any:
        async def call() -> dict[str, Any]:
            return self.data_plane.model_detail(request.name)

        return _model_info(await _guard(context, call))

    async def LoadModel(self, request: Any, context: Any) -> Any:
        async def call() -> dict[str, Any]:
            version = request.version or None
            return await self.data_plane.load_model(
                request.name, version, authorization_of(context)
            )

        return _model_info(await _guard(context, call))

    async def UnloadModel(self, request: Any, context: Any) -> Any:
        async def call() -> dict[str, Any]:
            version = request.version or None
            return await self.data_plane.unload_model(
                request.name, authorization_of(context), version
            )

        return _model_info(await _guard(context, call))
