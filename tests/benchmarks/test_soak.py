"""``python -m benchmarks.soak``: structure and counts of a short run (never speed)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator

import pytest

from benchmarks.load.client import list_models
from benchmarks.soak.cli import main
from benchmarks.soak.run import make_payloads, run_soak, served_models
from care_serve.server import BackgroundStack
from tests.helpers.paths import BUNDLED_STORE
from tests.helpers.stacks import serving_stack


@pytest.fixture(scope="module")
def bundled() -> Iterator[BackgroundStack]:
    with serving_stack(BUNDLED_STORE, warmup_runs=0) as stack:
        yield stack


def test_a_short_soak_mixes_tasks_and_counts_every_answer(bundled: BackgroundStack) -> None:
    models = served_models(list_models(bundled.http_url))
    assert set(models) == {"classification", "detection", "segmentation"}
    lines: list[str] = []
    report = asyncio.run(
        run_soak(
            bundled.http_url,
            bundled.grpc_target,
            models,
            duration_s=3.0,
            concurrency=4,
            report_every_s=1.0,
            malformed_share=0.2,
            large_share=0.1,
            server_pid=os.getpid(),
            payloads=make_payloads(0, count=4, large_side=512),
            out=lines.append,
        )
    )
    assert report.requests == sum(sum(c.values()) for c in report.by_task.values()) > 0
    assert set(report.by_task) == set(models)
    assert set(report.by_kind) == {"normal", "malformed", "large"}
    assert set(report.by_kind["malformed"]) <= {"400", "INVALID_ARGUMENT"}
    assert {"200", "OK"} <= set(report.statuses)  # both transports were used
    assert report.failures == 0, report.statuses
    assert len(report.rows) >= 2 and all(r["rss_mb"] and r["rss_mb"] > 0 for r in report.rows)
    assert sum(r["requests"] for r in report.rows) <= report.requests
    assert lines[0].startswith("|    t s |") and len(lines) == 1 + len(report.rows)
    summary = report.summary()
    assert "server failures" in summary and "server RSS:" in summary
    assert all(task in summary for task in models)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--url", "http://10.1.2.3:8000"], "loopback"),
        (["--duration", "100000"], "--duration"),
        (["--concurrency", "1000"], "--concurrency"),
    ],
)
def test_soak_refuses_non_loopback_and_unbounded_runs(
    extra: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(extra) == 1
    assert message in capsys.readouterr().err


def test_soak_command_starts_its_own_server_and_reports(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["--duration", "2", "--concurrency", "2", "--report-every", "1"]
    assert main([*argv, "--large-side", "256"]) == 0
    out = capsys.readouterr().out
    assert "| task | requests |" in out and "server RSS:" in out
    assert "shapes-classifier" in out and "server failures" in out
