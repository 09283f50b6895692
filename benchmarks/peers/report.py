"""The peer benchmark's markdown tables and plots."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from benchmarks.peers.account import thread_group
from benchmarks.peers.results import LevelStats, PeerRun

__all__ = ["render_markdown", "write_plots"]

PROTOCOL_NAMES = {"rest": "REST", "grpc": "gRPC"}


def _num(value: float | None, digits: int = 1) -> str:
    if value is None or math.isnan(value):
        return "-"
    return f"{value:.{digits}f}"


def _mib(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**20:.0f}"


def _rows(runs: Sequence[PeerRun]) -> list[tuple[PeerRun, str]]:
    return [(run, protocol) for run in runs for protocol in run.protocols]


def summary_table(runs: Sequence[PeerRun], levels: Sequence[int]) -> str:
    """Throughput req/s / p50 ms, one row per server and protocol, one column per level."""
    head = "| server | protocol | " + " | ".join(f"c={c}" for c in levels) + " |"
    lines = [head, "|---|---|" + "---:|" * len(levels)]
    for run, protocol in _rows(runs):
        cells = []
        for c in levels:
            stats = run.level(protocol, c)
            cells.append(
                "-" if stats is None else f"{stats.throughput:.1f} / {_num(stats.pct(50))}"
            )
        lines.append(f"| {run.label} | {PROTOCOL_NAMES[protocol]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def detail_table(runs: Sequence[PeerRun], levels: Sequence[int]) -> str:
    """Every level: throughput, p50, p99, errors, server CPU per request and cores busy."""
    lines = [
        "| server | protocol | concurrency | req/s | p50 ms | p99 ms | errors "
        "| server CPU ms/req | server cores busy |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run, protocol in _rows(runs):
        for c in levels:
            stats = run.level(protocol, c)
            if stats is None:
                continue
            lines.append(
                f"| {run.label} | {PROTOCOL_NAMES[protocol]} | {c} | {stats.throughput:.1f} "
                f"| {_num(stats.pct(50))} | {_num(stats.pct(99))} | {stats.errors} "
                f"| {_num(stats.server_cpu_ms)} | {_num(stats.server_cores_busy, 2)} |"
            )
    return "\n".join(lines)


_ACCOUNT_STAGES = (
    ("preprocess", "decode + preprocess"),
    ("queue", "queue"),
    ("compute", "compute"),
    ("postprocess", "post-process"),
)
_CPU_GROUPS = ("event loop", "decode + preprocess", "compute", "other")


def account_table(runs: Sequence[PeerRun], levels: Sequence[int]) -> str | None:
    """Where care-serve's time and CPU went, per request: its own stage metrics (mean wall
    ms), the rest of the client's latency, and CPU ms by thread (None without the data)."""
    stage_head = " | ".join(f"{label} ms" for _, label in _ACCOUNT_STAGES)
    cpu_head = " | ".join(f"CPU {group}" for group in _CPU_GROUPS)
    lines = [
        f"| server | protocol | c | client mean ms | in the server ms | {stage_head} "
        f"| outside the data plane ms | {cpu_head} | CPU total ms/req |",
        "|---|---|---:|" + "---:|" * (len(_ACCOUNT_STAGES) + len(_CPU_GROUPS) + 4),
    ]
    for run, protocol in _rows(runs):
        for c in levels:
            stats = run.level(protocol, c)
            count = (stats.stage_s.get("count", 0.0) if stats is not None else 0.0) or 0.0
            if stats is None or count <= 0 or not stats.latencies_ms:
                continue
            mean = sum(stats.latencies_ms) / len(stats.latencies_ms)
            inside = 1000 * stats.stage_s["request"] / count
            stages = [1000 * stats.stage_s[key] / count for key, _ in _ACCOUNT_STAGES]
            cpu = dict.fromkeys(_CPU_GROUPS, 0.0)
            for name, seconds in stats.thread_cpu_s.items():
                cpu[thread_group(name)] += 1000 * seconds / count
            lines.append(
                f"| {run.label} | {PROTOCOL_NAMES[protocol]} | {c} | {mean:.1f} | {inside:.1f} | "
                + " | ".join(f"{v:.1f}" for v in stages)
                + f" | {mean - inside:.1f} | "
                + " | ".join(f"{cpu[g]:.1f}" for g in _CPU_GROUPS)
                + f" | {sum(cpu.values()):.1f} |"
            )
    return "\n".join(lines) if len(lines) > 2 else None


def edge_table(runs: Sequence[PeerRun]) -> str:
    """Start-up time and resident memory of each server's process tree."""
    lines = [
        "| server | start to first answer s | resident MiB, ready | resident MiB, after load "
        "| note |",
        "|---|---:|---:|---:|---|",
    ]
    for run in runs:
        note = run.failure or ""
        lines.append(
            f"| {run.label} | {_num(run.startup_s)} | {_mib(run.rss_ready_bytes)} "
            f"| {_mib(run.rss_after_bytes)} | {note} |"
        )
    return "\n".join(lines)


def _ratio(ours: float, theirs: float) -> str:
    return "-" if theirs <= 0 or math.isnan(theirs) or math.isnan(ours) else f"{ours / theirs:.2f}x"


def ranking_table(runs: Sequence[PeerRun], levels: Sequence[int]) -> str | None:
    """care-serve against the others over REST: req/s per level, p50 at c=1, CPU per
    request and cores at the top level, idle cores; a last row with care-serve / the best
    other server (highest req/s; lowest p50). None without care-serve and another server."""
    care = next((r for r in runs if r.key == "care-serve" and r.level("rest", levels[0])), None)
    others = [r for r in runs if r.key != "care-serve"]
    if care is None or not others:
        return None
    top = levels[-1]
    lines = [
        "| server | "
        + " | ".join(f"req/s c={c}" for c in levels)
        + f" | p50 ms c={levels[0]} | CPU ms/req c={top} | cores c={top} | idle cores | note |",
        "|---|" + "---:|" * (len(levels) + 4) + "---|",
    ]
    for run in runs:
        cells = [_num(stats.throughput) if (stats := run.level("rest", c)) else "-" for c in levels]
        first, last = run.level("rest", levels[0]), run.level("rest", top)
        cells += [
            _num(first.pct(50)) if first else "-",
            _num(last.server_cpu_ms) if last else "-",
            _num(last.server_cores_busy, 2) if last else "-",
            _num(run.idle_cores, 2),
            (run.failure or "").replace("|", "/").replace("\n", " ")[:300],
        ]
        lines.append(f"| {run.label} | " + " | ".join(cells) + " |")
    ratios = []
    for c in levels:
        ours = care.level("rest", c)
        measured = [(r, st) for r in others if (st := r.level("rest", c)) and st.answered]
        if ours is None or not measured:
            ratios.append("-")
            continue
        best, stats = max(measured, key=lambda item: item[1].throughput)
        ratios.append(f"{_ratio(ours.throughput, stats.throughput)} ({best.label})")
    ours1 = care.level("rest", levels[0])
    measured1 = [(r, st) for r in others if (st := r.level("rest", levels[0])) and st.answered]
    if ours1 is not None and measured1:
        best1, stats1 = min(measured1, key=lambda item: item[1].pct(50))
        ratios.append(f"{_ratio(ours1.pct(50), stats1.pct(50))} ({best1.label})")
    else:
        ratios.append("-")
    lines.append(
        "| **care-serve / best other** | "
        + " | ".join(ratios)
        + " | | | | (p50: lower is better) |"
    )
    return "\n".join(lines)


def _by_workload(runs: Sequence[PeerRun]) -> list[tuple[str, list[PeerRun]]]:
    groups: dict[str, list[PeerRun]] = {}
    for run in runs:
        groups.setdefault(run.workload, []).append(run)
    return list(groups.items())


def render_markdown(runs: Sequence[PeerRun], levels: Sequence[int], header: str = "") -> str:
    """Per workload: care-serve against the best other, then all three tables, with
    ``header`` (what, where, when) above them."""
    parts = [header.strip()] if header.strip() else []
    for workload, group in _by_workload(runs):
        if workload:
            parts.append(f"## {workload}")
        ranking = ranking_table(group, levels)
        if ranking is not None:
            parts += [
                "care-serve against the others (REST; ratio: care-serve / best other):",
                ranking,
            ]
        parts += [
            "Throughput req/s / p50 ms:",
            summary_table(group, levels),
            "Every level (CPU: the server's whole process tree, from /proc):",
            detail_table(group, levels),
            "Edge cost (resident memory: VmRSS summed over the server's process tree):",
            edge_table(group),
        ]
        account = account_table(group, levels)
        if account is not None:
            parts += [
                "Where care-serve's time and CPU go, per request (wall: the means of its own "
                "stage metrics; the client's mean latency minus the time in the server is HTTP "
                "or gRPC, the loopback and the client; CPU: its threads from /proc, by the "
                "names it gives them, the event loop being the main thread; decode + preprocess "
                "includes post-processing, compute onnxruntime's workers):",
                account,
            ]
    return "\n\n".join(parts) + "\n"


def _series(run: PeerRun, protocol: str, levels: Sequence[int]) -> list[LevelStats]:
    found = [run.level(protocol, c) for c in levels]
    return [s for s in found if s is not None and s.answered]


def write_plots(runs: Sequence[PeerRun], levels: Sequence[int], out_dir: Path) -> list[Path]:
    """``throughput.png`` and ``latency.png`` (p50 and p99) against concurrency."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    fig, ax = plt.subplots(figsize=(9.5, 4.2))
    for run, protocol in _rows(runs):
        series = _series(run, protocol, levels)
        if series:
            ax.plot(
                [s.concurrency for s in series],
                [s.throughput for s in series],
                marker="o",
                label=f"{run.label} {PROTOCOL_NAMES[protocol]}",
            )
    ax.set(xscale="log", xlabel="concurrency (closed loop)", ylabel="requests / s")
    ax.set_xticks(list(levels), [str(c) for c in levels])
    ax.set_title("Throughput against concurrency")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, bbox_to_anchor=(1.02, 1), loc="upper left")
    fig.tight_layout()
    written.append(out_dir / "throughput.png")
    fig.savefig(written[-1], dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(13, 4.2), sharey=True)
    for ax, q in zip(axes, (50, 99), strict=True):
        for run, protocol in _rows(runs):
            series = _series(run, protocol, levels)
            if series:
                ax.plot(
                    [s.concurrency for s in series],
                    [s.pct(q) for s in series],
                    marker="o",
                    label=f"{run.label} {PROTOCOL_NAMES[protocol]}",
                )
        ax.set(xscale="log", yscale="log", xlabel="concurrency (closed loop)")
        ax.set_xticks(list(levels), [str(c) for c in levels])
        ax.set_title(f"p{q} latency (ms)")
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("ms")
    axes[1].legend(fontsize=8, bbox_to_anchor=(1.02, 1), loc="upper left")
    fig.tight_layout()
    written.append(out_dir / "latency.png")
    fig.savefig(written[-1], dpi=110)
    plt.close(fig)
    return written
