"""``care_serve.v1.InferenceService``: parse, call the data plane, convert.

The inference methods come from the task registry: each task names its method
(``grpc_method``) and converts its request and reply messages.

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
from care_serve.serving.data_plane import DataPlane
from care_serve.serving.status import ModelList, ModelStatus
from care_serve.tasks.base import Task, task_classes
from care_serve.transports.grpc.context import authorization_of, timeout_of
from care_serve.transports.remedies import client_message, grpc_remedy

__all__ = ["InferenceServicer"]

log = logging.getLogger(__name__)
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


async def _guard(context: grpc.aio.ServicerContext, call: Callable[[], Awaitable[T]]) -> T:
    try:
        return await call()
    except CareServeError as exc:
        code = getattr(grpc.StatusCode, exc.grpc_code, grpc.StatusCode.INTERNAL)
        await context.abort(code, client_message(exc, grpc_remedy))
    except Exception:
        log.exception("internal error in a gRPC call")
        await context.abort(grpc.StatusCode.INTERNAL, "internal server error")
    raise AssertionError("unreachable")  # context.abort raises


class InferenceServicer(pb_grpc.InferenceServiceServicer):
    """Thin adapter from protobuf messages to the data plane."""

    def __init__(self, data_plane: DataPlane) -> None:
        self.data_plane = data_plane
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
