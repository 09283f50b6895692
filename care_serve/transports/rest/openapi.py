"""The served OpenAPI document, made to say what the server really does.

FastAPI documents a 422 validation response on every route with parameters; this
server answers bad parameters with 400 (``care_serve.transports.rest.errors``), so those go.
Limits checked by the tasks themselves (so that their messages, which name the
model's own limit, reach the client) and limits that come from the settings
(``max_top_k``) are declared here, as each task states them (``openapi_limits``).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from care_serve.settings import Settings
from care_serve.tasks.base import task_classes
from care_serve.transports.rest.security import access_of

__all__ = ["install_openapi"]

_VALIDATION_REF = "#/components/schemas/HTTPValidationError"
_REFUSALS = {
    "infer": [
        ("401", "No API key, or one the server does not know"),
        ("429", "Rate limit exceeded (Retry-After)"),
    ],
    "admin": [
        ("401", "No admin credential, or one the server does not know"),
        ("403", "The key lacks the admin scope, or model control is off"),
        ("429", "Rate limit exceeded (Retry-After)"),
    ],
}


def _is_fastapi_validation(response: dict[str, Any]) -> bool:
    schema = response.get("content", {}).get("application/json", {}).get("schema", {})
    return bool(schema.get("$ref") == _VALIDATION_REF)


def _constrain(schema: dict[str, Any], **limits: float) -> None:
    """Add ``limits`` (minimum, maximum) to the numeric branch of a parameter schema."""
    for branch in schema.get("anyOf", [schema]):
        if branch.get("type") in ("integer", "number"):
            branch.update(limits)


def tidy_openapi(doc: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """Drop FastAPI's 422 validation responses; declare the settings' parameter limits."""
    limits: dict[str, dict[str, float]] = {}
    for task in task_classes():
        limits.update(task.openapi_limits(settings))
    for operations in doc.get("paths", {}).values():
        for operation in operations.values():
            responses = operation.get("responses", {})
            if "422" in responses and _is_fastapi_validation(responses["422"]):
                del responses["422"]
            for param in operation.get("parameters", []):
                if param.get("name") in limits:
                    _constrain(param["schema"], **limits[param["name"]])
    schemas = doc.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    declare_security(doc, settings)
    return doc


def declare_security(doc: dict[str, Any], settings: Settings) -> None:
    """Bearer credentials on the operations that need them (the docs' Authorize button)."""
    doc.setdefault("components", {})["securitySchemes"] = {
        "bearer": {
            "type": "http",
            "scheme": "bearer",
            "description": "An API key (care-serve keys add) or the admin token.",
        }
    }
    # 429 only where a rate can apply: a default rate, or keys (each may carry its own).
    limited = settings.rate_limit is not None or settings.api_keys_file is not None
    for path, operations in doc.get("paths", {}).items():
        for method, operation in operations.items():
            access = access_of(method.upper(), path, settings.metrics_open)
            if access == "open" or (access == "infer" and settings.api_keys_file is None):
                continue
            operation["security"] = [{"bearer": []}]
            responses = operation.setdefault("responses", {})
            for code, text in _REFUSALS[access]:
                if code != "429" or limited:
                    responses.setdefault(code, {"description": text})


def install_openapi(app: FastAPI, settings: Settings) -> None:
    """Serve the tidied document (built once, on first request)."""

    def build() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            app.openapi_schema = tidy_openapi(doc, settings)
        return app.openapi_schema

    app.openapi = build  # type: ignore[method-assign]
