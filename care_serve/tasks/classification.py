"""Image classification: the ImageNet eval transform in, softmax top-k out.

``postprocessing.min_logsumexp`` (optional, calibrated): an answer whose logits'
log-sum-exp (the negative "energy", a standard out-of-distribution score: low when
no class fits) is below it is marked ``uncertain``. ``care-serve evaluate
classification`` prints the value to use (``logsumexp_p05``: 95 % of the evaluated
in-domain images score above it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel, Field, ValidationError

from care_serve.errors import InferenceError, InvalidInput
from care_serve.grpc_gen.care_serve.v1 import inference_pb2 as pb
from care_serve.imaging.preprocess import PreprocessMeta
from care_serve.settings import Settings
from care_serve.tasks.base import (
    InferenceResult,
    RestQuery,
    TensorSpec,
    Timings,
    WholeImageTask,
)
from care_serve.tasks.wire import grpc_envelope, rest_envelope, strings_tensor

__all__ = [
    "ClassificationParams",
    "ClassificationResult",
    "ClassificationTask",
    "ClassifyQuery",
    "ClassifyResponse",
    "Prediction",
]

DEFAULT_TOP_K = 5


class ClassificationParams(BaseModel):
    """Request parameters of /classify."""

    top_k: int = Field(DEFAULT_TOP_K, description="How many classes to return.")


class Prediction(BaseModel):
    """One class of the top-k."""

    label: str
    class_id: int
    probability: float


class ClassificationResult(BaseModel):
    """The top-k classes, most probable first."""

    predictions: list[Prediction]
    uncertain: bool = False
    logsumexp: float = 0.0


class ClassifyQuery(RestQuery):
    """Query parameters of ``POST /classify``."""

    top_k: int | None = Field(
        None, ge=1, description="How many classes to return, 1..max_top_k (default 5)."
    )


class ClassifyResponse(BaseModel):
    """The JSON answer of ``POST /classify``."""

    model: str = Field(description="The model that answered.")
    version: int = Field(description="Its version.")
    predictions: list[Prediction] = Field(description="Top-k classes, most probable first.")
    uncertain: bool = Field(
        description="The image looks unlike what the model was trained on (its calibrated "
        "score is below the manifest's postprocessing.min_logsumexp): do not trust the "
        "classes. Always false for models without a calibration."
    )
    image_width: int
    image_height: int
    batch_size: int = Field(description="How many requests shared the batch.")
    timings_ms: Timings


def softmax(logits: np.ndarray) -> np.ndarray:
    """Numerically stable softmax in float64."""
    z = logits.astype(np.float64) - np.max(logits)
    e = np.exp(z)
    out: np.ndarray = e / e.sum()
    return out


class ClassificationTask(WholeImageTask):
    """Classification: ``postprocessing.activation`` is ``softmax`` (default) or ``none``."""

    name = "classification"
    cheap_postprocess = True
    route = "classify"
    summary = "Classify an image: top-k labels with probabilities"
    rest_query = ClassifyQuery
    rest_response = ClassifyResponse
    grpc_method = "Classify"
    v2_classification_output = "probabilities"

    def parse_params(self, params: Mapping[str, Any]) -> ClassificationParams:
        limit = self.settings.max_top_k
        top_k = params.get("top_k")
        if top_k is None:
            return ClassificationParams(top_k=min(DEFAULT_TOP_K, self.manifest.num_classes))
        try:
            parsed = ClassificationParams.model_validate({"top_k": top_k}, strict=False)
        except ValidationError:
            raise InvalidInput(
                f"top_k must be an integer from 1 to {limit}, got {top_k!r}"
            ) from None
        if isinstance(top_k, float | bool) or not 1 <= parsed.top_k <= limit:
            raise InvalidInput(f"top_k must be an integer from 1 to {limit}, got {top_k!r}")
        return parsed

    def postprocess(
        self, outputs: Mapping[str, np.ndarray], meta: PreprocessMeta, params: Any
    ) -> ClassificationResult:
        logits = np.asarray(outputs[self.manifest.outputs[0]]).reshape(-1)
        if logits.shape[0] != self.manifest.num_classes:
            raise InferenceError(
                f"model produced {logits.shape[0]} scores but the manifest says "
                f"num_classes={self.manifest.num_classes}"
            )
        activation = self.manifest.postprocessing.get("activation", "softmax")
        probs = softmax(logits) if activation == "softmax" else logits.astype(np.float64)
        k = min(int(params.top_k), probs.shape[0])
        order = np.lexsort((np.arange(probs.shape[0]), -probs))[:k]
        peak = float(np.max(logits))
        energy = peak + float(np.log(np.exp(logits.astype(np.float64) - peak).sum()))
        floor = self.manifest.postprocessing.get("min_logsumexp")
        return ClassificationResult(
            predictions=[
                Prediction(label=self.labels[i], class_id=int(i), probability=float(probs[i]))
                for i in order
            ],
            uncertain=floor is not None and energy < float(floor),
            logsumexp=energy,
        )

    def served_parameters(self) -> dict[str, dict[str, Any]]:
        limit = min(self.settings.max_top_k, self.manifest.num_classes)
        return {"top_k": {"default": min(DEFAULT_TOP_K, limit), "minimum": 1, "maximum": limit}}

    # -- protocols ----------------------------------------------------------------------------
    @classmethod
    def rest_answer(cls, result: InferenceResult, query: RestQuery) -> ClassifyResponse:
        assert isinstance(result.result, ClassificationResult)
        return ClassifyResponse(
            **rest_envelope(result),
            predictions=result.result.predictions,
            uncertain=result.result.uncertain,
        )

    @classmethod
    def openapi_limits(cls, settings: Settings) -> dict[str, dict[str, float]]:
        return {"top_k": {"minimum": 1, "maximum": settings.max_top_k}}

    @classmethod
    def grpc_params(cls, request: Any) -> dict[str, Any]:
        return {"top_k": request.top_k if request.HasField("top_k") else None}

    @classmethod
    def grpc_reply(cls, result: InferenceResult) -> Any:
        assert isinstance(result.result, ClassificationResult)
        return pb.ClassifyResponse(
            **grpc_envelope(result),
            predictions=[
                pb.Classification(label=p.label, class_id=p.class_id, probability=p.probability)
                for p in result.result.predictions
            ],
            uncertain=result.result.uncertain,
        )

    def v2_outputs(self) -> list[TensorSpec]:
        k = self.manifest.num_classes
        return [
            TensorSpec("probabilities", "FP32", (-1, k)),
            TensorSpec("class_names", "BYTES", (k,)),
        ]

    def v2_params(self, parameters: Mapping[str, Any]) -> ClassificationParams:
        # Every class's probability; the top-k strings are cut from them.
        return ClassificationParams(top_k=self.manifest.num_classes)

    def v2_values(self, results: Sequence[InferenceResult]) -> dict[str, Any]:
        probs = np.zeros((len(results), self.manifest.num_classes), np.float32)
        for i, r in enumerate(results):
            assert isinstance(r.result, ClassificationResult)
            for p in r.result.predictions:
                probs[i, p.class_id] = p.probability
        return {"probabilities": probs, "class_names": strings_tensor(self.labels)}
