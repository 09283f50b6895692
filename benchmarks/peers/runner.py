"""Run the peers and collect a ``PeerRun`` for each.

``bench_peer``: one server at a time (the peer table). ``bench_interleaved``: all
servers up at once (idle ones cost nothing), each level cut into rounds that
visit every (server, protocol) pair in rotating order, so that a change of the
machine's load during the run hits every server and protocol alike (A/B of
variants on a shared machine).
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks.peers.load import RestTarget, first_answer, run_level
from benchmarks.peers.peers import Peer, Started
from benchmarks.peers.prepare import Artefacts
from benchmarks.peers.results import LevelStats, PeerRun
from benchmarks.peers.sockets import beyond_loopback
from benchmarks.processes import PortAllocator, ServerProcess
from benchmarks.procfs import sample_tree

__all__ = ["bench_interleaved", "bench_peer", "keep_logs", "merge_levels"]

IDLE_SAMPLE_S = 2.0  # how long a ready server's idle CPU is measured


def _exposed(server: ServerProcess) -> str | None:
    """What the server's tree listens on beyond loopback (None: loopback only)."""
    found = beyond_loopback(server.pid)
    return ", ".join(str(item) for item in found) if found else None


def _idle_cores(server: ServerProcess) -> float | None:
    """Cores the ready server's tree keeps busy with no request (Ray's daemons, pollers)."""
    before, t0 = sample_tree(server.pid), time.monotonic()
    time.sleep(IDLE_SAMPLE_S)
    after, t1 = sample_tree(server.pid), time.monotonic()
    if before is None or after is None:
        return None
    return (after.cpu_s - before.cpu_s) / (t1 - t0)


async def _wait_ready(
    server: ServerProcess, probe: RestTarget, jpeg: bytes, timeout_s: float
) -> None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if not server.alive():
            raise RuntimeError(f"the server exited during start-up:\n{server.tail()}")
        if await first_answer(probe, jpeg, timeout_s=1.0):
            return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"no answer after {timeout_s:.0f} s:\n{server.tail()}")


@dataclass
class _Live:
    peer: Peer
    run: PeerRun
    started: Started
    server: ServerProcess


def _failure(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"


def _start(
    peer: Peer, art: Artefacts, ports: PortAllocator, workdir: Path, jpeg: bytes
) -> tuple[PeerRun, _Live | None]:
    """Start ``peer`` and wait for its first answer; memory and start-up time recorded."""
    run = PeerRun(peer.key, peer.label)
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        started = peer.start(art, ports, workdir, jpeg)
    except Exception as exc:  # a peer that cannot be prepared is reported, not fatal
        run.failure = f"not started: {exc}"
        print(f"  {peer.label}: {run.failure}", flush=True)
        return run, None
    t0 = time.monotonic()
    server = ServerProcess(started.launch, workdir / "server.log")
    try:
        asyncio.run(_wait_ready(server, started.rest, jpeg, started.startup_timeout_s))
    except Exception as exc:
        run.failure = _failure(exc)
        print(f"  {peer.label} FAILED: {exc}", flush=True)
        server.stop()
        return run, None
    run.startup_s = time.monotonic() - t0
    exposed = _exposed(server)
    if exposed is not None:
        run.failure = f"refused to measure: listens beyond loopback on {exposed}"
        print(f"  {peer.label}: {run.failure}", flush=True)
        server.stop()
        return run, None
    run.idle_cores = _idle_cores(server)
    ready = sample_tree(server.pid)
    run.rss_ready_bytes = ready.rss_bytes if ready else None
    print(
        f"  {peer.label}: answered {run.startup_s:.1f} s after start, "
        f"{(run.rss_ready_bytes or 0) / 2**20:.0f} MiB",
        flush=True,
    )
    return run, _Live(peer, run, started, server)


def _level(live: _Live, protocol: str, level: int, duration: float, jpeg: bytes) -> LevelStats:
    target = live.started.rest if protocol == "rest" else live.started.grpc
    assert target is not None
    stats = asyncio.run(
        run_level(target, jpeg, level, duration, live.server.pid, live.started.metrics_url)
    )
    if not live.server.alive():
        raise RuntimeError(f"the server died under load:\n{live.server.tail()}")
    return stats


def _print(label: str, stats: LevelStats) -> None:
    cpu = stats.server_cpu_ms
    print(
        f"    {label[:28]:28} {stats.protocol:4} c={stats.concurrency:<3} "
        f"{stats.throughput:7.1f} req/s  p50 {stats.pct(50):8.1f} ms  "
        f"p99 {stats.pct(99):8.1f} ms  errors {stats.errors}  server CPU "
        f"{'-' if cpu is None else f'{cpu:.1f}'} ms/req",
        flush=True,
    )


def _finish(live: _Live) -> None:
    after = sample_tree(live.server.pid)
    live.run.rss_after_bytes = after.rss_bytes if after else None
    exposed = _exposed(live.server)
    if exposed is not None:
        live.run.failure = f"listened beyond loopback after the load on {exposed}"


def bench_peer(
    peer: Peer,
    art: Artefacts,
    ports: PortAllocator,
    workdir: Path,
    jpeg: bytes,
    protocols: Sequence[str],
    levels: Sequence[int],
    duration: float,
    workload: str = "",
) -> PeerRun:
    """Start ``peer``, measure start-up, memory and every level, stop it (always)."""
    run, live = _start(peer, art, ports, workdir, jpeg)
    run.workload = workload
    if live is None:
        return run
    try:
        for protocol in (p for p in protocols if p in peer.protocols):
            for level in levels:
                stats = _level(live, protocol, level, duration, jpeg)
                run.levels.append(stats)
                _print(peer.label, stats)
        _finish(live)
    except Exception as exc:
        run.failure = _failure(exc)
        print(f"  {peer.label} FAILED: {exc}", flush=True)
    finally:
        live.server.stop()
    return run


def merge_levels(parts: Sequence[LevelStats]) -> LevelStats:
    """One level from the rounds it was measured in (latencies, errors, time, CPU added)."""
    first = parts[0]
    merged = LevelStats(first.protocol, first.concurrency)
    for part in parts:
        merged.latencies_ms += part.latencies_ms
        merged.errors += part.errors
        merged.seconds += part.seconds
        merged.client_cpu_s += part.client_cpu_s
        merged.window_s += part.window_s
        merged.answered_in_window += part.answered_in_window
    for part in parts:
        for name, cpu_s in part.thread_cpu_s.items():
            merged.thread_cpu_s[name] = merged.thread_cpu_s.get(name, 0.0) + cpu_s
    if all(part.stage_s for part in parts):
        for part in parts:
            for stage, seconds in part.stage_s.items():
                merged.stage_s[stage] = merged.stage_s.get(stage, 0.0) + seconds
    cpu = [p.server_cpu_s for p in parts]
    merged.server_cpu_s = None if any(c is None for c in cpu) else sum(c or 0.0 for c in cpu)
    return merged


def bench_interleaved(
    peers: Sequence[Peer],
    art: Artefacts,
    ports: PortAllocator,
    root: Path,
    jpeg: bytes,
    protocols: Sequence[str],
    levels: Sequence[int],
    duration: float,
    rounds: int,
    workload: str = "",
    start_order: Sequence[int] | None = None,
) -> list[PeerRun]:
    """All ``peers`` up at once; each level in ``rounds`` slices, pairs rotating.

    ``start_order`` lists the indices of ``peers`` in the order to start them (default:
    as listed); the runs and the rounds keep the listed order.
    """
    order = list(range(len(peers))) if start_order is None else list(start_order)
    if sorted(order) != list(range(len(peers))):
        raise ValueError(f"start_order {order} is not an order of {len(peers)} peers")
    started: dict[int, tuple[PeerRun, _Live | None]] = {}
    lives: list[_Live] = []
    try:
        for index in order:
            peer = peers[index]
            run, live = _start(peer, art, ports, root / f"peer{index + 1}-{peer.key}", jpeg)
            run.workload = workload
            started[index] = (run, live)
            if live is not None:
                lives.append(live)
        lives = [live for _, (_, live) in sorted(started.items()) if live is not None]
        # Every (server, protocol) pair of a level shares its rounds, so REST and gRPC are
        # compared under the same machine load as the servers are.
        for level in levels:
            here = [
                (live, protocol)
                for protocol in protocols
                for live in lives
                if protocol in live.peer.protocols
            ]
            parts: dict[tuple[int, str], list[LevelStats]] = {
                (id(live), protocol): [] for live, protocol in here
            }
            for r in range(rounds):
                shift = r % max(1, len(here))
                for live, protocol in here[shift:] + here[:shift]:
                    part = _level(live, protocol, level, duration / rounds, jpeg)
                    parts[(id(live), protocol)].append(part)
            for live, protocol in here:
                stats = merge_levels(parts[(id(live), protocol)])
                live.run.levels.append(stats)
                _print(live.peer.label, stats)
        for live in lives:
            _finish(live)
    except Exception as exc:
        for live in lives:
            live.run.failure = live.run.failure or _failure(exc)
        print(f"  interleaved run FAILED: {exc}", flush=True)
    finally:
        for live in lives:
            live.server.stop()
    return [run for _, (run, _) in sorted(started.items())]


def keep_logs(workdir: Path, dest: Path, key: str) -> None:
    """Copy the server's output (and TorchServe's own logs) to ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    sources = [workdir / "server.log", *sorted((workdir / "logs").glob("*.log"))]
    for source in sources:
        if source.is_file():
            shutil.copyfile(source, dest / f"{key}-{source.name}")
