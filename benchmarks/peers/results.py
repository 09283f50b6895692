"""What one peer benchmark run measured, and how it is summarised (no I/O but JSON)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.load.client import LevelResult

__all__ = ["LevelStats", "PeerRun", "load_runs", "save_runs"]


@dataclass
class LevelStats(LevelResult):
    """One server, one protocol, one concurrency level (the load benchmark's level, plus
    the answers counted inside the measuring window)."""

    window_s: float = 0.0
    answered_in_window: int = 0
    thread_cpu_s: dict[str, float] = field(default_factory=dict)
    stage_s: dict[str, float] = field(default_factory=dict)

    @property
    def answered(self) -> int:
        return len(self.latencies_ms)

    @property
    def throughput(self) -> float:
        """Answers per second: ``concurrency / mean latency`` (Little's law, closed loop).

        With N clients that send the next request as soon as the answer arrives, N
        requests are always in flight, so N = throughput x mean latency. Unlike counting
        answers in a window, this is not biased by the level's start and its drain, which
        matters when latencies approach the window (short interleaved rounds at c=64).
        With errors (clients then pause 10 ms) answers inside the window are counted.
        """
        if self.latencies_ms and self.errors == 0:
            return 1000.0 * self.concurrency / float(np.mean(self.latencies_ms))
        if self.window_s > 0:
            return self.answered_in_window / self.window_s
        return self.answered / self.seconds if self.seconds > 0 else 0.0

    @property
    def server_cores_busy(self) -> float | None:
        """Average number of cores the server's tree kept busy during the level."""
        if self.server_cpu_s is None or self.seconds <= 0:
            return None
        return self.server_cpu_s / self.seconds


@dataclass
class PeerRun:
    """Everything measured for one server."""

    key: str
    label: str
    startup_s: float | None = None
    rss_ready_bytes: int | None = None
    rss_after_bytes: int | None = None
    levels: list[LevelStats] = field(default_factory=list)
    failure: str | None = None
    workload: str = ""
    idle_cores: float | None = None  # cores the idle, ready server's tree keeps busy

    def level(self, protocol: str, concurrency: int) -> LevelStats | None:
        for stats in self.levels:
            if stats.protocol == protocol and stats.concurrency == concurrency:
                return stats
        return None

    @property
    def protocols(self) -> list[str]:
        seen: list[str] = []
        for stats in self.levels:
            if stats.protocol not in seen:
                seen.append(stats.protocol)
        return seen


def save_runs(runs: list[PeerRun], path: Path, meta: dict[str, Any]) -> None:
    """Raw results (every latency) as JSON, to re-render or re-plot later."""
    path.write_text(json.dumps({"meta": meta, "runs": [asdict(r) for r in runs]}) + "\n")


def load_runs(path: Path) -> tuple[list[PeerRun], dict[str, Any]]:
    """The inverse of ``save_runs``."""
    data = json.loads(path.read_text())
    runs = []
    for raw in data["runs"]:
        levels = [LevelStats(**level) for level in raw.pop("levels")]
        runs.append(PeerRun(**raw, levels=levels))
    return runs, data.get("meta", {})
