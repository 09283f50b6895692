"""``python -m benchmarks.peers``: care-serve against the servers a user would run instead.

Each peer in turn on the same model (CARE S0 with the fixture weights) and the
same 640x480 JPEG, with the same closed-loop client, at each concurrency level
over REST (and gRPC where the server has it). Writes ``peers.md`` (tables),
``peers.json`` (every latency) and ``throughput.png`` / ``latency.png`` to
``--out`` (the servers' logs to ``--out/logs``). Loopback only; every level is
bounded in time and count; every server is stopped at the end, also on errors
and Ctrl-C. ``--interleave`` is the A/B mode for variants on a shared machine.

``--frameworks`` compares care-serve with the serving frameworks a user would
otherwise pick (KServe, BentoML, LitServe, Ray Serve, MLServer, Triton via PyTriton,
and the minimal FastAPI server on the fused and on a plain export), all on the same
fused ONNX file and preprocessing, each in a pinned venv of its own (made on first
use; ``--prepare`` only makes them). ``--workloads camera`` adds the camera sizes: a
1920x1080 JPEG to a detector (512 letterbox) and a 4032x3024 JPEG to the classifier.
No server is measured while its process tree listens beyond loopback.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import random
import shlex
import signal
import sys
import tempfile
from pathlib import Path
from types import FrameType

from benchmarks.peers.framework_peers import ENV_FAILURES, FRAMEWORK_KEYS
from benchmarks.peers.peers import DEFAULT_PEERS, FRAMEWORK_SUITE, PEER_KEYS, REPO, Peer, make_peer
from benchmarks.peers.prepare import Artefacts, care_serve_store
from benchmarks.peers.report import render_markdown, write_plots
from benchmarks.peers.results import PeerRun, load_runs, save_runs
from benchmarks.peers.runner import bench_interleaved, bench_peer, keep_logs
from benchmarks.peers.workloads import (
    WORKLOADS,
    Workload,
    check_pipeline,
    expand_workloads,
    workload_artefacts,
)
from benchmarks.processes import PortAllocator, stop_all

MAX_CONCURRENCY = 256
DEFAULT_CHECKPOINT = REPO / "tests" / "fixtures" / "care_s0_official_fp16.pth.tar"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.peers", description=__doc__)
    parser.add_argument("--peers", nargs="+", choices=PEER_KEYS, default=None)
    parser.add_argument(
        "--frameworks", action="store_true",
        help="peers: care-serve, the minimal FastAPI server (fused and plain) and the serving "
        "frameworks (" + ", ".join(FRAMEWORK_KEYS) + ")",
    )  # fmt: skip
    parser.add_argument(
        "--workloads", nargs="+", choices=[*WORKLOADS, "camera"], default=["classify-640x480"],
        help="what is sent where; camera = detect-1920x1080 classify-4032x3024",
    )  # fmt: skip
    parser.add_argument(
        "--prepare", action="store_true",
        help="only make (or check) the venvs of the selected framework peers, then exit",
    )  # fmt: skip
    parser.add_argument(
        "--protocols", nargs="+", choices=("rest", "grpc"), default=["rest", "grpc"]
    )
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per level")
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 2 s per level, concurrency 1 and 4"
    )
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT)
    parser.add_argument("--arch", default="care_s0")
    parser.add_argument(
        "--ports", default=None, metavar="FIRST-LAST",
        help="take the servers' ports from this range (default: free ephemeral ports)",
    )  # fmt: skip
    parser.add_argument(
        "--care-serve-variant", action="append", default=[], metavar="NAME:KEY=VALUE[,KEY=VALUE]",
        help="also run care-serve with these environment variables (A/B in one run), e.g. "
        "spin:CARE_SERVE_ONNX_ALLOW_SPINNING=1",
    )  # fmt: skip
    parser.add_argument(
        "--interleave", type=int, default=0, metavar="ROUNDS",
        help="A/B mode: start every server at once and cut each level into ROUNDS slices "
        "that visit every (server, protocol) pair in rotating order (start-up and memory are "
        "still measured one by one)",
    )  # fmt: skip
    parser.add_argument(
        "--shuffle-start", type=int, default=None, metavar="SEED",
        help="with --interleave: start the servers in an order drawn with SEED, not as "
        "listed (the report names the order), so no server always starts first",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=Path("bench-results/peers"))
    parser.add_argument("--note", default="", help="a line for the report's header")
    parser.add_argument(
        "--render", type=Path, default=None, metavar="PEERS_JSON",
        help="only re-render the tables and plots of an earlier run's peers.json into --out",
    )  # fmt: skip
    parser.add_argument("--no-plots", action="store_true", help="skip the PNGs (no matplotlib)")
    args = parser.parse_args(argv)
    if args.peers is None:
        args.peers = list(FRAMEWORK_SUITE if args.frameworks else DEFAULT_PEERS)
    elif args.frameworks:
        parser.error("give --peers or --frameworks, not both")
    if args.quick:
        args.duration, args.concurrency = 2.0, [1, 4]
    if not 0 < args.duration <= 120:
        parser.error("--duration must be in (0, 120] seconds")
    if not 0 <= args.interleave <= 20:
        parser.error("--interleave takes 0 (off) to 20 rounds")
    if args.shuffle_start is not None and not args.interleave:
        parser.error("--shuffle-start needs --interleave (one server at a time has no order)")
    if not all(1 <= c <= MAX_CONCURRENCY for c in args.concurrency):
        parser.error(f"--concurrency levels must be 1..{MAX_CONCURRENCY}")
    return args


def parse_variant(text: str) -> tuple[str, dict[str, str]]:
    """``NAME:K=V,K=V`` -> ``(NAME, {K: V})``."""
    name, sep, rest = text.partition(":")
    pairs = [item.partition("=") for item in rest.split(",") if item]
    if not sep or not name or any(not key or not eq for key, eq, _ in pairs):
        raise ValueError(f"--care-serve-variant wants NAME:KEY=VALUE[,KEY=VALUE], got {text!r}")
    return name, {key: value for key, _, value in pairs}


def parse_ports(text: str | None) -> PortAllocator:
    if text is None:
        return PortAllocator()
    first, sep, last = text.partition("-")
    if not sep or not first.isdigit() or not last.isdigit():
        raise ValueError(f"--ports wants FIRST-LAST, got {text!r}")
    return PortAllocator(int(first), int(last))


def _header(args: argparse.Namespace, load_before: float, load_after: float) -> str:
    import onnxruntime

    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    images = ", ".join(
        f"{w.key} (JPEG {w.width}x{w.height})" for w in expand_workloads(args.workloads)
    )
    lines = [
        f"`{shlex.join(['python', '-m', 'benchmarks.peers', *sys.argv[1:]])}`",
        "",
        f"Finished {stamp}; {os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, "
        f"onnxruntime {onnxruntime.__version__}; CARE {args.arch}, {args.checkpoint.name}; "
        f"{images}; {args.duration:g} s per level, closed loop, client on the same cores; "
        f"load average {load_before:.1f} before, {load_after:.1f} after.",
    ]
    if args.shuffle_start is not None:
        lines += ["", f"Servers started in an order drawn with seed {args.shuffle_start}."]
    if args.note:
        lines += ["", args.note]
    return "\n".join(lines)


def start_order(count: int, seed: int | None) -> list[int]:
    """The order to start ``count`` servers in: as listed, or drawn with ``seed``."""
    if seed is None:
        return list(range(count))
    return random.Random(seed).sample(range(count), count)


def render_saved(path: Path, out: Path, plots: bool) -> int:
    """Tables and plots again from ``peers.json`` (e.g. after a change of the report)."""
    runs, meta = load_runs(path)
    levels = sorted({stats.concurrency for run in runs for stats in run.levels})
    markdown = render_markdown(runs, levels, str(meta.get("header", "")))
    print(markdown)
    out.mkdir(parents=True, exist_ok=True)
    (out / "peers.md").write_text(markdown)
    if plots:
        for written in write_plots(runs, levels, out):
            print(f"wrote {written}")
    return 0


def prepare_envs(keys: list[str]) -> dict[str, str]:
    """Make the framework venvs of ``keys``; the error of each that could not be made."""
    from benchmarks.peers.frameworks.envs import ensure_env

    for key in (k for k in keys if k in FRAMEWORK_KEYS):
        try:
            print(f"{key}: {ensure_env(key)}", flush=True)
        except Exception as exc:  # reported in the table (the peer is not started), not fatal
            ENV_FAILURES[key] = str(exc).splitlines()[0]
            print(f"{key}: FAILED: {exc}", flush=True)
    return dict(ENV_FAILURES)


def _bench_workload(
    args: argparse.Namespace,
    peers: list[Peer],
    base: Artefacts,
    workload: Workload,
    ports: PortAllocator,
    root: Path,
) -> list[PeerRun]:
    from benchmarks.load.client import make_jpeg

    art = workload_artefacts(base, workload)
    jpeg = make_jpeg(workload.width, workload.height)
    worst = check_pipeline(art, jpeg)
    print(
        f"== {workload.key}: {art.model_name}, JPEG {workload.width}x{workload.height} "
        f"({len(jpeg) / 1024:.0f} KiB); peers' preprocessing within {worst:.1e} of care-serve's",
        flush=True,
    )
    here = root / workload.key
    logs = args.out / "logs" / workload.key if len(args.workloads) > 1 else args.out / "logs"
    if args.interleave:
        order = start_order(len(peers), args.shuffle_start)
        print("start order: " + ", ".join(peers[i].label for i in order), flush=True)
        runs = bench_interleaved(
            peers, art, ports, here, jpeg, args.protocols, args.concurrency, args.duration,
            args.interleave, workload.key, order,
        )  # fmt: skip
        for index, peer in enumerate(peers):
            keep_logs(here / f"peer{index + 1}-{peer.key}", logs, f"{index + 1}-{peer.key}")
        return runs
    runs = []
    for index, peer in enumerate(peers):
        print(f"[{index + 1}/{len(peers)}] {peer.label}", flush=True)
        workdir = here / f"peer{index + 1}-{peer.key}"
        runs.append(
            bench_peer(
                peer,
                art,
                ports,
                workdir,
                jpeg,
                args.protocols,
                args.concurrency,
                args.duration,
                workload.key,
            )
        )
        keep_logs(workdir, logs, f"{index + 1}-{peer.key}")
    return runs


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render is not None:
        return render_saved(args.render, args.out, not args.no_plots)
    env_failures = prepare_envs(args.peers)
    if args.prepare:
        return 1 if env_failures else 0
    ports = parse_ports(args.ports)
    variants = [parse_variant(v) for v in args.care_serve_variant]
    workloads = expand_workloads(args.workloads)
    args.workloads = [w.key for w in workloads]
    peers: list[Peer] = []
    for key in args.peers:
        peers.append(make_peer(key))
        if key == "care-serve":
            peers += [make_peer(key, name, env) for name, env in variants]

    def on_signal(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    load_before = os.getloadavg()[0]
    runs: list[PeerRun] = []
    with tempfile.TemporaryDirectory(prefix="care-peers-") as tmp:
        root = Path(tmp)
        try:
            print(f"importing {args.checkpoint.name} into a temporary store ...", flush=True)
            base = care_serve_store(args.checkpoint, args.arch, args.arch, root)
            for workload in workloads:
                runs += _bench_workload(args, peers, base, workload, ports, root)
        finally:
            stop_all()
    header = _header(args, load_before, os.getloadavg()[0])
    markdown = render_markdown(runs, args.concurrency, header)
    print()
    print(markdown)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "peers.md").write_text(markdown)
    save_runs(runs, args.out / "peers.json", {"argv": sys.argv[1:], "header": header})
    if not args.no_plots:
        for workload in workloads:
            group = [run for run in runs if run.workload == workload.key]
            out = args.out / workload.key if len(workloads) > 1 else args.out
            out.mkdir(parents=True, exist_ok=True)
            for path in write_plots(group, args.concurrency, out):
                print(f"wrote {path}")
    print(f"wrote {args.out / 'peers.md'} and {args.out / 'peers.json'}")
    return 0 if all(run.failure is None for run in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
