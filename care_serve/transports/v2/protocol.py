"""The v2 operations both v2 transports share, over the data plane.

REST (``transports.v2.rest``) and gRPC (``transports.v2.grpc_servicer``) only turn their
messages into ``Tensor`` / ``RequestedOutput`` objects and back; the metadata, the
checks of a request against the model and the calls into ``DataPlane`` are here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from care_serve import __version__
from care_serve.errors import CareServeError, InvalidInput, NotFound
from care_serve.serving.data_plane import DataPlane
from care_serve.serving.loader import LoadedModel
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

    def model_ready(self, name: str, version: str | None = None) -> bool:
        try:
            return self.model(name, version).state == "ready"
        except CareServeError:
            return False

    def model_metadata(self, name: str, version: str | None = None) -> dict[str, Any]:
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
    ) -> tuple[LoadedModel, list[Tensor]]:
        """Check the request against the model, run it, build the output tensors."""
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
        return model, build_outputs(model, results, requested)

    # -- repository extension ------------------------------------------------------------
    def repository_index(self, ready_only: bool = False) -> list[dict[str, Any]]:
        """One entry per model version (on disk, loading or serving), as Triton lists them."""
        index = []
        for model in self.data_plane.list_models().models:
            for status in model.version_status:
                state = _STATES.get(status.state, "UNAVAILABLE")
                if ready_only and state != "READY":
                    continue
                entry = {"name": model.name, "version": str(status.version), "state": state}
                if status.error:
                    entry["reason"] = status.error
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
