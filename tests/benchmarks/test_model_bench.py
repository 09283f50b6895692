"""The model benchmark command (smoke: one table with every column; no timing assertions)."""

from __future__ import annotations

import pytest

from benchmarks.model.cli import main
from benchmarks.model.run import RUNNER_TITLES


def test_bench_prints_one_table(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--variants", "care_tiny", "--batch-sizes", "1", "2", "--threads", "1"]
    assert main([*argv, "--repeats", "1", "--number", "1", "--input-size", "64"]) == 0
    out = capsys.readouterr().out
    assert "1 thread(s)" in out and "(d)/(c)" in out
    assert all(title in out for title in RUNNER_TITLES.values())
    rows = [line for line in out.splitlines() if line.startswith("care_tiny")]
    assert [row.split()[1] for row in rows] == ["1", "2"]


def test_bench_rejects_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--variants", "care_s9"]) == 1
    assert "known variants" in capsys.readouterr().err
    assert main(["--variants", "care_tiny", "--batch-sizes", "0"]) == 1
    assert "batch sizes" in capsys.readouterr().err
