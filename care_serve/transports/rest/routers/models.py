"""Model listing, detail, load and unload (load/unload may need the admin token)."""

from __future__ import annotations

from fastapi import APIRouter, Header, Path, Query

from care_serve.serving.status import ModelList, ModelStatus
from care_serve.store.manifest import NAME_PATTERN
from care_serve.transports.rest.deps import DataPlaneDep
from care_serve.transports.rest.routers.inference import MAX_VERSION, errors

__all__ = ["router"]

router = APIRouter(prefix="/models", tags=["models"])

AuthH = Header(None, description="'Bearer <token>' when the server has an admin token.")
NameP = Path(description="Model name.", pattern=NAME_PATTERN, max_length=64)


@router.get(
    "",
    response_model=ModelList,
    response_model_exclude_unset=True,
    summary="Every model loaded or in the store, with state and versions, and the default "
    "model of each task",
)
async def list_models(data_plane: DataPlaneDep) -> ModelList:
    return data_plane.list_models()


@router.get(
    "/{name}",
    response_model=ModelStatus,
    response_model_exclude_unset=True,
    responses=errors(400, 404),
    summary="One model: state, versions, manifest summary, last load error",
)
async def model_detail(data_plane: DataPlaneDep, name: str = NameP) -> ModelStatus:
    return data_plane.model_detail(name)


@router.post(
    "/{name}/load",
    response_model=ModelStatus,
    response_model_exclude_unset=True,
    responses=errors(400, 401, 404, 409, 422),
    summary="Load or reload a version beside the others, or (no version) what the model's "
    "version policy selects (what served keeps serving until the new copy is warm)",
)
async def load_model(
    data_plane: DataPlaneDep,
    name: str = NameP,
    version: int | None = Query(
        None,
        description="Version to load or reload; default: the versions the policy selects "
        "(the newest, unless store.json says otherwise).",
        ge=1,
        le=MAX_VERSION,
    ),
    authorization: str | None = AuthH,
) -> ModelStatus:
    return await data_plane.load_model(name, version, authorization)


@router.post(
    "/{name}/unload",
    response_model=ModelStatus,
    response_model_exclude_unset=True,
    responses=errors(400, 401, 404, 409),
    summary="Unload a model version (or every version) after its requests",
)
async def unload_model(
    data_plane: DataPlaneDep,
    name: str = NameP,
    version: int | None = Query(
        None, description="Version to unload; default: every version.", ge=1, le=MAX_VERSION
    ),
    authorization: str | None = AuthH,
) -> ModelStatus:
    return await data_plane.unload_model(name, version, authorization)
