"""The data plane: the one inference layer both transports call.

REST and gRPC only parse their request, call ``DataPlane.infer`` (or the model
operations) and convert the result or the ``CareServeError``; model lookup,
decoding, preprocessing, batching, post-processing and metrics all happen here.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Mapping
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel

from service.errors import (
    CareServeError,
    DeadlineExceeded,
    InvalidInput,
    ModelNotReady,
    NotFound,
    ServerBusy,
    Unauthorized,
)
from service.imaging import DecodedImage, decode_image
from service.manager import LoadedModel, ModelManager
from service.metrics import ServingMetrics
from service.request_context import note_model
from service.settings import Settings
from service.tasks.preprocess import PreprocessMeta

__all__ = ["DataPlane", "InferenceResult", "outcome_of"]


@dataclass(frozen=True)
class InferenceResult:
    """A task result plus where the request spent its time (milliseconds)."""

    model: str
    version: int
    task: str
    result: BaseModel
    image_width: int
    image_height: int
    batch_size: int
    timings_ms: dict[str, float]


def outcome_of(exc: BaseException) -> str:
    """The ``outcome`` label of a failed request."""
    if isinstance(exc, ServerBusy):
        return "overloaded"
    if isinstance(exc, DeadlineExceeded):
        return "timeout"
    if isinstance(exc, NotFound):
        return "not_found"
    if isinstance(exc, InvalidInput):
        return "invalid_input"
    if isinstance(exc, ModelNotReady):
        return "unavailable"
    return "error"


class DataPlane:
    """Inference and model operations, independent of the transport."""

    def __init__(
        self,
        settings: Settings,
        manager: ModelManager,
        metrics: ServingMetrics,
        preprocess_executor: Executor,
    ) -> None:
        self.settings = settings
        self.manager = manager
        self.metrics = metrics
        self._executor = preprocess_executor

    # -- inference -----------------------------------------------------------------------
    async def infer(
        self,
        task: str,
        data: bytes,
        *,
        model: str | None = None,
        version: int | str | None = None,
        params: Mapping[str, Any] | None = None,
        protocol: str = "rest",
        timeout_s: float | None = None,
    ) -> InferenceResult:
        """Run one image through ``model`` (default: the task's default model)."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        labels: tuple[str, str, str] | None = None
        try:
            handle = self.manager.acquire(task, model, version)
        except CareServeError as exc:
            self.metrics.requests.labels("", "", protocol, outcome_of(exc)).inc()
            raise
        labels = (handle.name, str(handle.version), protocol)
        note_model(handle.name, handle.version)  # for the access log line
        try:
            result = await self._run(handle, data, params or {}, timeout_s, started, labels)
        except CareServeError as exc:
            self.metrics.requests.labels(*labels, outcome_of(exc)).inc()
            raise
        except Exception:
            self.metrics.requests.labels(*labels, "error").inc()
            raise
        finally:
            self.manager.release(handle)
        self.metrics.requests.labels(*labels, "success").inc()
        self.metrics.request_duration.labels(*labels).observe(loop.time() - started)
        return result

    def _deadline(self, handle: LoadedModel, started: float, timeout_s: float | None) -> float:
        default = handle.manifest.batching.request_timeout_ms
        limit = default / 1000.0 if default is not None else self.settings.request_timeout_s
        if timeout_s is not None:
            if not timeout_s > 0:
                raise InvalidInput(f"the request timeout must be positive, got {timeout_s}")
            limit = min(limit, timeout_s)
        return started + limit

    async def _run(
        self,
        handle: LoadedModel,
        data: bytes,
        params: Mapping[str, Any],
        timeout_s: float | None,
        started: float,
        labels: tuple[str, str, str],
    ) -> InferenceResult:
        loop = asyncio.get_running_loop()
        parsed = handle.task.parse_params(params)
        deadline = self._deadline(handle, started, timeout_s)
        image, array, meta, decode_s, pre_s = await loop.run_in_executor(
            self._executor, self._prepare, handle, data
        )
        self.metrics.preprocess_duration.labels(*labels).observe(decode_s + pre_s)
        outputs, timing = await handle.batcher.submit(array, deadline)
        self.metrics.queue_duration.labels(*labels).observe(timing.queue_s)
        self.metrics.compute_duration.labels(*labels).observe(timing.compute_s)
        # Off the event loop: dense post-processing (mask resizing, PNG encoding, overlays)
        # takes milliseconds to a second and would stall every other request.
        result, post_s = await loop.run_in_executor(
            self._executor, self._postprocess, handle, outputs, meta, parsed
        )
        self.metrics.postprocess_duration.labels(*labels).observe(post_s)
        total = loop.time() - started
        ms = {
            "decode": decode_s,
            "preprocess": pre_s,
            "queue": timing.queue_s,
            "compute": timing.compute_s,
            "postprocess": post_s,
            "total": total,
        }
        return InferenceResult(
            model=handle.name,
            version=handle.version,
            task=handle.manifest.task,
            result=result,
            image_width=image.width,
            image_height=image.height,
            batch_size=timing.batch_size,
            timings_ms={k: round(v * 1000.0, 3) for k, v in ms.items()},
        )

    @staticmethod
    def _postprocess(
        handle: LoadedModel, outputs: dict[str, np.ndarray], meta: PreprocessMeta, params: Any
    ) -> tuple[BaseModel, float]:
        start = time.perf_counter()
        result = handle.task.postprocess(outputs, meta, params)
        return result, time.perf_counter() - start

    def _prepare(
        self, handle: LoadedModel, data: bytes
    ) -> tuple[DecodedImage, np.ndarray, PreprocessMeta, float, float]:
        t0 = time.perf_counter()
        image = decode_image(
            data,
            max_bytes=self.settings.max_image_bytes,
            max_pixels=self.settings.max_image_pixels,
            allowed_formats=self.settings.allowed_image_formats,
        )
        t1 = time.perf_counter()
        array, meta = handle.task.preprocess(image)
        return image, array, meta, t1 - t0, time.perf_counter() - t1

    # -- model operations ----------------------------------------------------------------
    def check_admin(self, authorization: str | None) -> None:
        """Raise ``Unauthorized`` unless the admin token is unset or ``Bearer <token>``."""
        token = self.settings.admin_token
        if token is None:
            return
        scheme, _, given = (authorization or "").partition(" ")
        expected = token.get_secret_value().encode()
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
            raise Unauthorized(
                "this operation needs the admin token: send 'Authorization: Bearer <token>'"
            )

    async def load_model(
        self, name: str, version: int | str | None, authorization: str | None
    ) -> dict[str, Any]:
        self.check_admin(authorization)
        await self.manager.load(name, version)
        return self.manager.describe(name)

    async def unload_model(self, name: str, authorization: str | None) -> dict[str, Any]:
        self.check_admin(authorization)
        await self.manager.unload(name)
        return self.manager.describe(name)

    def list_models(self) -> list[dict[str, Any]]:
        return self.manager.list_models()

    def model_detail(self, name: str) -> dict[str, Any]:
        return self.manager.describe(name)

    def ready(self) -> bool:
        return self.manager.ready()
