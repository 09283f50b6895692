"""The store's own configuration, ``<store>/store.json``: defaults and version policies.

Everything is optional::

    {
      "defaults": {"classification": "shapes-classifier", "detection": "shapes-detector"},
      "models": {
        "shapes-classifier": {"version_policy": {"latest": 2}, "default_version": 2},
        "imagenet-s0": {"version_policy": {"specific": [1, 3]}},
        "canary": {"version_policy": {"all": true}}
      }
    }

- ``defaults``: the model that answers a task's requests that name no model.
- ``version_policy`` (as in Triton and TensorFlow Serving): which versions on disk
  serve at once: ``{"latest": N}`` the N highest (the default is ``{"latest": 1}``),
  ``{"specific": [..]}`` exactly those, ``{"all": true}`` every one.
- ``default_version``: the version that answers requests naming no version (without
  it, the highest version serving).
- ``pipelines``: name -> a detector and a classifier of its crops
  (``care_serve.store.pipelines``); served as ``POST /pipelines/{name}``.
- ``streams``: cameras and files processed from start-up (``care_serve.store.streams``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from care_serve.errors import ModelStoreError, validation_problems
from care_serve.store.manifest import validate_model_name, validate_version
from care_serve.store.pipelines import PipelineSpec
from care_serve.store.streams import StreamSpec
from care_serve.task_registry import task_names

__all__ = ["STORE_FILE", "ModelConfig", "StoreConfig", "VersionPolicy", "read_store_config"]

STORE_FILE = "store.json"


class VersionPolicy(BaseModel):
    """Which versions of a model serve: exactly one of ``latest``, ``specific``, ``all``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    latest: int | None = Field(default=None, ge=1, le=64, description="The N highest versions.")
    specific: tuple[int, ...] | None = Field(default=None, description="Exactly these versions.")
    all: Literal[True] | None = Field(default=None, description="Every version on disk.")

    @field_validator("specific")
    @classmethod
    def _versions(cls, value: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if value is None:
            return None
        if not value:
            raise ValueError("'specific' needs at least one version")
        return tuple(sorted({validate_version(v) for v in value}))

    @model_validator(mode="after")
    def _exactly_one(self) -> VersionPolicy:
        given = [k for k in ("latest", "specific", "all") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                "a version_policy is exactly one of {'latest': N}, {'specific': [versions]} "
                f"or {{'all': true}}; got {given or 'none'}"
            )
        return self

    def select(self, versions: list[int]) -> list[int]:
        """The versions of ``versions`` (those on disk) this policy serves, ascending."""
        ordered = sorted(versions)
        if self.all:
            return ordered
        if self.specific is not None:
            return [v for v in ordered if v in self.specific]
        return ordered[-(self.latest or 1) :]

    def describe(self) -> dict[str, Any]:
        """The policy as it is written in ``store.json``."""
        return self.model_dump(exclude_none=True, mode="json")


LATEST_ONE = VersionPolicy(latest=1)


class ModelConfig(BaseModel):
    """The store-level settings of one model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version_policy: VersionPolicy = LATEST_ONE
    default_version: int | None = Field(default=None, ge=1)


class StoreConfig(BaseModel):
    """The parsed ``store.json`` (all defaults when the file does not exist)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    defaults: dict[str, str] = Field(default_factory=dict)
    models: dict[str, ModelConfig] = Field(default_factory=dict)
    pipelines: dict[str, PipelineSpec] = Field(default_factory=dict)
    streams: tuple[StreamSpec, ...] = ()

    @field_validator("defaults")
    @classmethod
    def _defaults(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = [task for task in value if task not in task_names()]
        if unknown:
            raise ValueError(f"unknown tasks {unknown}; tasks are {', '.join(task_names())}")
        return {task: validate_model_name(name) for task, name in value.items()}

    @field_validator("models", "pipelines")
    @classmethod
    def _names(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name in value:
            validate_model_name(name)
        return value

    @field_validator("streams")
    @classmethod
    def _stream_names(cls, value: tuple[StreamSpec, ...]) -> tuple[StreamSpec, ...]:
        names = [stream.name for stream in value]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"stream names must be unique; {twice} appear more than once")
        return value

    def model(self, name: str) -> ModelConfig:
        """The settings of model ``name`` (the defaults when it is not listed)."""
        return self.models.get(name) or ModelConfig()


def read_store_config(root: Path) -> StoreConfig:
    """Parse ``root/store.json``; ``ModelStoreError`` naming what is wrong when it is invalid."""
    path = root / STORE_FILE
    if not path.is_file():
        return StoreConfig()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelStoreError(f"{STORE_FILE}: not readable JSON ({exc})") from None
    try:
        return StoreConfig.model_validate(data)
    except ValidationError as exc:
        problems = validation_problems(exc)
        raise ModelStoreError(f"{STORE_FILE}: invalid store file ({problems})") from None
