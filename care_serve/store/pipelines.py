"""Pipelines as ``store.json`` declares them: a detector, then a classifier of its crops.

::

    "pipelines": {
      "shapes-detect-classify": {
        "description": "Finds the shapes, then names each one.",
        "steps": [
          {"name": "detect", "model": "shapes-detector", "parameters": {"score_threshold": 0.4}},
          {"name": "classify", "model": "shapes-classifier",
           "crops": {"padding": 0.15, "max_boxes": 8}, "parameters": {"top_k": 3}}
        ]
      }
    }

The first step runs on the whole image and must be a detection model; the
optional second step classifies each detected box, cropped from the original
image with ``padding`` (a fraction of the box's size on every side) and at most
``max_boxes`` boxes, highest score first. ``parameters`` are the request
parameters of each model's endpoint (``/detect``, ``/classify``).
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from care_serve.store.manifest import validate_model_name

__all__ = ["CropSpec", "PipelineSpec", "PipelineStep"]

STEP_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
RESERVED_STEPS = frozenset({"decode", "crop", "total"})  # timings_ms keys of their own


class CropSpec(BaseModel):
    """How the boxes of the previous step become the images of this one."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    padding: float = Field(
        0.1, ge=0.0, le=1.0, description="Added on every side, as a fraction of the box's size."
    )
    max_boxes: int = Field(8, ge=1, le=64, description="At most this many boxes, highest first.")
    min_size: int = Field(
        4, ge=1, le=4096, description="Boxes narrower or lower than this (pixels) are skipped."
    )


class PipelineStep(BaseModel):
    """One model of a pipeline."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="The step's name, the key of its time in timings_ms.")
    model: str = Field(description="The model that runs this step (its serving version).")
    parameters: dict[str, Any] = Field(
        default_factory=dict, description="Request parameters of the model's task."
    )
    crops: CropSpec | None = Field(
        None, description="On the second step: crop each box of the first step."
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not STEP_NAME.match(value) or value in RESERVED_STEPS:
            raise ValueError(
                f"step name {value!r} must be lower case letters, digits and '_' (at most 32, "
                f"starting with a letter) and not one of {sorted(RESERVED_STEPS)}"
            )
        return value

    @field_validator("model")
    @classmethod
    def _model(cls, value: str) -> str:
        return validate_model_name(value)


class PipelineSpec(BaseModel):
    """A detector step, optionally followed by a classifier of its crops."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str = Field("", max_length=500)
    steps: tuple[PipelineStep, ...] = Field(min_length=1, max_length=2)

    @model_validator(mode="after")
    def _shape(self) -> PipelineSpec:
        first = self.steps[0]
        if first.crops is not None:
            raise ValueError(f"the first step ({first.name}) runs on the whole image: no 'crops'")
        if len(self.steps) == 2:
            second = self.steps[1]
            if second.crops is None:
                raise ValueError(
                    f"the second step ({second.name}) classifies the boxes of the first: it "
                    'needs \'crops\' (e.g. {"padding": 0.1, "max_boxes": 8})'
                )
            if second.name == first.name:
                raise ValueError(f"both steps are named {first.name!r}; name them apart")
        return self

    @property
    def detector(self) -> PipelineStep:
        return self.steps[0]

    @property
    def classifier(self) -> PipelineStep | None:
        return self.steps[1] if len(self.steps) == 2 else None

    def models(self) -> list[str]:
        """The models the pipeline needs, in step order."""
        return [step.model for step in self.steps]
