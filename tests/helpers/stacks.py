"""The serving stacks tests start: the real REST + gRPC stack on ephemeral loopback ports."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from care_serve.server import BackgroundStack
from care_serve.settings import Settings
from tests.helpers.paths import BUNDLED_STORE

__all__ = [
    "ADMIN",
    "ADMIN_TOKEN",
    "BUNDLED_MODELS",
    "BUNDLED_STORE",
    "TEST_SETTINGS",
    "serving_stack",
    "test_settings",
]

# Model control is off without an admin credential: tests that load and unload use this.
ADMIN_TOKEN = "test-admin-token"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

# The default model of each task in the bundled store.
BUNDLED_MODELS = {
    "classification": "shapes-classifier",
    "detection": "shapes-detector",
    "segmentation": "shapes-segmenter",
}
# Small and quick: one backend thread, ephemeral ports, short warm-up, drain and grace.
TEST_SETTINGS: dict[str, Any] = {
    "http_port": 0,
    "grpc_port": 0,
    "intra_op_threads": 1,
    "preprocess_threads": 2,
    "warmup_runs": 1,
    "graceful_shutdown_s": 2,
    "drain_timeout_s": 5,
}


def test_settings(model_store: Path = BUNDLED_STORE, **overrides: Any) -> Settings:
    """Settings for a test stack on ``model_store``; ``overrides`` win over the defaults."""
    return Settings(**{"model_store": model_store, **TEST_SETTINGS, **overrides})


test_settings.__test__ = False  # type: ignore[attr-defined]  # a helper, not a test


@contextmanager
def serving_stack(model_store: Path = BUNDLED_STORE, **overrides: Any) -> Iterator[BackgroundStack]:
    """A running stack (its own metrics registry) on ``model_store``, stopped on exit."""
    with BackgroundStack(test_settings(model_store, **overrides), CollectorRegistry()) as stack:
        yield stack
