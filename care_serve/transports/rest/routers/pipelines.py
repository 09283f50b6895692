"""Pipelines over REST: list them, describe one, run one on an image."""

from __future__ import annotations

from fastapi import APIRouter, Header, Path, Request
from pydantic import BaseModel

from care_serve.serving.pipelines import PipelineInfo, PipelineResult
from care_serve.store.manifest import NAME_PATTERN
from care_serve.transports.rest.body import read_image_bytes
from care_serve.transports.rest.deps import DataPlaneDep
from care_serve.transports.rest.routers.inference import IMAGE_BODY, INFER_ERRORS, errors

__all__ = ["router"]

router = APIRouter(tags=["pipelines"])

NameP = Path(description="The pipeline's name in store.json.", pattern=NAME_PATTERN, max_length=64)


class PipelineList(BaseModel):
    pipelines: list[PipelineInfo]


@router.get("/pipelines", response_model=PipelineList, summary="The pipelines of the store")
async def list_pipelines(data_plane: DataPlaneDep) -> PipelineList:
    return PipelineList(pipelines=data_plane.pipelines.list())


@router.get(
    "/pipelines/{name}",
    response_model=PipelineInfo,
    responses=errors(404),
    summary="One pipeline, its steps and whether it can run",
)
async def describe_pipeline(data_plane: DataPlaneDep, name: str = NameP) -> PipelineInfo:
    return data_plane.pipelines.describe(name)


@router.post(
    "/pipelines/{name}",
    response_model=PipelineResult,
    responses=INFER_ERRORS,
    openapi_extra=IMAGE_BODY,
    summary="Detect the objects of an image, then classify each one",
)
async def run_pipeline(
    request: Request,
    data_plane: DataPlaneDep,
    name: str = NameP,
    x_request_timeout_ms: float | None = Header(
        None, description="Deadline of the whole pipeline in milliseconds.", gt=0
    ),
) -> PipelineResult:
    limit = data_plane.settings.max_image_bytes
    return await data_plane.pipelines.run(
        name,
        lambda: read_image_bytes(request, limit),
        protocol="rest",
        timeout_s=None if x_request_timeout_ms is None else x_request_timeout_ms / 1000.0,
    )
