"""The names of the tasks this server has, and where each one's implementation lives.

The bottom of the package, so that manifest and ``store.json`` validation read the
same list as the transports. ``care_serve.tasks.base.get_task_class`` imports a
task's class from here on first use.
"""

from __future__ import annotations

__all__ = ["TASK_MODULES", "register_task", "task_names"]

# task name -> "module:Class"; imported on first use.
TASK_MODULES: dict[str, str] = {
    "classification": "care_serve.tasks.classification:ClassificationTask",
    "detection": "care_serve.tasks.detection:DetectionTask",
    "segmentation": "care_serve.tasks.segmentation:SegmentationTask",
    "embedding": "care_serve.tasks.embedding:EmbeddingTask",
}


def register_task(name: str, target: str) -> None:
    """Register a task implementation as ``"package.module:ClassName"``."""
    TASK_MODULES[name] = target


def task_names() -> list[str]:
    """Every registered task, in registration order."""
    return list(TASK_MODULES)
