"""GET /tasks: the tasks this server answers and their routes (read by the page)."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from care_serve.tasks.base import task_classes

__all__ = ["TaskInfo", "TaskList", "router"]

router = APIRouter(tags=["models"])


class TaskInfo(BaseModel):
    """One task: its name (as in a manifest), its route and what it answers."""

    name: str = Field(description="The task, as a manifest names it.")
    route: str = Field(description="Its inference route: POST /{route}.")
    summary: str = Field(description="What the route answers.")


class TaskList(BaseModel):
    tasks: list[TaskInfo]


@router.get("/tasks", response_model=TaskList, summary="The tasks this server answers")
async def list_tasks() -> TaskList:
    return TaskList(
        tasks=[TaskInfo(name=t.name, route=t.route, summary=t.summary) for t in task_classes()]
    )
