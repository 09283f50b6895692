"""Fixtures: tiny CARE packages (random weights, ONNX and PyTorch) and a running stack."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from prometheus_client import CollectorRegistry

from care_serve.commands.import_model import export_to_onnx
from care_serve.models import create_model
from care_serve.server import BackgroundStack
from care_serve.store import write_package
from tests.serving.serving_helpers import LABELS, NUM_CLASSES, SIZE, make_manifest
from tests.stacks import test_settings


def _export(model: Any, path: Path) -> None:
    """Fused export without the exporter's own parity run (the tests compare to torch)."""
    try:
        from care_serve.offline.export import export_onnx
    except ImportError:  # pragma: no cover - before the export module existed
        export_to_onnx(model, path, (SIZE, SIZE))
        return
    export_onnx(model, path, input_size=(SIZE, SIZE), verify=False)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[int, tuple[Any, Path, Path]]:
    """Two random care_tiny models: version -> (torch model, onnx file, checkpoint file)."""
    out = tmp_path_factory.mktemp("tiny_models")
    models = {}
    for version in (1, 2):
        torch.manual_seed(version)
        model = create_model("care_tiny", num_classes=NUM_CLASSES)
        onnx_path = out / f"v{version}.onnx"
        _export(model, onnx_path)
        ckpt = out / f"v{version}.pth"
        torch.save({"state_dict_ema": model.state_dict()}, ckpt)
        models[version] = (model, onnx_path, ckpt)
    return models


@pytest.fixture
def store(tmp_path: Path, tiny_models: dict[int, tuple[Any, Path, Path]]) -> Path:
    """A store with tiny/1 (ONNX)."""
    root = tmp_path / "store"
    write_package(root, make_manifest(), tiny_models[1][1], LABELS)
    return root


StackFactory = Callable[..., BackgroundStack]


@pytest.fixture
def start_stack() -> Iterator[StackFactory]:
    """Start a real stack (uvicorn + grpc on free loopback ports); stopped after the test."""
    stacks: list[BackgroundStack] = []

    def start(model_store: Path, **overrides: Any) -> BackgroundStack:
        stack = BackgroundStack(test_settings(model_store, **overrides), CollectorRegistry())
        stacks.append(stack)
        return stack.__enter__()

    yield start
    for stack in stacks:
        stack.close()
