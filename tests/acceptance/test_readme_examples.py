"""The README's examples run as written, from the repository root, against a started server.

Every fenced ``bash`` and ``python`` block of README.md is either run here or listed in
``NOT_RUN`` with the reason (so a new example cannot go untested unnoticed). The server runs
on free loopback ports: the only change made to an example is its port numbers. Each command
must exit 0 and no answer may be an error.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from care_serve.server import BackgroundStack
from tests.helpers.paths import ROOT
from tests.helpers.stacks import test_settings

README = ROOT / "README.md"
BLOCK = re.compile(r"^```(bash|python)\n(.*?)^```", re.S | re.M)
# Blocks not run here, by their first line, and why.
NOT_RUN = {
    "make serve": "the setup commands themselves (CI runs make test on a fresh clone)",
    ".venv/bin/care-serve pull care_s0": "downloads from the Hugging Face Hub; tests/unit/commands "
    "covers pull against a loopback stand-in and import",
    ".venv/bin/care-serve keys add camera-1": "needs your own certificate files; "
    "tests/integration/security runs the same options with certificates made in the test",
    "curl -X POST -H \"Authorization: Bearer s3cret\" -H 'Content-Type: application/json' \\": (
        "needs a camera and a broker on your network; tests/integration/streams runs streams "
        "from GStreamer's RTSP server to Mosquitto on loopback"
    ),
}


def blocks() -> list[tuple[str, str]]:
    return [(kind, body) for kind, body in BLOCK.findall(README.read_text(encoding="utf-8"))]


def runnable() -> list[tuple[str, str]]:
    return [
        (kind, body)
        for kind, body in blocks()
        if not any(body.lstrip().startswith(first) for first in NOT_RUN)
    ]


def test_every_block_is_run_or_said_why_not() -> None:
    skipped = [b for _, b in blocks() if any(b.lstrip().startswith(f) for f in NOT_RUN)]
    assert len(skipped) == len(NOT_RUN), "a NOT_RUN entry matches no block of the README"
    assert len(runnable()) >= 3


@pytest.fixture(scope="module")
def server() -> Iterator[BackgroundStack]:
    with BackgroundStack(test_settings(), CollectorRegistry()) as stack:
        yield stack


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """An empty directory that sees the repository's examples/ (outputs land here)."""
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    return tmp_path


def _ported(text: str, stack: BackgroundStack) -> str:
    return text.replace("127.0.0.1:8000", f"127.0.0.1:{stack.stack.http_port}").replace(
        "127.0.0.1:50051", f"127.0.0.1:{stack.stack.grpc_port}"
    )


def _commands(body: str) -> list[str]:
    lines = [line.split(" #", 1)[0].strip() for line in body.splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


@pytest.mark.parametrize(
    "block", [b for k, b in runnable() if k == "bash"], ids=lambda b: _commands(b)[0][:40]
)
def test_shell_examples(block: str, server: BackgroundStack, workdir: Path) -> None:
    for command in _commands(block):
        argv = shlex.split(_ported(command, server))
        done = subprocess.run(argv, cwd=workdir, capture_output=True, timeout=60, check=False)
        assert done.returncode == 0, (command, done.stderr)
        assert not done.stdout.lstrip().startswith(b'{"error"'), (command, done.stdout[:300])
    outputs = [p for p in workdir.iterdir() if p.name != "examples"]
    for path in outputs:
        assert path.stat().st_size > 0, path


@pytest.mark.parametrize("block", [b for k, b in runnable() if k == "python"])
def test_python_examples(block: str, server: BackgroundStack, workdir: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", _ported(block, server)],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip(), "the example printed nothing"
