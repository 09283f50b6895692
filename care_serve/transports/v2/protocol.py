"""The v2 operations both v2 transports share, over the data plane.

REST (``transports.v2.rest``) and gRPC (``transports.v2.grpc_servicer``) only turn their
messages into ``Tensor`` / ``RequestedOutput`` objects and back; the metadata, the
checks of a request against the model and the calls into ``DataPlane`` are here.

A pipeline of ``store.json`` is a model of its own here (``pipeline_io``), named by its
pipeline's name, unless a model has that name: models come first.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from care_serve import __version__
from care_serve.errors import CareServeError, InvalidInput, NotFound
from care_serve.serving.data_plane import DataPlane
from care_serve.serving.loader import LoadedModel
from care_serve.serving.outcomes import outcome_of
from care_serve.serving.pipelines import PipelineResult
from care_serve.store.pipelines import PipelineSpec
from care_serve.transports.v2.codec import Tensor
from care_serve.transports.v2.model_io import (
    RequestedOutput,
    build_outputs,
    check_requested,
    image_inputs,
    input_specs,
    output_specs,
    task_params,
)
from care_serve.transports.v2.parameters import (
    LOAD_PARAMETERS,
    REQUEST_PARAMETERS,
    UNLOAD_PARAMETERS,
    check_parameters,
)
from care_serve.transports.v2.pipeline_io import (
    PIPELINE_INPUTS,
    PIPELINE_OUTPUTS,
    PIPELINE_PLATFORM,
    PIPELINE_VERSION,
    check_pipeline_requested,
    pipeline_images,
    pipeline_outputs,
)

__all__ = ["EXTENSIONS", "SERVER_NAME", "V2Protocol"]

SERVER_NAME = "care-serve"
EXTENSIONS = ("binary_tensor_data", "classification", "model_repository")
# Manager states -> the repository extension's states.
_STATES = {
    "ready": "READY",
    "loading": "LOADING",
    "unloading": "UNLOADING",
    "available": "UNAVAILABLE",
    "failed": "UNAVAILABLE",
}


def _version(version: str | None) -> int | None:
    """A path or message version: empty = the served one; else a positive integer."""
    if version in (None, ""):
        return None
    assert version is not None
    if not version.isdigit() or int(version) < 1:
        raise InvalidInput(f"a model version is a positive integer, got {version!r}")
    return int(version)


class V2Protocol:
    """Open Inference Protocol operations of one data plane."""

    def __init__(self, data_plane: DataPlane) -> None:
        self.data_plane = data_plane

    # -- health and metadata -------------------------------------------------------------
    def server_ready(self) -> bool:
        return self.data_plane.ready()

    def server_metadata(self) -> dict[str, Any]:
        return {"name": SERVER_NAME, "version": __version__, "extensions": list(EXTENSIONS)}

    def model(self, name: str, version: str | None = None) -> LoadedModel:
        """The loaded model (version) ``name``, or ``NotFound`` / ``ModelNotReady``."""
        if not name:
            raise InvalidInput("the request names no model")
        return self.data_plane.serving_model(name, _version(version))

    def pipeline(self, name: str, version: str | None = None) -> PipelineSpec | None:
        """The pipeline ``name`` means (None: a model, or nothing), checking ``version``."""
        spec = self.data_plane.pipelines.specs().get(name)
        if spec is None or self._is_model(name):
            return None
        wanted = _version(version)
        if wanted not in (None, PIPELINE_VERSION):
            raise NotFound(f"pipeline {name} has one version, {PIPELINE_VERSION}; got {wanted}")
        return spec

    def _is_model(self, name: str) -> bool:
        plane = self.data_plane
        return bool(plane.serving_versions(name)) or name in plane.manager.repository.model_names()

    def check_known(self, name: str, version: str | None = None) -> None:
        """``NotFound`` (or ``ModelNotReady``) unless ``name`` is a pipeline or a served model."""
        if self.pipeline(name, version) is None:
            self.model(name, version)

    def model_ready(self, name: str, version: str | None = None) -> bool:
        try:
            if self.pipeline(name, version) is not None:
                return self.data_plane.pipelines.describe(name).ready
            return self.model(name, version).state == "ready"
        except CareServeError:
            return False

    def model_metadata(self, name: str, version: str | None = None) -> dict[str, Any]:
        if self.pipeline(name, version) is not None:
            return self._pipeline_metadata(name)
        model = self.model(name, version)
        return {
            "name": model.name,
            "versions": [str(v) for v in self.data_plane.serving_versions(name)],
            "platform": model.backend.name.split(" ")[0],
            "inputs": [
                {"name": s.name, "datatype": s.datatype, "shape": list(s.shape)}
                for s in input_specs(model)
            ],
            "outputs": [
                {"name": s.name, "datatype": s.datatype, "shape": list(s.shape)}
                for s in output_specs(model)
            ],
            # Not in the protocol's metadata; JSON clients get the task and labels here.
            "parameters": {"task": model.manifest.task, "labels": list(model.task.labels)},
        }

    def _pipeline_metadata(self, name: str) -> dict[str, Any]:
        info = self.data_plane.pipelines.describe(name)
        return {
            "name": name,
            "versions": [str(PIPELINE_VERSION)],
            "platform": PIPELINE_PLATFORM,
            "inputs": [
                {"name": s.name, "datatype": s.datatype, "shape": list(s.shape)}
                for s in PIPELINE_INPUTS
            ],
            "outputs": [
                {"name": s.name, "datatype": s.datatype, "shape": list(s.shape)}
                for s in PIPELINE_OUTPUTS
            ],
            "parameters": {
                "task": "pipeline",
                "steps": [{"name": s.name, "model": s.model} for s in info.steps],
            },
        }

    # -- inference -----------------------------------------------------------------------
    async def infer(
        self,
        name: str,
        version: str | None,
        inputs: Sequence[Tensor],
        requested: Sequence[RequestedOutput],
        parameters: Mapping[str, Any],
        *,
        protocol: str,
        timeout_s: float | None,
    ) -> tuple[str, int, list[Tensor]]:
        """Check the request against the model, run it; its name, version and output tensors."""
        if self.pipeline(name, version) is not None:  # counted in care_pipeline_requests
            outputs = await self._run_pipeline(
                name, inputs, requested, parameters, protocol, timeout_s
            )
            return name, PIPELINE_VERSION, outputs
        model: LoadedModel | None = None
        try:
            model = self.model(name, version)
            check_parameters(
                f"model {model.name}",
                parameters,
                (*REQUEST_PARAMETERS, *model.task.v2_parameters),
                noun="request parameter",
            )
            items = image_inputs(model, inputs, protocol)
            params = task_params(model, parameters)
            # Checked before running, so a bad output name costs no inference.
            check_requested(model, requested)
        except CareServeError as exc:
            self.data_plane.record_rejected(model, protocol, exc)
            raise
        results = await self.data_plane.infer_images(
            model.name,
            items,
            version=model.version,
            params=params,
            protocol=protocol,
            timeout_s=timeout_s,
        )
        return model.name, model.version, build_outputs(model, results, requested)

    async def _run_pipeline(
        self,
        name: str,
        inputs: Sequence[Tensor],
        requested: Sequence[RequestedOutput],
        parameters: Mapping[str, Any],
        protocol: str,
        timeout_s: float | None,
    ) -> list[Tensor]:
        """Each image through pipeline ``name`` at once; the first failure cancels the rest."""
        try:
            check_parameters(
                f"pipeline {name}", parameters, REQUEST_PARAMETERS, noun="request parameter"
            )
            items = pipeline_images(name, inputs, protocol)
            check_pipeline_requested(name, requested)
        except CareServeError as exc:
            metrics = self.data_plane.metrics.pipeline_requests
            metrics.labels(name, protocol, outcome_of(exc)).inc()
            raise
        runner = self.data_plane.pipelines
        runs = [
            asyncio.ensure_future(runner.run(name, item, protocol=protocol, timeout_s=timeout_s))
            for item in items
        ]
        try:
            results: list[PipelineResult] = await asyncio.gather(*runs)
        except BaseException:
            for run in runs:
                run.cancel()
            raise
        return pipeline_outputs(results, requested)

    # -- repository extension ------------------------------------------------------------
    def repository_index(self, ready_only: bool = False) -> list[dict[str, Any]]:
        """One entry per model version (on disk, loading or serving), as Triton lists them,
        then one per pipeline that no model's name hides."""
        index = []
        models = self.data_plane.list_models().models
        for model in models:
            for status in model.version_status:
                state = _STATES.get(status.state, "UNAVAILABLE")
                if ready_only and state != "READY":
                    continue
                entry = {"name": model.name, "version": str(status.version), "state": state}
                if status.error:
                    entry["reason"] = status.error
                index.append(entry)
        names = {m.name for m in models}
        for info in self.data_plane.pipelines.list():
            if info.name in names or (ready_only and not info.ready):
                continue
            entry = {
                "name": info.name,
                "version": str(PIPELINE_VERSION),
                "state": "READY" if info.ready else "UNAVAILABLE",
            }
            if info.problem:
                entry["reason"] = info.problem
            index.append(entry)
        return index

    async def load(
        self, name: str, parameters: Mapping[str, Any], authorization: str | None
    ) -> None:
        self.data_plane.auth.check_model_control(authorization)  # 401/403/409 come first
        check_parameters("a repository load", parameters, LOAD_PARAMETERS)
        version = parameters.get("version")
        if version is not None and not isinstance(version, int | str):
            raise InvalidInput(f"the version parameter is an integer, got {version!r}")
        await self.data_plane.load_model(name, version, authorization)

    async def unload(
        self, name: str, parameters: Mapping[str, Any], authorization: str | None
    ) -> None:
        self.data_plane.auth.check_admin(authorization)
        check_parameters("a repository unload", parameters, UNLOAD_PARAMETERS)
        dependents = parameters.get("unload_dependents", False)
        if not isinstance(dependents, bool):
            raise InvalidInput(f"unload_dependents must be true or false, got {dependents!r}")
        if not self.data_plane.serving_versions(name):
            raise NotFound(f"model {name!r} is not loaded")
        await self.data_plane.unload_model(name, None, authorization)
