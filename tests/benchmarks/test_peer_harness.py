"""The peer benchmark's bookkeeping: /proc accounting, statistics, tables, wire format.

No server is started and nothing is timed: these are the pure parts of
``benchmarks/peers`` (the benchmark itself is the command ``python -m benchmarks.peers``).
"""

from __future__ import annotations

import asyncio
import math
import os
import threading
import time
from pathlib import Path

import httpx
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from benchmarks.peers.__main__ import parse_ports, parse_variant
from benchmarks.peers.account import scrape_stages, stage_delta
from benchmarks.peers.load import encode_torchserve_request
from benchmarks.peers.report import render_markdown
from benchmarks.peers.results import LevelStats, PeerRun, load_runs, save_runs
from benchmarks.peers.runner import merge_levels
from benchmarks.procfs import parse_stat, parse_vm_rss, sample_tree, thread_cpu, tree_pids
from care_serve.observability.thread_names import name_this_thread
from tests.helpers.packages import jpeg_bytes
from tests.helpers.stacks import serving_stack


def _stat(
    pid: int, comm: str, ppid: int, utime: int, stime: int, cut: int = 0, cst: int = 0
) -> str:
    # Fields after the command: state, ppid, pgrp, session, tty, tpgid, flags, minflt,
    # cminflt, majflt, cmajflt, utime, stime, cutime, cstime, priority, ...
    rest = ["S", ppid, 1, 1, 0, -1, 0, 10, 0, 0, 0, utime, stime, cut, cst, 20, 0, 1]
    return f"{pid} ({comm}) " + " ".join(map(str, rest)) + "\n"


def test_parse_stat_survives_spaces_and_parentheses_in_the_command() -> None:
    assert parse_stat(_stat(7, "java (x) y", 3, 100, 20, 5, 1)) == (3, 126)


def test_parse_vm_rss_reads_kib_and_treats_kernel_threads_as_zero() -> None:
    assert parse_vm_rss("Name:\tjava\nVmRSS:\t  2048 kB\nThreads:\t9\n") == 2048 * 1024
    assert parse_vm_rss("Name:\tkthreadd\nThreads:\t1\n") == 0


def test_tree_pids_follows_descendants_only() -> None:
    parents = {1: 0, 10: 1, 11: 10, 12: 10, 13: 11, 20: 1, 21: 20}
    assert tree_pids(10, parents) == (10, 11, 12, 13)
    assert tree_pids(13, parents) == (13,)


def test_sample_tree_sums_cpu_and_memory_over_the_tree(tmp_path: Path) -> None:
    procs = {
        100: ("torchserve", 1, 50, 10, 0, 0, 1000),
        101: ("java", 100, 400, 100, 30, 0, 300_000),
        102: ("python", 101, 200, 50, 0, 0, 200_000),
        200: ("other", 1, 9999, 9999, 0, 0, 1),  # not in the tree
    }
    for pid, (comm, ppid, ut, st, cut, cst, rss_kib) in procs.items():
        d = tmp_path / str(pid)
        d.mkdir()
        (d / "stat").write_text(_stat(pid, comm, ppid, ut, st, cut, cst))
        (d / "status").write_text(f"Name:\t{comm}\nVmRSS:\t{rss_kib} kB\n")
    (tmp_path / "self").mkdir()  # non-numeric entries are ignored
    sample = sample_tree(100, proc=tmp_path)
    assert sample is not None
    assert sample.pids == (100, 101, 102)
    ticks = 50 + 10 + 400 + 100 + 30 + 200 + 50
    assert sample.cpu_s == pytest.approx(ticks / os.sysconf("SC_CLK_TCK"))
    assert sample.rss_bytes == (1000 + 300_000 + 200_000) * 1024
    assert sample_tree(999, proc=tmp_path) is None


def test_level_stats() -> None:
    stats = LevelStats("rest", 4, [10.0, 20.0, 30.0, 40.0], errors=1, seconds=2.0, server_cpu_s=0.3)
    assert stats.throughput == pytest.approx(2.0)  # with errors: answers per second
    # Without errors, Little's law: 4 clients, 25 ms mean latency = 160 req/s.
    assert LevelStats("rest", 4, [10.0, 20.0, 30.0, 40.0], seconds=9.0).throughput == 160.0
    assert stats.pct(50) == pytest.approx(25.0)
    assert stats.server_cpu_ms == pytest.approx(75.0)
    assert stats.server_cores_busy == pytest.approx(0.15)
    # Answers after the window (the drain of in-flight requests) count for latency only.
    windowed = LevelStats(
        "rest", 64, [5.0] * 30, errors=2, seconds=2.5, window_s=2.0, answered_in_window=24
    )
    assert windowed.throughput == pytest.approx(12.0)
    empty = LevelStats("grpc", 1)
    assert empty.throughput == 0.0 and math.isnan(empty.pct(99))
    assert empty.server_cpu_ms is None and empty.server_cores_busy is None


def _runs() -> list[PeerRun]:
    care = PeerRun("care-serve", "care-serve", 2.5, 200 * 2**20, 230 * 2**20)
    care.levels = [
        LevelStats("rest", 1, [20.0] * 50, 0, 1.0, 0.8),
        LevelStats("grpc", 1, [8.0] * 125, 0, 1.0, 0.9),
    ]
    broken = PeerRun("torchserve", "TorchServe", failure="TimeoutError: no answer after 300 s")
    return [care, broken]


def test_markdown_has_the_summary_the_levels_and_the_edge_cost() -> None:
    text = render_markdown(_runs(), [1, 4], header="shared machine, 3 other agents busy")
    assert text.startswith("shared machine, 3 other agents busy")
    assert "| care-serve | REST | 50.0 / 20.0 | - |" in text
    assert "| care-serve | gRPC | 125.0 / 8.0 | - |" in text
    assert "| care-serve | REST | 1 | 50.0 | 20.0 | 20.0 | 0 | 16.0 | 0.80 |" in text
    assert "| care-serve | 2.5 | 200 | 230 |  |" in text
    assert "| TorchServe | - | - | - | TimeoutError: no answer after 300 s |" in text


def test_results_survive_a_json_round_trip(tmp_path: Path) -> None:
    save_runs(_runs(), tmp_path / "peers.json", {"argv": ["--quick"]})
    runs, meta = load_runs(tmp_path / "peers.json")
    assert meta == {"argv": ["--quick"]}
    assert runs == _runs()


def test_torchserve_request_is_valid_protobuf() -> None:
    # Build TorchServe's PredictionsRequest type at run time and parse the hand-made bytes.
    proto = descriptor_pb2.FileDescriptorProto(name="ts_test.proto", package="ts", syntax="proto3")
    msg = proto.message_type.add(name="PredictionsRequest")
    msg.field.add(name="model_name", number=1, type=9, label=1)
    msg.field.add(name="model_version", number=2, type=9, label=1)
    entry = msg.nested_type.add(name="InputEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, type=9, label=1)
    entry.field.add(name="value", number=2, type=12, label=1)
    msg.field.add(
        name="input", number=3, type=11, label=3, type_name=".ts.PredictionsRequest.InputEntry"
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    cls = message_factory.GetMessageClass(pool.FindMessageTypeByName("ts.PredictionsRequest"))
    image = bytes(range(256)) * 700  # > 128 bytes: multi-byte lengths
    parsed = cls.FromString(encode_torchserve_request("care", image))
    assert parsed.model_name == "care"
    assert dict(parsed.input) == {"data": image}


def test_variant_and_port_range_parsing() -> None:
    assert parse_variant("spin:CARE_SERVE_ONNX_ALLOW_SPINNING=1,X=a=b") == (
        "spin",
        {"CARE_SERVE_ONNX_ALLOW_SPINNING": "1", "X": "a=b"},
    )
    for bad in ("spin", ":A=1", "spin:A"):
        with pytest.raises(ValueError, match="NAME:KEY=VALUE"):
            parse_variant(bad)
    with pytest.raises(ValueError, match="FIRST-LAST"):
        parse_ports("18400")
    with pytest.raises(ValueError, match="0 < first <= last"):
        parse_ports("18499-18400")


def test_interleaved_rounds_merge_into_one_level() -> None:
    parts = [
        LevelStats("rest", 16, [10.0, 20.0], 1, 1.5, 0.4, 0.1, 1.0, 2),
        LevelStats("rest", 16, [30.0], 0, 1.5, 0.2, 0.1, 1.0, 0),
    ]
    merged = merge_levels(parts)
    assert merged.latencies_ms == [10.0, 20.0, 30.0] and merged.errors == 1
    assert merged.throughput == pytest.approx(1.0)  # 2 answers in 2 s of windows
    assert merged.server_cpu_ms == pytest.approx(200.0)
    unknown = merge_levels([parts[0], LevelStats("rest", 16, [5.0], 0, 1.0, None)])
    assert unknown.server_cpu_s is None


class _FakeServer:
    pid = -1  # no such process: the memory sample after the run is None

    def __init__(self, key: str) -> None:
        self.key = key
        self.stopped = False

    def stop(self) -> None:
        self.stopped = True


def _fake_servers(
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[list[_FakeServer], list[tuple[str, str, int]]]:
    """The runner with servers that start at once and levels that answer at once: the
    servers in the order they were started, and every (peer, protocol, level) measured."""
    from benchmarks.peers import runner
    from benchmarks.peers.peers import Peer

    servers: list[_FakeServer] = []
    calls: list[tuple[str, str, int]] = []

    def start(peer: Peer, *args: object) -> tuple[PeerRun, object]:
        servers.append(_FakeServer(peer.key))
        live = runner._Live(peer, PeerRun(peer.key, peer.label), None, servers[-1])  # type: ignore[arg-type]
        return live.run, live

    def level(
        live: runner._Live, protocol: str, c: int, duration: float, jpeg: bytes
    ) -> LevelStats:
        calls.append((live.peer.key, protocol, c))
        return LevelStats(protocol, c, [10.0], 0, duration, None, 0.0, duration, 1)

    monkeypatch.setattr(runner, "_start", start)
    monkeypatch.setattr(runner, "_level", level)
    return servers, calls


def test_interleaved_rounds_visit_rest_and_grpc_of_a_level_together(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Both protocols of a level share its rounds (they once ran minutes apart)."""
    from benchmarks.peers import runner
    from benchmarks.peers.peers import Peer

    servers, calls = _fake_servers(monkeypatch)
    peers = [Peer("care-serve", "care-serve"), Peer("onnx-fastapi", "minimal")]
    runs = runner.bench_interleaved(
        peers,
        None,
        None,
        tmp_path,
        b"",
        ("rest", "grpc"),
        (1, 4),
        6.0,
        3,  # type: ignore[arg-type]
    )
    pairs = [("care-serve", "rest"), ("onnx-fastapi", "rest"), ("care-serve", "grpc")]
    # Level by level; in each, three rounds of every pair in rotating order.
    expected = [
        (key, protocol, c)
        for c in (1, 4)
        for r in range(3)
        for key, protocol in pairs[r:] + pairs[:r]
    ]
    assert calls == expected
    care, minimal = runs
    assert [(s.protocol, s.concurrency) for s in care.levels] == [
        ("rest", 1), ("grpc", 1), ("rest", 4), ("grpc", 4)
    ]  # fmt: skip
    grpc4 = care.level("grpc", 4)
    assert grpc4 is not None and grpc4.seconds == pytest.approx(6.0)  # 3 rounds of 2 s
    assert [s.protocol for s in minimal.levels] == ["rest", "rest"]
    assert all(server.stopped for server in servers)


def test_named_threads_are_counted_under_their_name() -> None:
    """care-serve's thread names reach /proc, and the CPU of each name is summed."""
    done = threading.Event()
    spent: list[float] = []

    def work() -> None:
        assert name_this_thread("care-request-xyz-long")  # cut to the kernel's 15 bytes
        end = time.thread_time() + 0.05
        while time.thread_time() < end:
            pass
        spent.append(time.thread_time())
        done.wait(10)

    thread = threading.Thread(target=work)
    thread.start()
    try:
        while not spent:
            time.sleep(0.01)
        by_name = thread_cpu(os.getpid())
    finally:
        done.set()
        thread.join()
    assert "care-request-xy" in by_name  # 15 bytes, trailing digits and dashes dropped
    assert by_name["care-request-xy"] >= 0.03
    assert thread_cpu(2**22 + 12345) == {}  # no such process


def test_the_account_splits_time_by_stage_and_cpu_by_thread() -> None:
    care = PeerRun("care-serve", "care-serve", 2.5, 200 * 2**20, 230 * 2**20)
    level = LevelStats("rest", 1, [20.0] * 10, 0, 1.0, 0.5)
    level.stage_s = {
        "request": 0.17, "preprocess": 0.05, "queue": 0.002, "compute": 0.11,
        "postprocess": 0.003, "count": 10.0,
    }  # fmt: skip
    level.thread_cpu_s = {"python": 0.04, "care-request": 0.06, "care-compute": 0.35, "x": 0.05}
    care.levels = [level]
    text = render_markdown([care], [1])
    row = (
        "| care-serve | REST | 1 | 20.0 | 17.0 | 5.0 | 0.2 | 11.0 | 0.3 | 3.0 "
        "| 4.0 | 6.0 | 35.0 | 5.0 | 50.0 |"
    )
    assert row in text
    merged = merge_levels([level, level])
    assert merged.stage_s["count"] == 20.0 and merged.thread_cpu_s["python"] == 0.08
    # A server without stage metrics (every other peer) has no account table.
    assert "Where care-serve's time" not in render_markdown(_runs(), [1])


def test_stage_sums_are_read_from_a_running_care_serve() -> None:
    with serving_stack(models=["shapes-classifier"]) as stack:
        url = f"{stack.http_url}/metrics"
        before = asyncio.run(scrape_stages(url))
        for _ in range(3):
            reply = httpx.post(f"{stack.http_url}/classify", content=jpeg_bytes(64, 48))
            assert reply.status_code == 200, reply.text
        after = asyncio.run(scrape_stages(url))
    assert before is not None and after is not None
    delta = stage_delta(before, after)
    assert delta["count"] == 3.0
    assert delta["request"] >= delta["compute"] > 0 and delta["preprocess"] > 0
    assert asyncio.run(scrape_stages("http://127.0.0.1:9/metrics", timeout_s=2)) is None


def test_interleaved_servers_start_in_the_given_order_and_report_as_listed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A drawn start order changes which server starts first, not the runs' order."""
    from benchmarks.peers import runner
    from benchmarks.peers.__main__ import start_order
    from benchmarks.peers.peers import Peer

    servers, _ = _fake_servers(monkeypatch)
    peers = [Peer(key, key) for key in ("care-serve", "onnx-fastapi", "litserve", "kserve")]
    order = next(start_order(4, seed) for seed in range(100) if start_order(4, seed)[0] != 0)
    assert sorted(order) == [0, 1, 2, 3] and start_order(4, None) == [0, 1, 2, 3]
    assert start_order(4, 7) == start_order(4, 7)  # the seed decides the order
    runs = runner.bench_interleaved(
        peers,
        None,
        None,
        tmp_path,
        b"",
        ("rest",),
        (1,),
        1.0,
        1,
        "",
        order,  # type: ignore[arg-type]
    )
    assert [server.key for server in servers] == [peers[i].key for i in order]
    assert [run.key for run in runs] == [peer.key for peer in peers]
    with pytest.raises(ValueError, match="not an order"):
        runner.bench_interleaved(
            peers, None, None, tmp_path, b"", ("rest",), (1,), 1.0, 1, "", [0, 0, 1, 2]
        )  # type: ignore[arg-type]
