"""bench-load's v2 rows: tritonclient drives the real server, bounded in time."""

from __future__ import annotations

import asyncio

import pytest

from benchmarks.load import client as lb
from care_serve.server import BackgroundStack
from tests.helpers.stacks import BUNDLED_MODELS as MODELS


@pytest.mark.parametrize("protocol", lb.V2_PROTOCOLS)
def test_v2_levels_answer_every_request(served: BackgroundStack, protocol: str) -> None:
    assert lb.v2_available()
    jpeg = lb.make_jpeg(160, 120)
    result = asyncio.run(
        lb.run_level(
            protocol, 2, 0.5, jpeg, MODELS["classification"], served.http_url, served.grpc_target
        )
    )
    assert result.protocol == protocol and result.errors == 0
    assert len(result.latencies_ms) >= 2 and result.throughput > 0


def test_v2_levels_count_failures_as_errors(served: BackgroundStack) -> None:
    result = asyncio.run(
        lb.run_level("v2-grpc", 1, 0.2, b"not an image", MODELS["classification"],
                     served.http_url, served.grpc_target)
    )  # fmt: skip
    assert result.errors >= 1 and not result.latencies_ms
