"""Tasks: what a model answers (classification, detection, segmentation), as plugins."""

from care_serve.imaging.preprocess import PreprocessMeta, normalize, preprocess_image
from care_serve.tasks.base import TASK_MODULES, Task, get_task_class, register_task

__all__ = [
    "TASK_MODULES",
    "PreprocessMeta",
    "Task",
    "get_task_class",
    "normalize",
    "preprocess_image",
    "register_task",
]
