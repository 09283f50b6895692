"""Image embeddings: the network's pooled, normalised pre-logit features as one vector.

For similarity search and re-identification at the edge. The package's network
answers ``forward_head(forward_features(x), pre_logits=True)`` (the classifier's
features before its last linear layer; 1024 values for CARE-S0) as its one output;
``num_classes`` records the vector's length. The served vector is scaled to unit
length (so that a dot product is the cosine similarity) unless the request sets
``normalize=false``. Preprocessing is the classifier's (the manifest's), and
images are decoded at reduced scale the same way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from care_serve.errors import InferenceError, InvalidInput, ModelStoreError
from care_serve.grpc_gen.care_serve.v1 import inference_pb2 as pb
from care_serve.imaging.preprocess import PreprocessMeta
from care_serve.settings import Settings
from care_serve.store.manifest import Manifest
from care_serve.tasks.base import (
    InferenceResult,
    RestQuery,
    TensorSpec,
    Timings,
    WholeImageTask,
)
from care_serve.tasks.wire import grpc_envelope, rest_envelope

__all__ = [
    "EMBEDDING_OUTPUT",
    "EmbedQuery",
    "EmbedResponse",
    "EmbeddingParams",
    "EmbeddingResult",
    "EmbeddingTask",
]

EMBEDDING_OUTPUT = "embedding"  # the output name of an embedding package's network


class EmbeddingParams(BaseModel):
    """Request parameters of an embedding."""

    normalize: bool = Field(True, description="Scale the vector to unit length.")


class EmbeddingResult(BaseModel):
    """One image's feature vector."""

    embedding: list[float]
    dim: int
    normalized: bool


class EmbedQuery(RestQuery):
    """Query parameters of ``POST /embed``."""

    normalize: bool | None = Field(
        None,
        description="true (default): the vector scaled to unit length, so that the dot "
        "product of two is their cosine similarity; false: the raw pre-logit features.",
    )


class EmbedResponse(BaseModel):
    """The JSON answer of ``POST /embed``."""

    model: str = Field(description="The model that answered.")
    version: int = Field(description="Its version.")
    embedding: list[float] = Field(description="The image's feature vector.")
    dim: int = Field(description="Its length.")
    normalized: bool = Field(description="Whether it was scaled to unit length.")
    image_width: int
    image_height: int
    batch_size: int = Field(description="How many requests shared the batch.")
    timings_ms: Timings


class EmbeddingTask(WholeImageTask):
    """Embedding: the classifier's preprocessing in, one L2-normalised vector out."""

    name = "embedding"
    cheap_postprocess = True
    has_labels = False
    route = "embed"
    summary = "Embed an image: its feature vector, for similarity search and re-identification"
    rest_query = EmbedQuery
    rest_response = EmbedResponse
    grpc_method = "Embed"
    v2_parameters = ("normalize",)

    def __init__(self, manifest: Manifest, labels: list[str], settings: Settings) -> None:
        super().__init__(manifest, labels, settings)
        if len(manifest.outputs) != 1:
            raise ModelStoreError(
                f"{manifest.name}/{manifest.version}: an embedding model has one output "
                f"(the vector), the manifest names {manifest.outputs}"
            )
        self.dim = manifest.num_classes

    def parse_params(self, params: Mapping[str, Any]) -> EmbeddingParams:
        normalize = params.get("normalize")
        if normalize is None:
            return EmbeddingParams(normalize=True)
        if not isinstance(normalize, bool):
            raise InvalidInput(f"normalize must be true or false, got {normalize!r}")
        return EmbeddingParams(normalize=normalize)

    def postprocess(
        self, outputs: Mapping[str, np.ndarray], meta: PreprocessMeta, params: Any
    ) -> EmbeddingResult:
        vector = np.asarray(outputs[self.manifest.outputs[0]], np.float64).reshape(-1)
        if vector.shape[0] != self.dim:
            raise InferenceError(
                f"model produced a vector of {vector.shape[0]} values but the manifest says "
                f"num_classes={self.dim}"
            )
        if params.normalize:
            norm = float(np.linalg.norm(vector))
            vector = vector / norm if norm > 0 else vector
        return EmbeddingResult(
            embedding=vector.astype(np.float32).tolist(),
            dim=self.dim,
            normalized=bool(params.normalize),
        )

    # -- protocols ----------------------------------------------------------------------------
    @classmethod
    def rest_answer(cls, result: InferenceResult, query: RestQuery) -> EmbedResponse:
        assert isinstance(result.result, EmbeddingResult)
        return EmbedResponse(
            **rest_envelope(result),
            embedding=result.result.embedding,
            dim=result.result.dim,
            normalized=result.result.normalized,
        )

    @classmethod
    def grpc_params(cls, request: Any) -> dict[str, Any]:
        return {"normalize": request.normalize if request.HasField("normalize") else None}

    @classmethod
    def grpc_reply(cls, result: InferenceResult) -> Any:
        assert isinstance(result.result, EmbeddingResult)
        return pb.EmbedResponse(
            **grpc_envelope(result),
            embedding=result.result.embedding,
            dim=result.result.dim,
            normalized=result.result.normalized,
        )

    def v2_outputs(self) -> list[TensorSpec]:
        return [TensorSpec(EMBEDDING_OUTPUT, "FP32", (-1, self.dim))]

    def v2_params(self, parameters: Mapping[str, Any]) -> EmbeddingParams:
        return self.parse_params({"normalize": parameters.get("normalize")})

    def v2_values(self, results: Sequence[InferenceResult]) -> dict[str, Any]:
        vectors = np.zeros((len(results), self.dim), np.float32)
        for i, r in enumerate(results):
            assert isinstance(r.result, EmbeddingResult)
            vectors[i] = r.result.embedding
        return {EMBEDDING_OUTPUT: vectors}
