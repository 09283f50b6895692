"""Run the peers one after the other and collect a ``PeerRun`` for each."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path

from benchmarks.peers.load import first_answer, run_level
from benchmarks.peers.peers import Peer
from benchmarks.peers.prepare import Artefacts
from benchmarks.peers.processes import PortAllocator, ServerProcess
from benchmarks.peers.procfs import sample_tree
from benchmarks.peers.results import PeerRun

__all__ = ["bench_peer", "keep_logs"]


async def _wait_ready(server: ServerProcess, probe: object, jpeg: bytes, timeout_s: float) -> None:
    from benchmarks.peers.load import RestTarget

    assert isinstance(probe, RestTarget)
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if not server.alive():
            raise RuntimeError(f"the server exited during start-up:\n{server.tail()}")
        if await first_answer(probe, jpeg, timeout_s=1.0):
            return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"no answer after {timeout_s:.0f} s:\n{server.tail()}")


def bench_peer(
    peer: Peer,
    art: Artefacts,
    ports: PortAllocator,
    workdir: Path,
    jpeg: bytes,
    protocols: Sequence[str],
    levels: Sequence[int],
    duration: float,
) -> PeerRun:
    """Start ``peer``, measure start-up, memory and every level, stop it (always)."""
    run = PeerRun(peer.key, peer.label)
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        started = peer.start(art, ports, workdir, jpeg)
    except Exception as exc:  # a peer that cannot be prepared is reported, not fatal
        run.failure = f"not started: {exc}"
        print(f"  {peer.label}: {run.failure}", flush=True)
        return run
    t0 = time.monotonic()
    server = ServerProcess(started.launch, workdir / "server.log")
    try:
        asyncio.run(_wait_ready(server, started.rest, jpeg, started.startup_timeout_s))
        run.startup_s = time.monotonic() - t0
        ready = sample_tree(server.pid)
        run.rss_ready_bytes = ready.rss_bytes if ready else None
        print(
            f"  {peer.label}: answered {run.startup_s:.1f} s after start, "
            f"{(run.rss_ready_bytes or 0) / 2**20:.0f} MiB",
            flush=True,
        )
        for protocol in protocols:
            if protocol not in peer.protocols:
                continue
            target = started.rest if protocol == "rest" else started.grpc
            assert target is not None
            for level in levels:
                stats = asyncio.run(run_level(target, jpeg, level, duration, server.pid))
                run.levels.append(stats)
                cpu = stats.server_cpu_ms_per_request
                print(
                    f"    {protocol:4} c={level:<3} {stats.throughput:7.1f} req/s  "
                    f"p50 {stats.percentile(50):8.1f} ms  p99 {stats.percentile(99):8.1f} ms  "
                    f"errors {stats.errors}  server CPU "
                    f"{'-' if cpu is None else f'{cpu:.1f}'} ms/req",
                    flush=True,
                )
                if not server.alive():
                    raise RuntimeError(f"the server died under load:\n{server.tail()}")
        after = sample_tree(server.pid)
        run.rss_after_bytes = after.rss_bytes if after else None
    except Exception as exc:
        run.failure = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        print(f"  {peer.label} FAILED: {exc}", flush=True)
    finally:
        server.stop()
    return run


def keep_logs(workdir: Path, dest: Path, key: str) -> None:
    """Copy the server's output (and TorchServe's own logs) to ``dest``."""
    import shutil

    dest.mkdir(parents=True, exist_ok=True)
    sources = [workdir / "server.log", *sorted((workdir / "logs").glob("*.log"))]
    for source in sources:
        if source.is_file():
            shutil.copyfile(source, dest / f"{key}-{source.name}")
