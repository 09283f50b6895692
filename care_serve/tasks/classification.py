"""Image classification: the ImageNet eval transform in, softmax top-k out."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from pydantic import BaseModel, Field, ValidationError

from care_serve.errors import InferenceError, InvalidInput
from care_serve.imaging.decode import DecodedImage
from care_serve.imaging.preprocess import PreprocessMeta, preprocess_image, resized_size
from care_serve.tasks.base import Task

__all__ = ["ClassificationParams", "ClassificationResult", "ClassificationTask", "Prediction"]

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


def softmax(logits: np.ndarray) -> np.ndarray:
    """Numerically stable softmax in float64."""
    z = logits.astype(np.float64) - np.max(logits)
    e = np.exp(z)
    out: np.ndarray = e / e.sum()
    return out


class ClassificationTask(Task):
    """Classification: ``postprocessing.activation`` is ``softmax`` (default) or ``none``."""

    name = "classification"
    cheap_postprocess = True

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

    def decode_size(self, width: int, height: int) -> tuple[int, int]:
        """What the manifest's resize needs: decoding smaller would only add upsampling."""
        return resized_size(width, height, self.manifest)

    def preprocess(self, image: DecodedImage) -> tuple[np.ndarray, PreprocessMeta]:
        return preprocess_image(image.image, self.manifest)

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
        return ClassificationResult(
            predictions=[
                Prediction(label=self.labels[i], class_id=int(i), probability=float(probs[i]))
                for i in order
            ]
        )
