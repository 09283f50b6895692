"""Fixtures shared by every test folder: golden data, tiny packages and running stacks."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from care_serve.server import BackgroundStack
from care_serve.store import write_package
from tests.helpers.packages import LABELS, NUM_CLASSES, SIZE, make_manifest
from tests.helpers.paths import FIXTURES, OFFICIAL_S0_CHECKPOINT
from tests.helpers.stacks import test_settings

StackFactory = Callable[..., BackgroundStack]


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """Undo what ``care-serve serve`` run in-process does to the root logger.

    ``configure_logging`` binds a handler to the ``sys.stderr`` of the moment, which under
    pytest is a capture stream closed after the test: later log lines would hit it.
    """
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    for handler in handlers:
        if handler not in root.handlers:
            root.addHandler(handler)
    root.setLevel(level)


@pytest.fixture(scope="session")
def official_s0_path() -> Path:
    return OFFICIAL_S0_CHECKPOINT


@pytest.fixture(scope="session")
def golden_input() -> np.ndarray:
    return np.load(FIXTURES / "care_s0_official_input.npy")


@pytest.fixture(scope="module")
def single_thread_torch() -> Iterator[None]:
    """Torch on one thread: for tiny tensors, extra OpenMP threads on a shared 2-core
    machine spin and make small ops many times slower."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[int, tuple[Any, Path, Path]]:
    """Two random care_tiny models: version -> (torch model, onnx file, checkpoint file)."""
    import torch

    from care_serve.models import create_model
    from care_serve.offline.export import export_onnx

    out = tmp_path_factory.mktemp("tiny_models")
    models = {}
    for version in (1, 2):
        torch.manual_seed(version)
        model = create_model("care_tiny", num_classes=NUM_CLASSES)
        onnx_path = out / f"v{version}.onnx"
        # Fused export without the exporter's own parity run (the tests compare to torch).
        export_onnx(model, onnx_path, input_size=(SIZE, SIZE), verify=False)
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


@pytest.fixture(scope="session")
def served() -> Iterator[BackgroundStack]:
    """The three bundled shapes-* models behind REST and gRPC."""
    with BackgroundStack(test_settings(), CollectorRegistry()) as stack:
        yield stack
