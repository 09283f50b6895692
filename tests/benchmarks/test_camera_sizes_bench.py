"""The camera-size benchmark command (smoke: every table, both paths; no timing assertions)."""

from __future__ import annotations

import pytest

from benchmarks.model.camera_sizes import main


def test_camera_sizes_prints_every_table(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--models", "shapes-classifier", "--rounds", "1", "--scenes", "1", "--threads", "1"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| shapes-classifier")]
    paths = [row.split("|")[3].strip() for row in rows[:4]]
    assert paths.count("exact") == 2 and paths.count("fast") == 2
    assert "1/8 decode ms" in out and "accuracy" in out
