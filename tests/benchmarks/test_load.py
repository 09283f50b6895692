"""The load benchmark's bookkeeping: CPU accounting and the report (no server needed)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from benchmarks.load import client as lb
from benchmarks.load.cli import print_report
from care_serve.settings import cpu_count


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="needs Linux /proc")
def test_process_cpu_seconds_follows_this_process_and_ends_with_it() -> None:
    before = lb.process_cpu_seconds(os.getpid())
    assert before is not None
    end = time.process_time() + 0.2
    while time.process_time() < end:
        pass
    after = lb.process_cpu_seconds(os.getpid())
    assert after is not None and after - before >= 0.1
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    assert lb.process_cpu_seconds(done.pid) is None


def test_report_shows_cpu_per_request_and_the_ceiling(capsys: pytest.CaptureFixture[str]) -> None:
    # 100 answers in 2 s = 50 req/s, 4 s of server CPU = 40 ms per request.
    level = lb.LevelResult("rest", 16, [20.0] * 100, 0, 2.0, server_cpu_s=4.0, client_cpu_s=0.5)
    assert level.server_cpu_ms == pytest.approx(40.0)
    assert level.client_cpu_ms == pytest.approx(5.0)
    assert lb.LevelResult("grpc", 1).server_cpu_ms is None
    engine = lb.EngineResult({1: 40.0, 8: 60.0}, 25.0, 6.0, {1: 50.0, 8: 30.0})
    print_report([level], engine, engine)
    out = capsys.readouterr().out
    assert "| rest | 16 | 100 | 50.0 |" in out and "| 40.0 | 5.0 |" in out
    assert "| CPU ms per image at batch 8 | 30.0 |" in out
    # The cores / (40 + 5) ms per request (2 cores: 44.4 req/s = 0.74x 60 images/s).
    ceiling = 1000 * cpu_count() / 45.0
    assert f"serve at most {ceiling:.1f} req/s = {ceiling / 60:.2f}x the engine" in out
    assert "0.83x the engine's best 60.0 images/s\n" in out and "target" not in out
