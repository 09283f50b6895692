"""The data plane: the one inference layer both transports call.

REST and gRPC only parse their request, call ``DataPlane.infer`` (or the model
operations) and convert the result or the ``CareServeError``; model lookup,
admission, decoding, preprocessing, batching, post-processing and metrics all
happen here.

A request's life, each stage bounded by the request deadline:

1. **admission** (``ModelManager.admit``): the model admits at most
   ``max_queue_size + max_batch_size`` requests at once, counted from the moment
   a request arrives (before its body is read), else ``ServerBusy`` (503 +
   ``Retry-After`` / RESOURCE_EXHAUSTED);
2. **read** the body (REST passes a reader, so a slow upload counts as admitted);
3. **decode + preprocess** in the ``small`` pool, or in the one-thread ``large``
   pool for images whose decode holds over ``large_image_pixels``
   (``care_serve.serving.workers``; ``decoded_pixels``: a baseline JPEG decoded at
   reduced scale counts at its reduced size);
4. **queue + compute** in the model's dynamic batcher;
5. **post-process** (inline for cheap tasks, else in the pool of its size).

A stage that outlives the deadline answers ``DeadlineExceeded`` at once (work
already running in a thread finishes there and is dropped). During shutdown
new requests get ``ShuttingDown``, and ``abort_inflight`` answers the ones
still running when the grace period ends (503 / UNAVAILABLE, never a cut
connection).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from pydantic import BaseModel

from care_serve.errors import (
    CareServeError,
    DeadlineExceeded,
    InvalidInput,
    ServerBusy,
    ShuttingDown,
)
from care_serve.imaging.decode import (
    DecodedImage,
    ImageProbe,
    decoded_pixels,
    load_image,
    probe_image,
)
from care_serve.imaging.inputs import (
    EncodedImage,
    ImageInput,
    InputTensor,
    RgbFrame,
    check_input_tensor,
    frame_to_image,
)
from care_serve.imaging.preprocess import PreprocessMeta
from care_serve.observability.metrics import ServingMetrics
from care_serve.observability.request_context import current_key, note_model
from care_serve.serving.auth import Authorizer
from care_serve.serving.loader import LoadedModel
from care_serve.serving.manager import ModelManager
from care_serve.serving.outcomes import outcome_of
from care_serve.serving.pipelines import PipelineRunner
from care_serve.serving.status import ModelList, ModelStatus
from care_serve.serving.workers import WorkerPools
from care_serve.settings import Settings
from care_serve.store.repository import check_name, check_version
from care_serve.tasks.base import InferenceResult

__all__ = ["BodyReader", "DataPlane", "InferenceResult"]

T = TypeVar("T")
BodyReader = Callable[[], Awaitable[bytes]]


@dataclass(frozen=True)
class _Prepared:
    """A decoded, preprocessed image (the full-size image itself is not kept)."""

    width: int
    height: int
    array: np.ndarray
    meta: PreprocessMeta
    decode_s: float
    preprocess_s: float
    large: bool


@dataclass(frozen=True)
class _Probed:
    """An image whose header was checked, with the size it will be decoded at."""

    probe: ImageProbe
    reduce_to: tuple[int, int] | None
    probe_s: float


@dataclass(frozen=True)
class _Request:
    """What every image of one request shares."""

    loaded: LoadedModel
    params: Any
    started: float
    deadline: float
    limit_s: float
    labels: tuple[str, str, str]
    background: bool = False


def _note_target(name: str, version: int | str | None) -> None:
    """For the access log: the model a load/unload names, and the version when one is given.

    Only valid names and versions are noted (a refused one is the error's to describe).
    """
    try:
        checked = check_name(name)
    except InvalidInput:
        return
    number = None
    if version is not None and version not in ("", 0):
        with contextlib.suppress(InvalidInput):
            number = check_version(version)
    note_model(checked, number)


class DataPlane:
    """Inference and model operations, independent of the transport."""

    def __init__(
        self,
        settings: Settings,
        manager: ModelManager,
        metrics: ServingMetrics,
        pools: WorkerPools,
    ) -> None:
        self.settings = settings
        self.manager = manager
        self.metrics = metrics
        self.pools = pools
        self.auth = Authorizer(settings, metrics)
        self.pipelines = PipelineRunner(self)
        self.draining = False
        self.inflight = 0
        self._abort: asyncio.Future[None] | None = None

    # -- shutdown ------------------------------------------------------------------------
    def start_draining(self) -> None:
        """Refuse new requests with ``ShuttingDown``; running ones go on."""
        self.draining = True

    def abort_inflight(self) -> None:
        """Answer every request still running with ``ShuttingDown`` (grace period over)."""
        if self._abort is not None and not self._abort.done():
            self._abort.set_result(None)

    def _abort_future(self) -> asyncio.Future[None]:
        if self._abort is None:
            self._abort = asyncio.get_running_loop().create_future()
        return self._abort

    # -- inference -----------------------------------------------------------------------
    async def infer(
        self,
        task: str,
        data: bytes | BodyReader | ImageInput,
        *,
        model: str | None = None,
        version: int | str | None = None,
        params: Mapping[str, Any] | None = None,
        protocol: str = "rest",
        timeout_s: float | None = None,
    ) -> InferenceResult:
        """Run one image through ``model`` (default: the task's default model).

        ``data`` is the encoded image, a coroutine function that reads it (REST
        passes its body reader, so the request is admitted before its upload), an
        RGB frame or a preprocessed input tensor.
        """
        started = asyncio.get_running_loop().time()
        loaded = self._lookup(protocol, lambda: self.manager.lookup(task, model, version))

        async def run(request: _Request) -> InferenceResult:
            item = data
            if callable(item):
                item = await self._stage("the upload", item(), request)
            return await self._run_one(
                request, item if not isinstance(item, bytes) else EncodedImage(item)
            )

        return await self._serve(loaded, 1, params, protocol, timeout_s, started, run)

    async def infer_images(
        self,
        name: str,
        items: Sequence[ImageInput],
        *,
        version: int | str | None = None,
        params: Mapping[str, Any] | BaseModel | None = None,
        protocol: str,
        timeout_s: float | None = None,
        background: bool = False,
    ) -> list[InferenceResult]:
        """Run several images (encoded, RGB frames or input tensors) through model ``name``.

        Every image is one item of the model's batcher; the images of one request are
        prepared first and queued together, so they batch with each other (and with
        other requests); they share the request's
        deadline and count as that many requests for admission. The request counts
        once in ``care_inference_requests`` and its duration; the stage histograms
        get one observation per image. ``params`` is either the task's request
        parameters (validated by the task) or an already-parsed parameter object.
        ``background`` work (a stream's frames) yields to requests in the batcher and
        may hold at most half of the model's places.
        """
        started = asyncio.get_running_loop().time()
        loaded = self._lookup(protocol, lambda: self.serving_model(name, version))
        limit = loaded.manifest.batching.max_queue_size
        if not items or len(items) > limit:
            exc = InvalidInput(
                f"a request to {loaded.name} carries 1 to {limit} images (its "
                f"max_queue_size), got {len(items)}"
            )
            self.record_rejected(loaded, protocol, exc)
            raise exc

        async def run(request: _Request) -> list[InferenceResult]:
            return await self._run_together(request, items)

        return await self._serve(
            loaded, len(items), params, protocol, timeout_s, started, run, background
        )

    def serving_model(self, name: str, version: int | str | None = None) -> LoadedModel:
        """The loaded version of ``name`` serving requests (``NotFound``, ``ModelNotReady``)."""
        # lookup() checks the name and version before the task, so any task name gives the
        # same NotFound / ModelNotReady for a model that is not loaded.
        task = self.manager.serving_task(name) or "classification"
        return self.manager.lookup(task, name, version)

    def record_rejected(
        self, loaded: LoadedModel | None, protocol: str, exc: CareServeError
    ) -> None:
        """Count a request refused before inference (unknown model, tensors it cannot take)."""
        labels = (loaded.name, str(loaded.version)) if loaded is not None else ("", "")
        self.metrics.requests.labels(*labels, protocol, current_key(), outcome_of(exc)).inc()

    def _lookup(self, protocol: str, find: Callable[[], LoadedModel]) -> LoadedModel:
        try:
            if self.draining:
                raise ShuttingDown("the server is shutting down; retry on another replica")
            return find()
        except CareServeError as exc:
            self.record_rejected(None, protocol, exc)
            raise

    async def _serve(
        self,
        loaded: LoadedModel,
        images: int,
        params: Mapping[str, Any] | BaseModel | None,
        protocol: str,
        timeout_s: float | None,
        started: float,
        run: Callable[[_Request], Awaitable[T]],
        background: bool = False,
    ) -> T:
        """Admission, parameters, deadline, metrics and bookkeeping around ``run``."""
        labels = (loaded.name, str(loaded.version), protocol)
        note_model(loaded.name, loaded.version)  # for the access log line
        try:
            self.manager.admit(loaded, images, background=background)
        except ServerBusy as exc:
            self.record_rejected(loaded, protocol, exc)
            raise
        self.inflight += 1
        try:
            parsed = (
                params if isinstance(params, BaseModel) else loaded.task.parse_params(params or {})
            )
            limit = self._limit_s(loaded, timeout_s)
            request = _Request(loaded, parsed, started, started + limit, limit, labels, background)
            result = await run(request)
        except CareServeError as exc:
            self.metrics.requests.labels(*labels, current_key(), outcome_of(exc)).inc()
            raise
        except Exception:
            self.metrics.requests.labels(*labels, current_key(), "error").inc()
            raise
        finally:
            self.inflight -= 1
            self.manager.release(loaded, images)
        self.metrics.requests.labels(*labels, current_key(), "success").inc()
        elapsed = asyncio.get_running_loop().time() - started
        self.metrics.request_duration.labels(*labels).observe(elapsed)
        return result

    def _limit_s(self, loaded: LoadedModel, timeout_s: float | None) -> float:
        default = loaded.manifest.batching.request_timeout_ms
        limit = default / 1000.0 if default is not None else self.settings.request_timeout_s
        if timeout_s is not None:
            if not timeout_s > 0:
                raise InvalidInput(f"the request timeout must be positive, got {timeout_s}")
            limit = min(limit, timeout_s)
        return limit

    async def _stage(self, stage: str, work: Awaitable[T], request: _Request) -> T:
        """Await ``work`` until the deadline; ``DeadlineExceeded`` / ``ShuttingDown`` after."""
        future = asyncio.ensure_future(work)
        remaining = request.deadline - asyncio.get_running_loop().time()
        abort = self._abort_future()
        if remaining > 0 and not abort.done():
            await asyncio.wait((future, abort), timeout=remaining, return_when="FIRST_COMPLETED")
        if future.done():
            return future.result()
        future.cancel()
        if abort.done():
            raise ShuttingDown(
                "the server shut down before the request finished; retry on another replica"
            )
        raise DeadlineExceeded(
            f"the request deadline ({request.limit_s:.3g} s) passed during {stage}; send a "
            "smaller image, raise the deadline (X-Request-Timeout-Ms / the gRPC deadline) or "
            "retry"
        )

    async def _run_one(self, request: _Request, item: ImageInput) -> InferenceResult:
        """One image: prepare, batch, post-process, each stage within the deadline."""
        return await self._complete(request, await self._prepared(request, item))

    async def _run_together(
        self, request: _Request, items: Sequence[ImageInput]
    ) -> list[InferenceResult]:
        """Several images: all prepared first, then queued in one go, so they batch together."""
        prepared = await _all(self._prepared(request, item) for item in items)
        return await _all(self._complete(request, p) for p in prepared)

    async def _prepared(self, request: _Request, item: ImageInput) -> _Prepared:
        """Decode and preprocess ``item`` within the deadline."""
        loaded = request.loaded
        prepared = await self._stage("decoding", self._prepare(loaded, item, request), request)
        self.metrics.preprocess_duration.labels(*request.labels).observe(
            prepared.decode_s + prepared.preprocess_s
        )
        return prepared

    async def _complete(self, request: _Request, prepared: _Prepared) -> InferenceResult:
        """Batch, compute and post-process a prepared image within the deadline."""
        loop = asyncio.get_running_loop()
        loaded, labels = request.loaded, request.labels
        outputs, timing = await self._stage(
            "queueing and compute",
            loaded.batcher.submit(prepared.array, request.deadline, background=request.background),
            request,
        )
        self.metrics.queue_duration.labels(*labels).observe(timing.queue_s)
        self.metrics.compute_duration.labels(*labels).observe(timing.compute_s)
        if loaded.task.cheap_postprocess:
            result, post_s = self._postprocess(loaded, outputs, prepared.meta, request.params)
        else:
            pool = self.pools.large if prepared.large else self.pools.small
            job = self.pools.trimmed if prepared.large else _call
            post = loop.run_in_executor(
                pool, job, self._postprocess, loaded, outputs, prepared.meta, request.params
            )
            result, post_s = await self._stage("post-processing", post, request)
        self.metrics.postprocess_duration.labels(*labels).observe(post_s)
        ms = {
            "decode": prepared.decode_s,
            "preprocess": prepared.preprocess_s,
            "queue": timing.queue_s,
            "compute": timing.compute_s,
            "postprocess": post_s,
            "total": loop.time() - request.started,
        }
        return InferenceResult(
            model=loaded.name,
            version=loaded.version,
            task=loaded.manifest.task,
            result=result,
            image_width=prepared.width,
            image_height=prepared.height,
            batch_size=timing.batch_size,
            timings_ms={k: round(v * 1000.0, 3) for k, v in ms.items()},
        )

    @staticmethod
    def _postprocess(
        loaded: LoadedModel, outputs: dict[str, np.ndarray], meta: PreprocessMeta, params: Any
    ) -> tuple[BaseModel, float]:
        start = time.perf_counter()
        result = loaded.task.postprocess(outputs, meta, params)
        return result, time.perf_counter() - start

    async def _prepare(self, loaded: LoadedModel, item: ImageInput, request: _Request) -> _Prepared:
        """The network input of ``item``, in the pool its size calls for."""
        loop = asyncio.get_running_loop()
        deadline = request.deadline
        if isinstance(item, InputTensor):
            return self._from_tensor(loaded, item)
        if isinstance(item, RgbFrame):
            pixels = (
                int(item.pixels.shape[0]) * int(item.pixels.shape[1])
                if item.pixels.ndim >= 2
                else 0
            )
            pool = self.pools.for_pixels(pixels)
            job = self.pools.trimmed if self.pools.is_large(pixels) else _call
            return await loop.run_in_executor(pool, job, self._from_frame, loaded, item, deadline)
        first = await loop.run_in_executor(
            self.pools.small, self._probe_and_maybe_decode, loaded, item.data, deadline
        )
        if isinstance(first, _Prepared):
            return first
        return await loop.run_in_executor(
            self.pools.large, self.pools.trimmed, self._decode, loaded, first, deadline
        )

    def _probe_and_maybe_decode(
        self, loaded: LoadedModel, data: bytes, deadline: float
    ) -> _Prepared | _Probed:
        """Probe in the small pool; finish there unless the image is large."""
        _check_deadline(deadline)
        t0 = time.perf_counter()
        probe = probe_image(
            data,
            max_bytes=self.settings.max_image_bytes,
            max_pixels=self.settings.max_image_pixels,
            allowed_formats=self.settings.allowed_image_formats,
        )
        probed = _Probed(probe, loaded.task.reduce_to(probe), time.perf_counter() - t0)
        if self.pools.is_large(decoded_pixels(probe, probed.reduce_to)):
            return probed
        return self._decode(loaded, probed, deadline)

    def _decode(self, loaded: LoadedModel, probed: _Probed, deadline: float) -> _Prepared:
        _check_deadline(deadline)
        t0 = time.perf_counter()
        image = load_image(probed.probe, reduce_to=probed.reduce_to)
        return self._preprocess(loaded, image, probed.probe_s + time.perf_counter() - t0)

    def _from_frame(self, loaded: LoadedModel, frame: RgbFrame, deadline: float) -> _Prepared:
        _check_deadline(deadline)
        t0 = time.perf_counter()
        image = frame_to_image(frame, self.settings.max_image_pixels)
        return self._preprocess(loaded, image, time.perf_counter() - t0)

    def _preprocess(self, loaded: LoadedModel, image: DecodedImage, decode_s: float) -> _Prepared:
        t0 = time.perf_counter()
        array, meta = loaded.task.preprocess(image)
        large = self.pools.is_large(image.width * image.height)
        return _Prepared(
            image.width, image.height, array, meta, decode_s, time.perf_counter() - t0, large
        )

    @staticmethod
    def _from_tensor(loaded: LoadedModel, tensor: InputTensor) -> _Prepared:
        t0 = time.perf_counter()
        array = check_input_tensor(tensor, loaded.manifest)
        meta = loaded.task.tensor_meta()
        elapsed = time.perf_counter() - t0
        return _Prepared(meta.orig_width, meta.orig_height, array, meta, 0.0, elapsed, False)

    # -- model operations ----------------------------------------------------------------
    async def load_model(
        self, name: str, version: int | str | None, authorization: str | None
    ) -> ModelStatus:
        """Load one version beside the others, or (no version) what the policy selects."""
        _note_target(name, version)
        self.auth.check_model_control(authorization)
        await self.manager.load(name, version)
        return self.manager.describe(name)

    async def unload_model(
        self, name: str, version: int | str | None, authorization: str | None
    ) -> ModelStatus:
        """Unload one version, or (no version) every version of ``name``."""
        _note_target(name, version)
        self.auth.check_model_control(authorization)
        await self.manager.unload(name, version)
        return self.manager.describe(name)

    def list_models(self) -> ModelList:
        """Every model loaded or in the store, and the default model of each task."""
        return ModelList(models=self.manager.list_models(), defaults=self.manager.defaults())

    def model_detail(self, name: str) -> ModelStatus:
        return self.manager.describe(name)

    def ready(self) -> bool:
        return not self.draining and self.manager.ready()

    def serving_models(self) -> list[str]:
        """Every model with a serving version, by name."""
        return sorted(self.manager.loaded())

    def not_serving(self) -> list[str]:
        """Models that should be serving but are not (why the server is not ready)."""
        return self.manager.not_serving()

    def not_ready_reason(self) -> str | None:
        """Why the server is not ready, in a sentence (None when it is)."""
        if self.draining:
            return "the server is shutting down"
        return self.manager.not_ready_reason()

    def serving_versions(self, name: str) -> list[int]:
        """The serving versions of ``name`` (none when it does not serve)."""
        return sorted(self.manager.loaded_versions().get(name, {}))


def _call(fn: Callable[..., T], *args: Any) -> T:
    return fn(*args)


def _check_deadline(deadline: float) -> None:
    """In a worker thread: skip work whose deadline already passed while it waited."""
    if time.monotonic() >= deadline:
        raise DeadlineExceeded("the request deadline passed while it waited for a worker")


async def _all(coros: Iterable[Awaitable[T]]) -> list[T]:
    """Await every coroutine concurrently; on the first error cancel the rest and raise it."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
