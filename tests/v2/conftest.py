"""A real stack on the bundled model store (uvicorn + grpc on free loopback ports)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from service.server import BackgroundStack
from service.settings import Settings

MODEL_STORE = Path(__file__).resolve().parents[2] / "model_store"
MODELS = {
    "classification": "shapes-classifier",
    "detection": "shapes-detector",
    "segmentation": "shapes-segmenter",
}


def stack_settings(**overrides: object) -> Settings:
    fields: dict[str, object] = {
        "model_store": MODEL_STORE,
        "http_port": 0,
        "grpc_port": 0,
        "intra_op_threads": 1,
        "preprocess_threads": 2,
        "warmup_runs": 1,
        "graceful_shutdown_s": 2,
    }
    fields.update(overrides)
    return Settings(**fields)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def served() -> Iterator[BackgroundStack]:
    """The three bundled shapes-* models behind REST and gRPC."""
    with BackgroundStack(stack_settings(), CollectorRegistry()) as stack:
        yield stack
