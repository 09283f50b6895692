"""The security benchmark's table and its clients' TLS and key handling (no model needed)."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import pytest

from benchmarks.load.client import ClientSecurity, RawHttpClient
from benchmarks.security.cli import CONFIGS, Cell, print_table, verdict
from care_serve.security.keys import KeyFile
from tests.helpers.stacks import serving_stack
from tests.helpers.tls import make_authority


def _cell(rps: float, p50: float, cpu_ms: float = 30.0) -> Cell:
    requests = int(rps * 10)
    return Cell([p50] * 10, requests, 10.0, 0, server_cpu_s=cpu_ms * requests / 1000)


def _cells(secured_rps: float, secured_light_ms: float, again_rps: float) -> dict:
    cells = {
        ("plaintext", "rest", 1): _cell(30.0, 30.0),
        ("plaintext again", "rest", 1): _cell(again_rps, 30.1),
        ("tls", "rest", 1): _cell(29.0, 30.5),
        ("keys", "rest", 1): _cell(30.0, 30.2),
        ("tls+keys", "rest", 1): _cell(secured_rps, 30.6),
    }
    cells.update({(name, "rest", 0): _cell(1000.0, 1.0) for name in CONFIGS})
    cells[("tls+keys", "rest", 0)] = _cell(900.0, secured_light_ms)
    return cells


def test_the_table_compares_each_configuration_with_plaintext(
    capsys: pytest.CaptureFixture[str],
) -> None:
    print_table(_cells(29.7, 1.25, 29.4), argparse.Namespace(protocols=["rest"], concurrency=[1]))
    out = capsys.readouterr().out
    assert "| tls | rest | 1 | 29.0 | 30.50 | 30.0 | -3.3 % | +0.50 ms | 0 |" in out
    assert "| tls+keys | rest | 10000 | 1.000 | +0.000 ms | 0 |" not in out
    assert "| tls+keys | rest | 9000 | 1.250 | +0.250 ms | 0 |" in out
    assert "rest: TLS + keys add +0.250 ms" in out and out.rstrip().endswith(": met")


@pytest.mark.parametrize(
    ("secured_rps", "light_ms", "again_rps", "judged"),
    [
        (29.7, 1.25, 29.4, "met"),
        (29.7, 2.5, 29.4, "MISSED"),  # +1.5 ms per request
        (27.0, 1.25, 29.4, "MISSED"),  # 10 % slower, the noise 2 %
        (27.0, 1.25, 26.7, "not resolved"),  # 10 % slower, the control 11 %
    ],
)
def test_the_verdict(secured_rps: float, light_ms: float, again_rps: float, judged: str) -> None:
    said = verdict(_cells(secured_rps, light_ms, again_rps), "rest", [1])
    assert said.split("slower): ", 1)[1].startswith(judged), said


def test_the_raw_client_speaks_tls_and_sends_the_key(tmp_path: Path) -> None:
    authority = make_authority(tmp_path)
    server = authority.issue("server", server=True)
    ca = authority.cert_path
    keys = KeyFile()
    key = keys.add("bench", "infer")
    keys.write(tmp_path / "keys.json")
    with serving_stack(
        models=[], tls_cert=server.cert, tls_key=server.key, api_keys_file=tmp_path / "keys.json"
    ) as stack:

        async def statuses() -> tuple[int, int]:
            keyed = RawHttpClient(stack.http_url, ClientSecurity(ca, key))
            bare = RawHttpClient(stack.http_url, ClientSecurity(ca))
            try:
                return await keyed.request("GET", "/models"), await bare.request("GET", "/models")
            finally:
                await keyed.close()
                await bare.close()

        assert asyncio.run(statuses()) == (200, 401)
