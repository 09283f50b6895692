"""What ``care-serve serve`` prints from start to exit, and how soon it exits once stopped.

One real process (``python -m care_serve serve``) on a store with a PyTorch package (so torch
is loaded, as with ``--format pytorch`` imports) and a broken package that ``store.json`` makes
the default classification model: start-up reports a failure and a warning. The process is
stopped with SIGTERM after one request.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from care_serve.offline.importer import ImportOptions, import_checkpoint
from care_serve.store import write_package
from tests.helpers.packages import LABELS, SIZE, jpeg_bytes, make_manifest

# The text log format: "<date> <time> <LEVEL> <logger>: <message>".
LINE = re.compile(r"^\S+ \S+ (?P<level>[A-Z]+) (?P<logger>[\w.]+): (?P<message>.*)$")


@dataclass
class Run:
    """The process's stderr lines with the time each was read, and when it exited."""

    lines: list[tuple[float, str]]
    exited_at: float
    returncode: int

    def text(self) -> str:
        return "".join(line for _, line in self.lines)

    def messages(self) -> list[tuple[str, str]]:
        """(level, message) of each log line."""
        found = (LINE.match(line.rstrip("\n")) for _, line in self.lines)
        return [(m["level"], m["message"]) for m in found if m]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, tiny_models: dict[int, Any]) -> Run:
    store = tmp_path_factory.mktemp("serve_process") / "store"
    _, onnx_file, checkpoint = tiny_models[1]
    import_checkpoint(
        ImportOptions(
            checkpoint=checkpoint,
            arch="care_tiny",
            name="tiny-pt",
            model_store=store,
            format="pytorch",
            input_size=(SIZE, SIZE),
            labels=str(_labels(store.parent)),
        )
    )
    broken = write_package(store, make_manifest(name="broken"), onnx_file, LABELS)
    (broken / "model.onnx").write_bytes(b"not an onnx file")
    (store / "store.json").write_text(json.dumps({"defaults": {"classification": "broken"}}))

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "care_serve", "serve", "--model-store", str(store)]
    cmd += ["--http-port", "0", "--grpc-port", "0", "--intra-op-threads", "1"]
    cmd += ["--warmup-runs", "1"]
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
    lines: list[tuple[float, str]] = []
    assert proc.stderr is not None
    stderr = proc.stderr

    def read() -> None:
        for line in stderr:
            lines.append((time.monotonic(), line))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 120
        url = None
        while url is None and time.monotonic() < deadline and proc.poll() is None:
            found = re.search(r"REST (http://[\d.]+:\d+)", "".join(line for _, line in lines))
            url = found.group(1) if found else None
            time.sleep(0.05)
        assert url, "".join(line for _, line in lines)
        answer = httpx.post(f"{url}/classify?model=tiny-pt", content=jpeg_bytes(), timeout=60)
        assert answer.status_code == 200, answer.text
        proc.send_signal(signal.SIGTERM)
        returncode = proc.wait(timeout=60)
        exited_at = time.monotonic()
        reader.join(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return Run(lines, exited_at, returncode)


def _labels(folder: Path) -> Path:
    path = folder / "labels.txt"
    path.write_text("\n".join(LABELS) + "\n")
    return path


def test_start_up_lines_name_their_level_once(run: Run) -> None:
    messages = run.messages()
    warnings = [message for level, message in messages if level == "WARNING"]
    assert any("broken/1" in m for m in warnings), run.text()
    assert any("the default classification model 'broken'" in m for m in warnings), run.text()
    for level, message in messages:
        assert not message.startswith(f"{level} "), f"the level twice: {level} {message}"


def test_thread_counts_are_plural_only_when_several(run: Run) -> None:
    text = run.text()
    assert "pytorch (1 thread)" in text, text
    assert not re.search(r"\b1 threads\b", text), text


def test_the_process_exits_promptly_once_stopped(run: Run) -> None:
    assert run.returncode == 0, run.text()
    stopped = [t for t, line in run.lines if "care-serve stopped" in line]
    assert stopped, run.text()
    # Measured before the fix: 0.7 s idle, 0.9-1.3 s with both cores busy; after: 0.2 s and
    # 0.3-0.7 s.
    assert run.exited_at - stopped[0] < 1.0, run.text()
