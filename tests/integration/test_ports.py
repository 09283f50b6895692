"""A port in use is refused at start, before any model loads, naming the port and the option."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from care_serve.errors import PortInUse
from care_serve.server import ServingStack
from care_serve.serving.manager import ModelManager
from care_serve.settings import Settings


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A loopback port with a listening socket on it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    yield sock.getsockname()[1]
    sock.close()


def _start(store: Path, monkeypatch: pytest.MonkeyPatch, **ports: int) -> str:
    """Start a stack that must fail; return the error message; models must not load."""

    async def no_loading(self: ModelManager) -> list[str]:
        raise AssertionError("models were loaded before the ports were bound")

    monkeypatch.setattr(ModelManager, "start", no_loading)
    settings = Settings(model_store=store, **{"http_port": 0, "grpc_port": 0, **ports})
    stack = ServingStack(settings, CollectorRegistry())
    with pytest.raises(PortInUse) as info:
        asyncio.run(stack.start())
    return info.value.message


def test_busy_rest_port_is_refused_before_loading(
    store: Path, busy_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    message = _start(store, monkeypatch, http_port=busy_port)
    assert str(busy_port) in message
    assert "--http-port" in message and "CARE_SERVE_HTTP_PORT" in message


def test_busy_grpc_port_is_refused_before_loading(
    store: Path, busy_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    message = _start(store, monkeypatch, grpc_port=busy_port)
    assert str(busy_port) in message
    assert "--grpc-port" in message and "CARE_SERVE_GRPC_PORT" in message


def test_two_servers_never_share_a_grpc_port(
    store: Path, start_stack: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = start_stack(store)
    message = _start(store, monkeypatch, grpc_port=first.stack.grpc_port)
    assert str(first.stack.grpc_port) in message and "--grpc-port" in message


def test_serve_command_says_one_line_and_exits_non_zero(store: Path, busy_port: int) -> None:
    env = {**os.environ, "CARE_SERVE_GRPC_PORT": "0"}
    command = [sys.executable, "-m", "care_serve", "serve", "--model-store", str(store)]
    done = subprocess.run(
        [*command, "--http-port", str(busy_port)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert done.returncode != 0
    assert "Traceback" not in done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1, done.stderr
    assert str(busy_port) in errors[0] and "--http-port" in errors[0]
    assert "loaded tiny" not in done.stderr


def test_serve_with_the_grpc_port_taken_prints_only_its_own_line(
    store: Path, busy_port: int
) -> None:
    """No line of gRPC's native logger (``E... add_port.cc ... bind ...``) before care-serve's."""
    command = [sys.executable, "-m", "care_serve", "serve", "--model-store", str(store)]
    done = subprocess.run(
        [*command, "--http-port", "0", "--grpc-port", str(busy_port)],
        capture_output=True,
        text=True,
        timeout=60,
        env=os.environ.copy(),
    )
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("care-serve serve: error: cannot listen for gRPC on 127.0.0.1:")
    assert str(busy_port) in lines[0] and "--grpc-port" in lines[0]
    assert "Address already in use" in lines[0]  # the system's reason, not a guess
