"""``python -m benchmarks.soak``: bounded mixed traffic against a server, watching its memory."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any


def register(subparsers: Any) -> None:
    """Add the ``soak`` subcommand."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "soak",
        help="mixed classify/detect/segment traffic for a while: throughput, errors, RSS",
        description="Drive closed-loop traffic that mixes the three tasks on generated scenes, "
        "with a share of malformed and of large images, over REST and gRPC, against a running "
        "server (--url/--grpc-target, loopback only) or a server it starts on the bundled store. "
        "Prints a row every --report-every seconds (requests, req/s, server failures, the "
        "server's RSS from /proc/<pid>/status, answers by status) and a summary; exits 1 if "
        "the server failed any request (a 5xx other than 503/504, INTERNAL, or no answer).",
    )
    parser.add_argument("--duration", type=float, default=60.0, help="seconds (default 60)")
    parser.add_argument(
        "--concurrency", type=int, default=16, help="clients in flight (default 16, max 256)"
    )
    parser.add_argument(
        "--report-every", type=float, default=10.0, help="seconds between rows (default 10)"
    )
    parser.add_argument(
        "--malformed-share", type=float, default=0.05, help="share of malformed images (0.05)"
    )
    parser.add_argument(
        "--large-share", type=float, default=0.05, help="share of large images (default 0.05)"
    )
    parser.add_argument(
        "--large-side", type=int, default=2048, help="side of the large images (default 2048)"
    )
    parser.add_argument(
        "--url", default=None, help="a running server's REST URL (loopback; default: start one)"
    )
    parser.add_argument("--grpc-target", default=None, help="its gRPC host:port (loopback)")
    parser.add_argument(
        "--no-grpc", action="store_true", help="REST only (default: half the clients use gRPC)"
    )
    parser.add_argument(
        "--server-pid", type=int, default=None, help="pid of the --url server, for its RSS"
    )
    parser.add_argument(
        "--model-store",
        default=None,
        help="store of the server it starts (default: the bundled model_store)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Run the soak and print the rows and the summary."""
    import asyncio
    from pathlib import Path

    from benchmarks.load import client as lb
    from benchmarks.soak import run as soak
    from care_serve.settings import Settings

    lb.check_loopback(args.url, args.grpc_target)
    if not 0 < args.duration <= soak.MAX_DURATION_S:
        raise ValueError(f"--duration must be in (0, {soak.MAX_DURATION_S:.0f}] seconds")
    if not 1 <= args.concurrency <= lb.MAX_CONCURRENCY:
        raise ValueError(f"--concurrency must be 1..{lb.MAX_CONCURRENCY}")
    if args.grpc_target and not args.url:
        raise ValueError("--grpc-target needs --url")
    payloads = soak.make_payloads(args.seed, large_side=args.large_side)
    server = None
    if args.url:
        url, target, pid = args.url, args.grpc_target, args.server_pid
    else:
        store = Path(args.model_store) if args.model_store else Settings().model_store
        server = lb.ServerProcess(store, "*")
        url, target, pid = server.url, server.grpc_target, server.proc.pid
    try:
        if server is not None:
            server.wait_ready()
        models = soak.served_models(lb.list_models(url))
        print(
            f"soak: {args.duration:.0f} s at concurrency {args.concurrency} against {url}"
            f"{'' if args.no_grpc or not target else ' and gRPC ' + target}; models "
            + ", ".join(f"{task} {name}" for task, name in sorted(models.items()))
            + f"; {args.malformed_share:.0%} malformed, {args.large_share:.0%} large "
            f"({args.large_side}x{args.large_side}) images. Shared machines are noisy."
        )
        report = asyncio.run(
            soak.run_soak(
                url,
                None if args.no_grpc else target,
                models,
                duration_s=args.duration,
                concurrency=args.concurrency,
                report_every_s=args.report_every,
                malformed_share=args.malformed_share,
                large_share=args.large_share,
                server_pid=pid,
                payloads=payloads,
                seed=args.seed,
                out=lambda line: print(line, flush=True),
            )
        )
    finally:
        if server is not None:
            server.stop()
    print()
    print(report.summary())
    return 1 if report.failures else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``python -m benchmarks.soak`` with ``argv``."""
    from benchmarks.entry import run_command

    return run_command("soak", register, argv)
