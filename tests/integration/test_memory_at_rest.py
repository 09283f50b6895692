"""Memory back to rest: after large images over REST and gRPC, RSS returns near its level.

The server runs as its own process (its RSS is read from /proc). It answers small
requests to reach its resting level, then large ones: 36-megapixel PNG and JPEG images
through classification and segmentation and a decompression bomb (refused) on both
transports, and a body over the byte limit over REST (refused). Within 10 s of the last
one, RSS must be within 10 % of the resting level.

Not covered: a gRPC message over the receive limit is refused by gRPC's core, which
keeps about its size resident afterwards (measured; see docs/performance.md).
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
from PIL import Image

from care_serve.grpc_gen.care_serve.v1 import inference_pb2 as pb
from care_serve.grpc_gen.care_serve.v1 import inference_pb2_grpc as pb_grpc
from tests.helpers.loopback import HOST, free_port
from tests.helpers.paths import BUNDLED_STORE
from tests.helpers.scenes import SCENES
from tests.helpers.waiting import wait_for

SIDE = 6000  # 36 megapixels, under the default 40 MP limit


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/statm", encoding="ascii") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _image(fmt: str, side: int = SIDE) -> bytes:
    ramp = np.linspace(0, 255, side, dtype=np.float32)
    pixels = np.stack(
        [np.add.outer(ramp, ramp) / 2, np.tile(ramp, (side, 1)), np.tile(ramp[:, None], side)],
        axis=-1,
    ).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, fmt, **({"quality": 85} if fmt == "JPEG" else {}))
    return out.getvalue()


def _bomb() -> bytes:
    out = io.BytesIO()
    Image.new("L", (12_000, 12_000)).save(out, "PNG")  # 144 MP, a few hundred kB
    return out.getvalue()


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[subprocess.Popen[bytes], str, str]]:
    http_port, grpc_port = free_port(), free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "care_serve", "serve", "--model-store", str(BUNDLED_STORE),
         "--models", "shapes-classifier,shapes-segmenter", "--host", HOST,
         "--http-port", str(http_port), "--grpc-port", str(grpc_port), "--log-level", "warning"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://{HOST}:{http_port}"

    def ready() -> bool:
        try:
            return httpx.get(f"{url}/health/ready", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(ready, "the server to be ready", 120)
        yield proc, url, f"{HOST}:{grpc_port}"
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_rss_returns_within_10_percent_after_large_images(
    server: tuple[subprocess.Popen[bytes], str, str], tmp_path: Path
) -> None:
    proc, url, target = server
    small = SCENES[0].jpeg()
    large = {"png": _image("PNG"), "jpeg": _image("JPEG")}
    too_large = b"\xff\xd8" + os.urandom(25 * 1024 * 1024)
    with (
        httpx.Client(base_url=url, timeout=120) as http,
        grpc.insecure_channel(
            target, options=[("grpc.max_send_message_length", 128 * 2**20)]
        ) as channel,
    ):
        stub = pb_grpc.InferenceServiceStub(channel)

        def both(image: bytes) -> list[int]:
            codes = []
            for route in ("/classify", "/segment"):
                answer = http.post(route, content=image, headers={"Content-Type": "image/png"})
                codes.append(answer.status_code)
            for call, request in (
                (stub.Classify, pb.ClassifyRequest(image=image)),
                (stub.Segment, pb.SegmentRequest(image=image)),
            ):
                try:
                    call(request, timeout=120)
                    codes.append(200)
                except grpc.RpcError as exc:
                    codes.append(int(exc.code().value[0]))
            return codes

        for _ in range(3):
            assert both(small) == [200, 200, 200, 200]
        time.sleep(4)  # the janitor's interval, twice
        resting = _rss_mb(proc.pid)
        for image in large.values():
            assert both(image) == [200, 200, 200, 200]
        assert 200 not in both(_bomb())
        answer = http.post("/classify", content=too_large)
        assert answer.status_code == 413
        # Refused by the data plane once gRPC has read all of it, then by gRPC's own limit.
        for image, code in (
            (too_large, grpc.StatusCode.INVALID_ARGUMENT),
            (too_large, grpc.StatusCode.INVALID_ARGUMENT),
            (too_large * 3, grpc.StatusCode.RESOURCE_EXHAUSTED),
        ):
            with pytest.raises(grpc.RpcError) as refused:
                stub.Classify(pb.ClassifyRequest(image=image), timeout=120)
            assert refused.value.code() == code
        peak = _rss_mb(proc.pid)
        end = time.monotonic() + 10
        while time.monotonic() < end and _rss_mb(proc.pid) > 1.1 * resting:
            time.sleep(0.25)
        after = _rss_mb(proc.pid)
    assert after <= 1.1 * resting, (
        f"RSS {after:.0f} MB 10 s after the large images; {resting:.0f} MB at rest before, "
        f"{peak:.0f} MB right after them"
    )
