"""Liveness, readiness and the Prometheus endpoint."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from care_serve.transports.rest.deps import DataPlaneDep

__all__ = ["router"]

router = APIRouter(tags=["health"])


@router.get("/health/live", summary="The process is up")
async def live() -> dict[str, str]:
    return {"status": "live"}


@router.get(
    "/health/ready",
    summary="Every model that should serve is serving (strict readiness), not shutting down",
    responses={503: {"description": "Not ready (body: status, loaded models and the reason)"}},
)
async def ready(data_plane: DataPlaneDep) -> JSONResponse:
    ok = data_plane.ready()
    body: dict[str, object] = {
        "status": "ready" if ok else "not ready",
        "models": data_plane.serving_models(),
        "not_serving": data_plane.not_serving(),
    }
    if data_plane.draining:
        body["shutting_down"] = True
    reason = None if ok else data_plane.not_ready_reason()
    if reason is not None:
        body["reason"] = reason
    return JSONResponse(body, status_code=200 if ok else 503)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(data_plane: DataPlaneDep) -> Response:
    return Response(generate_latest(data_plane.metrics.registry), media_type=CONTENT_TYPE_LATEST)
