"""The classification task on its own: the uncertain flag and the served parameters."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from care_serve.settings import Settings
from care_serve.store import InputSpec, Manifest
from care_serve.tasks.classification import ClassificationParams, ClassificationTask


def task(
    tmp_path: Path, postprocessing: dict[str, object], **settings: object
) -> ClassificationTask:
    manifest = Manifest(
        name="cls",
        version=1,
        task="classification",
        architecture="care_tiny",
        weights="model.onnx",
        num_classes=3,
        input=InputSpec(height=64, width=64),
        postprocessing=postprocessing,
    )
    return ClassificationTask(
        manifest, ["a", "b", "c"], Settings(model_store=tmp_path, models=[], **settings)
    )


def answer(t: ClassificationTask, logits: list[float]) -> object:
    outputs = {t.manifest.outputs[0]: np.asarray([logits], np.float32)}
    return t.postprocess(outputs, t.tensor_meta(), ClassificationParams(top_k=3))


@pytest.mark.parametrize(
    ("logits", "uncertain"),
    [
        ([3.0, 0.0, 0.0], False),  # log-sum-exp 3.10: above the floor of 2
        ([1.0, 0.5, 0.2], True),  # log-sum-exp 1.85: below
        ([1.9, 0.0, 0.0], False),  # log-sum-exp 2.16: one sure class is enough
    ],
)
def test_answers_below_the_calibrated_score_are_uncertain(
    tmp_path: Path, logits: list[float], uncertain: bool
) -> None:
    result = answer(task(tmp_path, {"min_logsumexp": 2.0}), logits)
    expected = float(np.log(np.exp(np.asarray(logits, np.float64)).sum()))
    assert result.logsumexp == pytest.approx(expected, rel=1e-6)  # type: ignore[attr-defined]
    assert result.uncertain is uncertain  # type: ignore[attr-defined]


def test_without_a_calibration_nothing_is_uncertain(tmp_path: Path) -> None:
    assert answer(task(tmp_path, {}), [0.01, 0.0, 0.0]).uncertain is False  # type: ignore[attr-defined]


def test_served_top_k_follows_the_classes_and_the_setting(tmp_path: Path) -> None:
    assert task(tmp_path, {}).served_parameters() == {
        "top_k": {"default": 3, "minimum": 1, "maximum": 3}
    }
    assert task(tmp_path, {}, max_top_k=2).served_parameters()["top_k"]["maximum"] == 2
