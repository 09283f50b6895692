"""What a client can do about an error, in the words of the transport it called.

The serving core says *what* would help (``care_serve.errors.Remedy``: load a model,
use another task); each transport names its own route or method for it here.
"""

from __future__ import annotations

from collections.abc import Callable

from care_serve.errors import CareServeError, Remedy
from care_serve.tasks.base import get_task_class

__all__ = ["client_message", "grpc_remedy", "rest_remedy", "v2_grpc_remedy", "v2_rest_remedy"]

Phrasebook = Callable[[Remedy], str]


def client_message(exc: CareServeError, say: Phrasebook) -> str:
    """The error's message, followed by its remedy in the transport's words."""
    return f"{exc.message} ({say(exc.remedy)})" if exc.remedy is not None else exc.message


def rest_remedy(remedy: Remedy) -> str:
    if remedy.action == "use_task":
        return f"use /{get_task_class(remedy.task or '').route}"
    query = "?version=N" if remedy.any_version else ""
    return f"load it with POST /models/{remedy.model or '{name}'}/load{query}"


def grpc_remedy(remedy: Remedy) -> str:
    if remedy.action == "use_task":
        return f"use {get_task_class(remedy.task or '').grpc_method}"
    version = " with its version" if remedy.any_version else ""
    return f"load it with LoadModel{version}"


def v2_rest_remedy(remedy: Remedy) -> str:
    if remedy.action == "use_task":
        return f"send it to a {remedy.task} model"
    return f"load it with POST /v2/repository/models/{remedy.model or '{name}'}/load"


def v2_grpc_remedy(remedy: Remedy) -> str:
    if remedy.action == "use_task":
        return f"send it to a {remedy.task} model"
    return "load it with RepositoryModelLoad"
