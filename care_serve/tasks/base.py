"""The task plugin interface and the task registry.

A task turns a decoded image into one network input and one sample of network
outputs into a result. It never sees batching or backends:

    task = get_task_class(manifest.task)(manifest, labels, settings)
    params = task.parse_params({"top_k": 5})          # InvalidInput on bad values
    image = task.decode(probe_image(data, ...))       # reduced scale where allowed
    array, meta = task.preprocess(image)              # CHW float32, PreprocessMeta
    result = task.postprocess(outputs_for_one_sample, meta, params)

A task also declares how it looks on every protocol, so the transports are
generic loops over the registry: its REST route, query parameters and response
body (``route``, ``rest_query``, ``rest_answer``), its own-gRPC method
(``grpc_method``, ``grpc_params``, ``grpc_reply``) and its v2 outputs
(``v2_outputs``, ``v2_params``, ``v2_values``). A new task is a new module and a
line in ``care_serve.task_registry.TASK_MODULES`` (or ``register_task``), nothing in the transports.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict

from care_serve.errors import NotSupported
from care_serve.imaging.decode import DecodedImage, ImageProbe, load_image
from care_serve.imaging.preprocess import (
    FAST_REDUCING_GAP,
    PreprocessMeta,
    preprocess_image,
    resized_size,
)
from care_serve.settings import Settings
from care_serve.store.manifest import Manifest
from care_serve.task_registry import TASK_MODULES, register_task, task_names

__all__ = [
    "TASK_MODULES",
    "BinaryAnswer",
    "InferenceResult",
    "RestQuery",
    "Task",
    "TensorSpec",
    "Timings",
    "WholeImageTask",
    "get_task_class",
    "register_task",
    "task_classes",
    "task_names",
]

_LOADED: dict[str, type[Task]] = {}  # "module:Class" -> the class


class Timings(BaseModel):
    """Milliseconds spent in each stage inside the server."""

    decode: float
    preprocess: float
    queue: float
    compute: float
    postprocess: float
    total: float


@dataclass(frozen=True)
class InferenceResult:
    """A task result plus the model that made it and where the request spent its time."""

    model: str
    version: int
    task: str
    result: BaseModel
    image_width: int
    image_height: int
    batch_size: int
    timings_ms: dict[str, float]


@dataclass(frozen=True)
class BinaryAnswer:
    """A REST answer that is not JSON (an overlay or a mask PNG)."""

    content: bytes
    media_type: str = "image/png"
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class TensorSpec:
    """Name, datatype and shape (-1 = variable) of a v2 model input or output."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def describe(self) -> str:
        return f"{self.name} {self.datatype} {list(self.shape)}"


class RestQuery(BaseModel):
    """The REST query parameters of a task's route (besides ``model`` and ``version``).

    Each field becomes one documented query parameter; ``None`` means "not sent".
    A ``format`` field (a ``Literal`` whose first value is ``json``) chooses the answer.
    """

    model_config = ConfigDict(extra="forbid")


class Task(ABC):
    """One task bound to one model package, and its shape on every protocol."""

    name: ClassVar[str]
    #: post-processing takes microseconds: run it on the event loop, not in a worker.
    cheap_postprocess: ClassVar[bool] = False
    #: the model's outputs are classes with names (an embedding's are not).
    has_labels: ClassVar[bool] = True

    # -- REST: POST /{route} ----------------------------------------------------------------
    route: ClassVar[str]
    summary: ClassVar[str]
    rest_query: ClassVar[type[RestQuery]] = RestQuery
    rest_response: ClassVar[type[BaseModel]]

    # -- own gRPC: care_serve.v1.InferenceService/{grpc_method} ------------------------------
    grpc_method: ClassVar[str]

    # -- v2 -------------------------------------------------------------------------------------
    #: the output that Triton's classification extension may turn into top-k strings.
    v2_classification_output: ClassVar[str | None] = None
    #: the request parameters ``v2_params`` reads (any other a v2 request sends that the
    #: protocol does not define is refused, naming these).
    v2_parameters: ClassVar[tuple[str, ...]] = ()

    def __init__(self, manifest: Manifest, labels: list[str], settings: Settings) -> None:
        self.manifest = manifest
        self.labels = labels
        self.settings = settings

    @abstractmethod
    def parse_params(self, params: Mapping[str, Any]) -> BaseModel:
        """Validate request parameters (``InvalidInput`` naming the bad one)."""

    @property
    def fast_preprocess(self) -> bool:
        """Large images at reduced scale (``settings.reduced_decode``); else exact."""
        return self.settings.reduced_decode

    def decode_size(self, width: int, height: int) -> tuple[int, int] | None:
        """The smallest ``(width, height)`` an image of this size may be decoded at.

        ``None`` (the default) means full resolution.
        """
        return None

    def reduce_to(self, probe: ImageProbe) -> tuple[int, int] | None:
        """The smallest size ``probe`` may be decoded at: ``decode_size`` on the fast path,
        None (full resolution) on the exact one."""
        return self.decode_size(probe.width, probe.height) if self.fast_preprocess else None

    def decode(self, probe: ImageProbe) -> DecodedImage:
        """Decode a probed image: at reduced scale when fast and the format allows it."""
        return load_image(probe, reduce_to=self.reduce_to(probe))

    @abstractmethod
    def preprocess(self, image: DecodedImage) -> tuple[np.ndarray, PreprocessMeta]:
        """The normalised ``(3, H, W)`` float32 input and how it maps to the image."""

    def served_parameters(self) -> dict[str, dict[str, Any]]:
        """Each request parameter's served default and limits (``default``, ``minimum``,
        ``maximum``), as this model answers a request that leaves it out."""
        return {}

    def tensor_meta(self) -> PreprocessMeta:
        """The meta of an input that is already at the network's size (nothing to undo)."""
        w, h = self.manifest.input.width, self.manifest.input.height
        return PreprocessMeta(w, h, w, h, 1.0, 1.0, 0.0, 0.0)

    @abstractmethod
    def postprocess(
        self, outputs: Mapping[str, np.ndarray], meta: PreprocessMeta, params: Any
    ) -> BaseModel:
        """The result for one sample; ``outputs`` holds each output without the batch axis."""

    # -- REST ---------------------------------------------------------------------------------
    @classmethod
    def rest_params(cls, query: RestQuery) -> dict[str, Any]:
        """The task parameters of a REST request (default: every field that was sent)."""
        return query.model_dump(exclude_none=True, exclude={"format"})

    @classmethod
    @abstractmethod
    def rest_answer(cls, result: InferenceResult, query: RestQuery) -> BaseModel | BinaryAnswer:
        """The JSON body (a ``rest_response``) or, for another ``format``, the bytes."""

    @classmethod
    def openapi_limits(cls, settings: Settings) -> dict[str, dict[str, float]]:
        """Limits of query parameters that the task checks itself (for the OpenAPI doc)."""
        return {}

    # -- own gRPC -----------------------------------------------------------------------------
    @classmethod
    @abstractmethod
    def grpc_params(cls, request: Any) -> dict[str, Any]:
        """The task parameters of a gRPC request message (fields that are set)."""

    @classmethod
    @abstractmethod
    def grpc_reply(cls, result: InferenceResult) -> Any:
        """The gRPC response message of a result."""

    # -- v2 -------------------------------------------------------------------------------------
    @abstractmethod
    def v2_outputs(self) -> list[TensorSpec]:
        """The output tensors this model answers over the v2 protocol."""

    def v2_params(self, parameters: Mapping[str, Any]) -> Mapping[str, Any] | BaseModel:
        """The task parameters of a v2 request's ``parameters`` (default: none)."""
        return {}

    @abstractmethod
    def v2_values(self, results: Sequence[InferenceResult]) -> dict[str, Any]:
        """Every output of ``v2_outputs`` for a batch of results, by name."""


class WholeImageTask(Task):
    """A task that reads the whole image through the manifest's resize and crop (the
    classifier's preprocessing), so large images may be decoded at reduced scale."""

    def decode_size(self, width: int, height: int) -> tuple[int, int]:
        """What the manifest's resize needs: decoding smaller would only add upsampling."""
        return resized_size(width, height, self.manifest)

    def preprocess(self, image: DecodedImage) -> tuple[np.ndarray, PreprocessMeta]:
        fast = self.fast_preprocess
        return preprocess_image(
            image.image,
            self.manifest,
            size=(image.width, image.height),
            reducing_gap=FAST_REDUCING_GAP if fast else None,
            crop_only=fast,
        )


def get_task_class(name: str) -> type[Task]:
    """The task class for ``name``; ``NotSupported`` if this build has no such task."""
    target = TASK_MODULES.get(name)
    if target in _LOADED:
        return _LOADED[target]
    if target is None:
        raise NotSupported(
            f"task {name!r} is not available in this build "
            f"(available: {', '.join(sorted(TASK_MODULES))})"
        )
    module_name, _, class_name = target.partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    if not (isinstance(cls, type) and issubclass(cls, Task)):
        raise TypeError(f"{target} is not a Task subclass")
    _LOADED[target] = cls
    return cls


def task_classes() -> list[type[Task]]:
    """Every registered task class, in registration order."""
    return [get_task_class(name) for name in TASK_MODULES]
