"""The embedding task on its own: parameters, normalisation and the manifest it accepts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from care_serve.errors import InferenceError, InvalidInput, ModelStoreError
from care_serve.settings import Settings
from care_serve.store import InputSpec, Manifest
from care_serve.tasks.base import get_task_class, task_names
from care_serve.tasks.embedding import EmbeddingTask


def manifest(**extra: object) -> Manifest:
    fields: dict[str, object] = {
        "name": "embed",
        "version": 1,
        "task": "embedding",
        "architecture": "care_tiny",
        "weights": "model.onnx",
        "num_classes": 6,
        "input": InputSpec(height=64, width=64),
        "outputs": ["embedding"],
    }
    return Manifest(**{**fields, **extra})


def task(tmp_path: Path, **extra: object) -> EmbeddingTask:
    return EmbeddingTask(manifest(**extra), [], Settings(model_store=tmp_path, models=[]))


def test_embedding_is_a_registered_task() -> None:
    assert "embedding" in task_names()
    cls = get_task_class("embedding")
    assert (cls.route, cls.grpc_method, cls.has_labels) == ("embed", "Embed", False)


def test_the_vector_is_scaled_to_unit_length_unless_asked_not_to(tmp_path: Path) -> None:
    t = task(tmp_path)
    raw = np.random.default_rng(0).standard_normal(6).astype(np.float32)
    outputs = {"embedding": raw}
    meta = t.tensor_meta()
    unit = t.postprocess(outputs, meta, t.parse_params({}))
    assert unit.normalized and unit.dim == 6
    np.testing.assert_allclose(unit.embedding, raw / np.linalg.norm(raw), rtol=1e-6)
    kept = t.postprocess(outputs, meta, t.parse_params({"normalize": False}))
    assert not kept.normalized
    np.testing.assert_allclose(kept.embedding, raw, rtol=1e-6)
    zero = t.postprocess({"embedding": np.zeros(6, np.float32)}, meta, t.parse_params({}))
    assert zero.embedding == [0.0] * 6  # no division by zero


def test_bad_parameters_and_outputs_say_what_is_accepted(tmp_path: Path) -> None:
    t = task(tmp_path)
    with pytest.raises(InvalidInput, match="normalize must be true or false"):
        t.parse_params({"normalize": "yes"})
    with pytest.raises(InferenceError, match="vector of 5 values but the manifest says"):
        t.postprocess({"embedding": np.zeros(5, np.float32)}, t.tensor_meta(), t.parse_params({}))
    with pytest.raises(ModelStoreError, match="one output"):
        task(tmp_path, outputs=["a", "b"])


def test_v2_shapes(tmp_path: Path) -> None:
    t = task(tmp_path)
    assert [s.describe() for s in t.v2_outputs()] == ["embedding FP32 [-1, 6]"]
