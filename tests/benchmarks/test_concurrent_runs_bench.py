"""The concurrent-runs benchmark command (smoke: the table and its ratio; no timing bounds)."""

from __future__ import annotations

import pytest

from benchmarks.model.concurrent_runs import main
from care_serve.settings import default_model_store


def test_concurrent_runs_prints_each_configuration(capsys: pytest.CaptureFixture[str]) -> None:
    onnx = default_model_store() / "shapes-classifier" / "1" / "model.onnx"
    argv = ["--onnx", str(onnx), "--seconds", "0.2", "--rounds", "1", "--batch-sizes", "1", "2"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "| batch | one run img/s (cores) | shared img/s (cores) | side by side img/s" in out
    rows = [line for line in out.splitlines() if line.startswith(("| 1 |", "| 2 |"))]
    assert len(rows) == 2
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert all(float(c.split()[0]) > 0 for c in cells[1:4])
        assert cells[4].endswith("x")


def test_concurrent_runs_refuses_one_thread() -> None:
    assert main(["--threads", "1"]) == 2
