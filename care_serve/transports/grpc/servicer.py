"""``care_serve.v1.InferenceService``: parse, call the data plane, convert.

The inference methods come from the task registry: each task names its method
(``grpc_method``) and converts its request and reply messages. Pipelines run through
``DataPlane.pipelines``; streams are the ``StreamManager``'s (``AddStream`` takes the
``StreamSpec`` as JSON, ``WatchStream`` streams a subscription's events).

Errors map once: a ``CareServeError`` becomes its ``grpc_code`` with the message
as details; anything else becomes INTERNAL without a traceback. The call's
deadline (``context.time_remaining()``) becomes the request deadline.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
from pydantic import ValidationError

from care_serve.errors import CareServeError, InvalidInput, validation_problems
from care_serve.grpc_gen.care_serve.v1 import inference_pb2 as pb
from care_serve.grpc_gen.care_serve.v1 import inference_pb2_grpc as pb_grpc
from care_serve.serving.data_plane import DataPlane
from care_serve.serving.pipelines import PipelineInfo, PipelineResult
from care_serve.serving.status import ModelList, ModelStatus
from care_serve.store.streams import StreamSpec
from care_serve.streams.events import StreamEvent
from care_serve.streams.manager import StreamManager
from care_serve.streams.stream import Stream, StreamStatus
from care_serve.tasks.base import Task, task_classes
from care_serve.transports.grpc.context import authorization_of, timeout_of
from care_serve.transports.grpc_abort import answer_or_abort
from care_serve.transports.remedies import client_message, grpc_remedy

__all__ = ["InferenceServicer"]

T = TypeVar("T")


def _model_info(status: ModelStatus) -> Any:
    """``ModelInfo`` of a model's status, field by field (proto3: 0 / "" for none)."""
    card = status.model_card or {}
    return pb.ModelInfo(
        name=status.name,
        state=status.state,
        loaded_version=status.loaded_version or 0,
        versions=status.versions,
        task=status.task or "",
        architecture=status.architecture or "",
        format=status.format or "",
        input_height=(status.input or {}).get("height", 0),
        input_width=(status.input or {}).get("width", 0),
        num_classes=status.num_classes or 0,
        backend=status.backend or "",
        error=status.error or "",
        description=card.get("description", ""),
        loaded_versions=status.loaded_versions,
        default_for=status.default_for,
        version_policy=_policy(status.version_policy),
        version_status=[
            pb.VersionStatus(
                version=v.version,
                state=v.state,
                is_default=v.default,
                in_policy=v.in_policy,
                error=v.error or "",
            )
            for v in status.version_status
        ],
        error_version=status.error_version or 0,
    )


def _policy(policy: dict[str, Any]) -> Any:
    if "specific" in policy:
        return pb.VersionPolicy(specific=pb.VersionPolicy.Versions(versions=policy["specific"]))
    if policy.get("all"):
        return pb.VersionPolicy(all=True)
    return pb.VersionPolicy(latest=policy.get("latest", 1))


def _pipeline_result(result: PipelineResult) -> Any:
    detections = []
    for d in result.detections:
        c = d.classification
        detections.append(
            pb.PipelineDetection(
                label=d.label,
                score=d.score,
                box=pb.Box(x1=d.box[0], y1=d.box[1], x2=d.box[2], y2=d.box[3]),
                classification=None
                if c is None
                else pb.CropClassification(
                    model=c.model,
                    version=c.version,
                    predictions=[
                        pb.CropPrediction(label=p.label, score=p.score) for p in c.predictions
                    ],
                    uncertain=c.uncertain,
                ),
            )
        )
    return pb.RunPipelineResponse(
        pipeline=result.pipeline,
        image_width=result.image_width,
        image_height=result.image_height,
        detections=detections,
        timings_ms=result.timings_ms,
    )


def _pipeline_info(info: PipelineInfo) -> Any:
    return pb.PipelineInfo(
        name=info.name,
        description=info.description,
        ready=info.ready,
        steps=[
            pb.PipelineStep(name=s.name, model=s.model, task=s.task or "", serving=s.serving)
            for s in info.steps
        ],
        problem=info.problem or "",
    )


def _stream_info(status: StreamStatus) -> Any:
    return pb.StreamInfo(
        name=status.name,
        source=status.source,
        pipeline=status.pipeline or "",
        model=status.model or "",
        state=status.state,
        error=status.error or "",
        max_fps=status.max_fps,
        fps_in=status.fps_in,
        fps_out=status.fps_out,
        frames_decoded=status.frames_decoded,
        frames_processed=status.frames_processed,
        frames_dropped=status.frames_dropped,
        frames_skipped=status.frames_skipped,
        frames_failed=status.frames_failed,
        lag_ms=status.lag_ms,
        reconnects=status.reconnects,
        width=status.width,
        height=status.height,
        sinks=[
            pb.StreamSink(
                type=s.type,
                url=s.url,
                connected=s.connected,
                delivered=s.delivered,
                failed=s.failed,
                last_error=s.last_error or "",
            )
            for s in status.sinks
        ],
        spec_json=json.dumps(status.spec),
    )


def _stream_event(event: StreamEvent) -> Any:
    return pb.StreamEvent(
        stream=event.stream,
        frame=event.frame,
        source_time=event.source_time,
        captured_at=event.captured_at,
        latency_ms=event.latency_ms,
        result_json=json.dumps(event.result),
    )


def _stream_spec(spec_json: str) -> StreamSpec:
    """The ``StreamSpec`` of ``AddStream``'s JSON, or ``InvalidInput`` naming each problem."""
    try:
        return StreamSpec.model_validate_json(spec_json or "{}")
    except ValidationError as exc:
        problems = validation_problems(exc)
        raise InvalidInput(f"spec_json is not a valid stream: {problems}") from None


def _status(exc: CareServeError) -> tuple[grpc.StatusCode, str]:
    code = getattr(grpc.StatusCode, exc.grpc_code, grpc.StatusCode.INTERNAL)
    return code, client_message(exc, grpc_remedy)


async def _guard(context: grpc.aio.ServicerContext, call: Callable[[], Awaitable[T]]) -> T:
    return await answer_or_abort(context, call, _status, "gRPC")


class InferenceServicer(pb_grpc.InferenceServiceServicer):
    """Thin adapter from protobuf messages to the data plane."""

    def __init__(self, data_plane: DataPlane, streams: StreamManager) -> None:
        self.data_plane = data_plane
        self.streams = streams
        for task in task_classes():
            setattr(self, task.grpc_method, self._task_method(task))

    def _task_method(self, task: type[Task]) -> Callable[[Any, Any], Awaitable[Any]]:
        """The handler of ``task``'s inference method."""

        async def method(request: Any, context: Any) -> Any:
            params = task.grpc_params(request)
            result = await _guard(
                context,
                lambda: self.data_plane.infer(
                    task.name,
                    request.image,
                    model=request.model or None,
                    version=request.version or None,
                    params=params,
                    protocol="grpc",
                    timeout_s=timeout_of(context),
                ),
            )
            return task.grpc_reply(result)

        return method

    async def ListModels(self, request: Any, context: Any) -> Any:
        async def call() -> ModelList:
            return self.data_plane.list_models()

        listing = await _guard(context, call)
        defaults = {task: d.model for task, d in listing.defaults.items()}
        return pb.ListModelsResponse(
            models=[_model_info(m) for m in listing.models], defaults=defaults
        )

    async def GetModel(self, request: Any, context: Any) -> Any:
        async def call() -> ModelStatus:
            return self.data_plane.model_detail(request.name)

        return _model_info(await _guard(context, call))

    async def LoadModel(self, request: Any, context: Any) -> Any:
        async def call() -> ModelStatus:
            version = request.version or None
            return await self.data_plane.load_model(
                request.name, version, authorization_of(context)
            )

        return _model_info(await _guard(context, call))

    async def UnloadModel(self, request: Any, context: Any) -> Any:
        async def call() -> ModelStatus:
            version = request.version or None
            return await self.data_plane.unload_model(
                request.name, version, authorization_of(context)
            )

        return _model_info(await _guard(context, call))

    async def RunPipeline(self, request: Any, context: Any) -> Any:
        async def call() -> PipelineResult:
            return await self.data_plane.pipelines.run(
                request.pipeline, request.image, protocol="grpc", timeout_s=timeout_of(context)
            )

        return _pipeline_result(await _guard(context, call))

    async def ListPipelines(self, request: Any, context: Any) -> Any:
        async def call() -> list[PipelineInfo]:
            return self.data_plane.pipelines.list()

        infos = await _guard(context, call)
        return pb.ListPipelinesResponse(pipelines=[_pipeline_info(i) for i in infos])

    async def ListStreams(self, request: Any, context: Any) -> Any:
        async def call() -> list[StreamStatus]:
            return self.streams.list()

        statuses = await _guard(context, call)
        return pb.ListStreamsResponse(streams=[_stream_info(s) for s in statuses])

    async def GetStream(self, request: Any, context: Any) -> Any:
        async def call() -> StreamStatus:
            return self.streams.get(request.name).status()

        return _stream_info(await _guard(context, call))

    async def AddStream(self, request: Any, context: Any) -> Any:
        async def call() -> StreamStatus:
            return await self.streams.add(_stream_spec(request.spec_json))

        return _stream_info(await _guard(context, call))

    async def RemoveStream(self, request: Any, context: Any) -> Any:
        async def call() -> StreamStatus:
            return await self.streams.remove(request.name)

        return _stream_info(await _guard(context, call))

    async def WatchStream(self, request: Any, context: Any) -> AsyncIterator[Any]:
        async def call() -> Stream:
            return self.streams.get(request.name)

        stream = await _guard(context, call)
        with stream.subscription() as events:
            while (event := await events.get()) is not None:
                yield _stream_event(event)
