"""A real stack on the bundled model store (uvicorn + grpc on free loopback ports)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from care_serve.server import BackgroundStack
from care_serve.settings import Settings
from tests.stacks import test_settings

MODEL_STORE = Path(__file__).resolve().parents[2] / "model_store"
MODELS = {
    "classification": "shapes-classifier",
    "detection": "shapes-detector",
    "segmentation": "shapes-segmenter",
}


def stack_settings(**overrides: object) -> Settings:
    """Test settings on the bundled store."""
    return test_settings(MODEL_STORE, **overrides)


@pytest.fixture(scope="session")
def served() -> Iterator[BackgroundStack]:
    """The three bundled shapes-* models behind REST and gRPC."""
    with BackgroundStack(stack_settings(), CollectorRegistry()) as stack:
        yield stack
