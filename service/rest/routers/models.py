"""Model listing, detail, load and unload (load/unload may need the admin token)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Header, Query

from service.rest.deps import DataPlaneDep
from service.rest.routers.inference import ERRORS

__all__ = ["router"]

router = APIRouter(prefix="/models", tags=["models"])

AuthH = Header(None, description="'Bearer <token>' when the server has an admin token.")


@router.get("", summary="Every model loaded or in the store, with state and versions")
async def list_models(data_plane: DataPlaneDep) -> dict[str, list[dict[str, Any]]]:
    return {"models": data_plane.list_models()}


@router.get("/{name}", responses=ERRORS, summary="One model: state, versions, manifest summary")
async def model_detail(name: str, data_plane: DataPlaneDep) -> dict[str, Any]:
    return data_plane.model_detail(name)


@router.post(
    "/{name}/load",
    responses=ERRORS,
    summary="Load or reload a model version (the old one serves until the new one is warm)",
)
async def load_model(
    name: str,
    data_plane: DataPlaneDep,
    version: int | None = Query(None, description="Version to load; default: the newest."),
    authorization: str | None = AuthH,
) -> dict[str, Any]:
    return await data_plane.load_model(name, version, authorization)


@router.post("/{name}/unload", responses=ERRORS, summary="Unload a model after its requests")
async def unload_model(
    name: str, data_plane: DataPlaneDep, authorization: str | None = AuthH
) -> dict[str, Any]:
    return await data_plane.unload_model(name, authorization)
