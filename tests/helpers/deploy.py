"""Paths and loaders shared by the deployment tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from care_serve.settings import Settings
from tests.helpers.paths import ROOT

KUBE = ROOT / "deploy" / "kubernetes"
SCHEMAS = KUBE / "schemas"
DOCKER = ROOT / "docker"
K8S_VERSION = "1.37.0"  # the newest schema set kubernetes-validate ships


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def manifests() -> dict[str, dict[str, Any]]:
    """Every resource under deploy/kubernetes/ (not schemas/), by 'Kind/name'."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(KUBE.rglob("*.yaml")):
        if SCHEMAS in path.parents:
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                found[f"{doc['kind']}/{doc['metadata']['name']}"] = doc
    return found


def unknown_settings(names: list[str]) -> list[str]:
    """The CARE_SERVE_* names that are not a field of care_serve.settings.Settings."""
    fields = set(Settings.model_fields)
    return [
        name
        for name in names
        if name.startswith("CARE_SERVE_") and name.removeprefix("CARE_SERVE_").lower() not in fields
    ]
