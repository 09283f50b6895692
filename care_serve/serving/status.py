"""The typed status of models: what REST returns and gRPC and v2 map field by field."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

__all__ = ["ModelList", "ModelStatus", "State", "TaskDefault", "VersionStatus"]

State = Literal["ready", "loading", "unloading", "available", "failed"]


class VersionStatus(BaseModel):
    """One version of a model: on disk, loading, serving or failed."""

    version: int
    state: State
    default: bool = Field(description="Requests that name no version get this one.")
    in_policy: bool = Field(description="The model's version policy selects it.")
    error: str | None = Field(description="Its last load error.")


class ModelStatus(BaseModel):
    """One model, loaded or in the store. Fields after ``error_version`` are present only
    when the model has a readable package (manifest summary) or serves (backend)."""

    name: str
    state: State
    loaded_version: int | None = Field(description="The default version, when one serves.")
    loaded_versions: list[int] = Field(description="Every serving version.")
    versions: list[int] = Field(description="Every version in the store.")
    version_policy: dict[str, Any] = Field(description="As written in store.json.")
    default_version: int | None
    default_version_source: str = Field(description="store.json, or the highest serving.")
    default_for: list[str] = Field(description="Tasks whose default model this is.")
    version_status: list[VersionStatus]
    error: str | None = Field(description="The newest load error.")
    error_version: int | None
    task: str | None = None
    architecture: str | None = None
    format: str | None = None
    input: dict[str, Any] | None = None
    num_classes: int | None = None
    batching: dict[str, Any] | None = None
    model_card: dict[str, Any] | None = None
    parameters: dict[str, dict[str, Any]] | None = Field(
        default=None,
        description="The serving version's request parameters: the default each request "
        "gets when it leaves one out, and the limits (e.g. top_k, score_threshold).",
    )
    backend: str | None = None
    threads: int | None = None
    load_seconds: float | None = None
    queue_depth: int | None = None


class TaskDefault(BaseModel):
    """The model that answers a task's requests that name none, and why."""

    model: str
    source: str = Field(description="store.json, or first loaded.")
    serving: bool


class ModelList(BaseModel):
    """``GET /models``: every model, and the default model of each task."""

    models: list[ModelStatus]
    defaults: dict[str, TaskDefault]
