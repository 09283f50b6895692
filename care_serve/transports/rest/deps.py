"""Typed FastAPI dependencies."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from care_serve.serving.data_plane import DataPlane

__all__ = ["DataPlaneDep", "get_data_plane"]


def get_data_plane(request: Request) -> DataPlane:
    data_plane: DataPlane = request.app.state.data_plane
    return data_plane


DataPlaneDep = Annotated[DataPlane, Depends(get_data_plane)]
