"""``python -m benchmarks.load``: closed-loop load over REST and gRPC vs the bare engine."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from care_serve.commands.sizes import add_image_size_option


def register(subparsers: Any) -> None:
    """Add the ``bench-load`` subcommand."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "bench-load",
        help="load-test the service (REST + gRPC) and compare with the bare engine",
        description="Start the service on loopback (or target --url/--grpc-target), drive "
        "closed-loop concurrency with a real JPEG over REST and gRPC (and the v2 protocol over "
        "REST and gRPC with the stock tritonclient, when installed), and print p50/p90/p99 "
        "latency and throughput next to the bare engine's best throughput (batch 1-16), its "
        "batch-1 latency and the JPEG's decode time. Without a classification model in the "
        "store, a care_s0 with random weights is exported to a temporary store (needs torch).",
    )
    parser.add_argument(
        "--model",
        default=None,
        help="model name (default: the first classification model in the store, or of the "
        "server's /models with --url)",
    )
    parser.add_argument("--model-store", default=None, help="store (default: settings)")
    parser.add_argument(
        "--concurrency", type=int, nargs="+", default=[1, 4, 16, 64], help="levels (max 256)"
    )
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per level")
    parser.add_argument(
        "--protocols",
        nargs="+",
        choices=("rest", "grpc", "v2-rest", "v2-grpc"),
        default=None,
        help="default: rest grpc, plus v2-rest v2-grpc when tritonclient is installed",
    )
    parser.add_argument("--url", default=None, help="a running server's REST URL (loopback)")
    parser.add_argument("--grpc-target", default=None, help="its gRPC host:port (loopback)")
    add_image_size_option(parser)
    parser.add_argument("--engine-seconds", type=float, default=2.0, help="per batch size")
    parser.set_defaults(handler=run)


def first_classification_model(models: list[dict[str, Any]]) -> str | None:
    """The first (by name) classification model of a ``/models`` listing."""
    names = sorted(m["name"] for m in models if m.get("task") == "classification")
    return names[0] if names else None


def run(args: argparse.Namespace) -> int:
    """Run the benchmark and print the tables."""
    import asyncio
    import tempfile
    from pathlib import Path

    from benchmarks.load import client as lb
    from care_serve.settings import Settings, cpu_count
    from care_serve.store import ModelRepository

    if not args.concurrency or max(args.concurrency) > lb.MAX_CONCURRENCY:
        raise ValueError(f"--concurrency levels must be 1..{lb.MAX_CONCURRENCY}")
    if min(args.concurrency) < 1 or not 0 < args.duration <= 120:
        raise ValueError("--concurrency must be >= 1 and --duration in (0, 120] seconds")
    lb.check_loopback(args.url, args.grpc_target)
    protocols = args.protocols or [
        *lb.OWN_PROTOCOLS,
        *(lb.V2_PROTOCOLS if lb.v2_available() else ()),
    ]
    if any(p in lb.V2_PROTOCOLS for p in protocols) and not lb.v2_available():
        raise ValueError("the v2 rows need tritonclient: pip install 'tritonclient[http,grpc]'")
    external = bool(args.url or args.grpc_target)
    if external and not (args.url and args.grpc_target):
        raise ValueError("with --url give --grpc-target too (and the reverse)")
    if external and not args.model:
        args.model = first_classification_model(lb.list_models(args.url))
        if args.model is None:
            raise ValueError(f"the server at {args.url} serves no classification model")

    tmp = tempfile.TemporaryDirectory(prefix="care-bench-")
    store = Path(args.model_store) if args.model_store else Settings().model_store
    repo = ModelRepository(store)
    latest = {n: p for n, p in repo.latest_packages().items() if not isinstance(p, Exception)}
    candidates = [n for n, p in latest.items() if p.manifest.task == "classification"]
    name = args.model or (candidates[0] if candidates else None)
    if name is None:
        print(f"no classification model in {store}: exporting care_s0 (random weights) ...")
        store = lb.build_bench_store(Path(tmp.name))
        repo = ModelRepository(store)
        name = repo.model_names()[0]
    package = repo.package(name)
    manifest = package.manifest
    if manifest.format != "onnx":
        raise ValueError(f"bench-load compares against onnxruntime; {name} is {manifest.format}")
    height, width = args.image_size
    jpeg = lb.make_jpeg(width, height)
    settings = Settings()
    threads, spin = settings.threads_per_model(1), settings.onnx_allow_spinning
    print(
        f"model {name}/{manifest.version} ({manifest.architecture}, input "
        f"{manifest.input.height}x{manifest.input.width}), JPEG {height}x{width} (HxW, "
        f"{len(jpeg)} bytes), {cpu_count()} cores, {threads} intra-op "
        f"threads, ORT spinning {spin}. Shared machines are noisy: compare "
        "figures from one run only."
    )
    weights = package.path / manifest.weights
    engine_before = lb.measure_engine(
        weights, manifest, jpeg, threads, seconds_per_size=args.engine_seconds
    )

    server = None
    if external:
        url, target = args.url, args.grpc_target
    else:
        server = lb.ServerProcess(store, name)
        url, target = server.url, server.grpc_target
    pid = server.proc.pid if server is not None else None
    results = []
    try:
        if server is not None:
            server.wait_ready()
        for protocol in protocols:
            for level in args.concurrency:
                result = asyncio.run(
                    lb.run_level(protocol, level, args.duration, jpeg, name, url, target, pid)
                )
                results.append(result)
                print(
                    f"  {protocol:7} c={level:<3} {result.throughput:7.1f} req/s  "
                    f"p50 {result.pct(50):7.2f} ms  errors {result.errors}",
                    flush=True,
                )
    finally:
        if server is not None:
            server.stop()
        tmp.cleanup()
    engine_after = lb.measure_engine(
        weights, manifest, jpeg, threads, seconds_per_size=args.engine_seconds
    )
    print_report(results, engine_before, engine_after)
    return 0


def print_report(results: list[Any], before: Any, after: Any) -> None:
    """The tables, and each protocol's throughput and latency next to the engine's."""
    from care_serve.settings import cpu_count

    cores = cpu_count()
    print()
    print(
        "| protocol | concurrency | requests | req/s | p50 ms | p90 ms | p99 ms | errors "
        "| server CPU ms/req | client CPU ms/req |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        server_cpu = "n/a" if r.server_cpu_ms is None else f"{r.server_cpu_ms:.1f}"
        print(
            f"| {r.protocol} | {r.concurrency} | {len(r.latencies_ms)} | {r.throughput:.1f} | "
            f"{r.pct(50):.2f} | {r.pct(90):.2f} | {r.pct(99):.2f} | {r.errors} "
            f"| {server_cpu} | {r.client_cpu_ms:.1f} |"
        )
    print()
    print("| bare engine (no server) | before load | after load |")
    print("|---|---:|---:|")
    for size in before.per_batch:
        b, a = before.per_batch[size], after.per_batch[size]
        print(f"| batch {size}: images/s | {b:.1f} | {a:.1f} |")
    print(f"| batch 1 latency ms | {before.batch1_ms:.2f} | {after.batch1_ms:.2f} |")
    print(f"| JPEG decode + preprocess ms | {before.decode_ms:.2f} | {after.decode_ms:.2f} |")
    engine = before if before.best[1] >= after.best[1] else after
    best_size, best_engine = engine.best
    engine_cpu = engine.cpu_ms_per_image.get(best_size)
    if engine_cpu is not None:
        print(f"| CPU ms per image at batch {best_size} | {engine_cpu:.1f} | |")
    print()
    for protocol in sorted({r.protocol for r in results}):
        mine = [r for r in results if r.protocol == protocol]
        best = max(mine, key=lambda r: r.throughput)
        ratio = best.throughput / best_engine
        print(
            f"{protocol}: saturated {best.throughput:.1f} req/s at c={best.concurrency} = "
            f"{ratio:.2f}x the engine's best {best_engine:.1f} images/s"
        )
        if best.server_cpu_ms is not None and engine_cpu is not None:
            spent = best.server_cpu_ms + best.client_cpu_ms
            ceiling = 1000 * cores / spent
            print(
                f"{protocol}: at c={best.concurrency} each request cost "
                f"{best.server_cpu_ms:.1f} ms of server CPU (the engine alone: "
                f"{engine_cpu:.1f} ms per image) and "
                f"{best.client_cpu_ms:.1f} ms of client CPU; {cores} cores shared by both "
                f"serve at most {ceiling:.1f} req/s = {ceiling / best_engine:.2f}x the engine"
            )
        c1 = [r for r in mine if r.concurrency == 1]
        if c1:
            budget = min(before.batch1_ms, after.batch1_ms) + min(before.decode_ms, after.decode_ms)
            p50 = c1[0].pct(50)
            print(
                f"{protocol}: p50 at c=1 {p50:.2f} ms = engine batch-1 + decode {budget:.2f} ms "
                f"+ {p50 - budget:.2f} ms of serving overhead"
            )


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``python -m benchmarks.load`` with ``argv``."""
    from benchmarks.entry import run_command

    return run_command("bench-load", register, argv)
