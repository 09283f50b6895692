"""One test per defect of the hardening issue that lives in the request path and lifecycle.

Malformed files on every endpoint, large images in a pool of their own, deadlines
in every stage, admission counted from arrival (REST answers 503), capped masks,
reduced-scale decoding, strict readiness with fallback, reloads that keep
readiness, and the drain on shutdown (in-process and with a real SIGTERM).
"""

from __future__ import annotations

import base64
import io
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
from PIL import Image

from care_serve.grpc_gen.care_serve.v1 import inference_pb2 as pb
from care_serve.grpc_gen.care_serve.v1 import inference_pb2_grpc as pb_grpc
from care_serve.imaging.decode import DECODE_SLACK, decode_image
from care_serve.imaging.preprocess import preprocess_image
from care_serve.server import BackgroundStack
from care_serve.store import BatchingConfig, read_manifest, write_package
from tests.helpers.numerics import rel_error
from tests.helpers.packages import LABELS, jpeg_bytes, make_manifest, png_bytes
from tests.helpers.paths import BUNDLED_STORE, MALFORMED
from tests.helpers.stacks import ADMIN, ADMIN_TOKEN, serving_stack

BUNDLED = BUNDLED_STORE
MALFORMED_FILES = sorted(MALFORMED.iterdir())
ENDPOINTS = {"classify": "Classify", "detect": "Detect", "segment": "Segment"}


def _hold(executor: Any, workers: int = 1) -> threading.Event:
    """Occupy ``workers`` threads of ``executor`` until the returned event is set."""
    gate = threading.Event()
    for _ in range(workers):
        executor.submit(gate.wait, 20)
    return gate


def _big_png(width: int, height: int) -> bytes:
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x % 256, y % 256, (x + y) % 256], axis=-1).astype(np.uint8)
    return png_bytes(Image.fromarray(rgb))


# -- the bundled store: malformed files on every endpoint, capped masks ---------------------
@pytest.fixture(scope="module")
def bundled() -> Iterator[BackgroundStack]:
    with serving_stack(BUNDLED, warmup_runs=0, max_output_pixels=60_000) as stack:
        yield stack


@pytest.mark.parametrize("path", MALFORMED_FILES, ids=lambda p: p.name)
def test_malformed_files_are_400_on_every_endpoint_and_transport(
    bundled: BackgroundStack, path: Path
) -> None:
    data = path.read_bytes()
    with httpx.Client(base_url=bundled.http_url, timeout=30) as client:
        for route in ENDPOINTS:
            response = client.post(f"/{route}", content=data)
            assert response.status_code == 400, (route, response.text)
            assert response.json()["error"]["type"] == "InvalidInput"
        metrics = client.get("/metrics").text
    with grpc.insecure_channel(bundled.grpc_target) as channel:
        stub = pb_grpc.InferenceServiceStub(channel)
        for rpc, request in (
            ("Classify", pb.ClassifyRequest(image=data)),
            ("Detect", pb.DetectRequest(image=data)),
            ("Segment", pb.SegmentRequest(image=data)),
        ):
            with pytest.raises(grpc.RpcError) as info:
                getattr(stub, rpc)(request, timeout=30)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, rpc
    assert 'outcome="error"' not in metrics
    assert 'outcome="invalid_input"' in metrics


def test_masks_and_overlays_are_capped_at_max_output_pixels(bundled: BackgroundStack) -> None:
    data = _big_png(600, 400)  # 240,000 pixels, four times the cap
    with httpx.Client(base_url=bundled.http_url, timeout=60) as client:
        body = client.post("/segment", content=data).json()
        overlay = client.post("/segment?format=overlay", content=data)
    assert (body["image_width"], body["image_height"]) == (600, 400)
    w, h = body["mask_width"], body["mask_height"]
    assert w * h <= 60_000 and w * h > 0.95 * 60_000
    assert abs(w / h - 1.5) < 0.02
    mask = Image.open(io.BytesIO(base64.b64decode(body["mask_png"])))
    assert mask.size == (w, h)
    overlay_w, overlay_h = Image.open(io.BytesIO(overlay.content)).size
    assert overlay_w == w and h < overlay_h < h + 200  # the capped image, a legend below
    with httpx.Client(base_url=bundled.http_url, timeout=60) as client:
        body = client.post("/segment", content=_big_png(200, 150)).json()
        boxes = client.post("/detect?format=overlay&score_threshold=0", content=data)
    assert "mask_width" in body, body
    assert (body["mask_width"], body["mask_height"]) == (200, 150)
    assert Image.open(io.BytesIO(boxes.content)).size[0] == w  # detection overlays too


# -- a tiny store: pools, deadlines, admission ----------------------------------------------
def test_large_images_never_hold_the_workers_small_images_need(
    store: Path, start_stack: Any
) -> None:
    stack = start_stack(store, large_image_pixels=100 * 100)
    gate = _hold(stack.stack.pools.large)
    answers: list[httpx.Response] = []
    try:
        with httpx.Client(base_url=stack.http_url, timeout=30) as client:
            big = threading.Thread(
                target=lambda: answers.append(
                    client.post(
                        "/classify",
                        content=_big_png(300, 300),
                        headers={"X-Request-Timeout-Ms": "1500"},
                    )
                )
            )
            big.start()
            time.sleep(0.2)
            started = time.monotonic()
            small = client.post("/classify", content=jpeg_bytes(64, 64))
            assert small.status_code == 200, small.text
            assert time.monotonic() - started < 1.0
            big.join(10)
    finally:
        gate.set()
    # the large pool was held: the big request met its deadline in the decode stage
    assert answers[0].status_code == 504, answers[0].text
    assert "decoding" in answers[0].json()["error"]["message"]


def test_a_jpeg_decoded_at_reduced_scale_is_routed_by_what_it_holds(
    store: Path, start_stack: Any
) -> None:
    """A baseline JPEG over large_image_pixels but decoded at 1/8 holds only the reduced
    image: it goes to the small pool. A progressive one holds every coefficient: large."""
    stack = start_stack(store, large_image_pixels=200 * 200)
    picture = Image.fromarray(
        np.random.default_rng(5).integers(0, 256, (1200, 1600, 3), dtype=np.uint8)
    )
    baseline, progressive = io.BytesIO(), io.BytesIO()
    picture.save(baseline, "JPEG", quality=85)
    picture.save(progressive, "JPEG", quality=85, progressive=True)
    gate = _hold(stack.stack.pools.large)
    try:
        with httpx.Client(base_url=stack.http_url, timeout=30) as client:
            fast = client.post("/classify", content=baseline.getvalue())
            assert fast.status_code == 200, fast.text  # answered while the large pool is held
            held = client.post(
                "/classify",
                content=progressive.getvalue(),
                headers={"X-Request-Timeout-Ms": "500"},
            )
    finally:
        gate.set()
    assert held.status_code == 504, held.text  # waited for the (held) large pool
    assert "decoding" in held.json()["error"]["message"]


def test_deadline_is_enforced_while_a_request_waits_for_decode(
    store: Path, start_stack: Any
) -> None:
    stack = start_stack(store)
    gate = _hold(stack.stack.pools.small, workers=2)
    try:
        with httpx.Client(base_url=stack.http_url, timeout=30) as client:
            started = time.monotonic()
            late = client.post(
                "/classify", content=jpeg_bytes(), headers={"X-Request-Timeout-Ms": "300"}
            )
            assert late.status_code == 504, late.text
            assert time.monotonic() - started < 2.0
        with grpc.insecure_channel(stack.grpc_target) as channel:
            stub = pb_grpc.InferenceServiceStub(channel)
            with pytest.raises(grpc.RpcError) as info:
                stub.Classify(pb.ClassifyRequest(image=jpeg_bytes()), timeout=0.3)
            assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    finally:
        gate.set()


def test_rest_answers_503_when_requests_pile_up_before_decode(
    store: Path, start_stack: Any, tiny_models: dict
) -> None:
    manifest = make_manifest(
        version=2, batching=BatchingConfig(max_batch_size=1, max_queue_delay_ms=0, max_queue_size=2)
    )
    write_package(store, manifest, tiny_models[2][1], LABELS)
    stack = start_stack(store)
    gate = _hold(stack.stack.pools.small, workers=2)
    results: list[int] = []
    with httpx.Client(base_url=stack.http_url, timeout=30) as client:
        threads = [
            threading.Thread(
                target=lambda: results.append(
                    client.post("/classify", content=jpeg_bytes()).status_code
                )
            )
            for _ in range(3)  # the admission limit: max_queue_size 2 + max_batch_size 1
        ]
        try:
            for t in threads:
                t.start()
            deadline = time.monotonic() + 5
            while stack.stack.data_plane.inflight < 3 and time.monotonic() < deadline:
                time.sleep(0.01)
            busy = client.post("/classify", content=jpeg_bytes())
        finally:
            gate.set()
        for t in threads:
            t.join(10)
        metrics = client.get("/metrics").text
    assert busy.status_code == 503, busy.text
    assert busy.headers["retry-after"] == "1"
    assert "in flight" in busy.json()["error"]["message"]
    assert results == [200, 200, 200]
    assert 'outcome="overloaded",protocol="rest",version="2"' in metrics


# -- reduced-scale decoding ------------------------------------------------------------------
def test_large_jpegs_are_decoded_at_reduced_scale_with_the_same_input() -> None:
    manifest = make_manifest(input={"height": 224, "width": 224})
    rng = np.random.default_rng(3)
    base = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    picture = Image.fromarray(base).resize((4000, 3000), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    picture.save(buf, "JPEG", quality=92)
    data = buf.getvalue()
    limits = {"max_bytes": 10**8, "max_pixels": 10**8}
    full = decode_image(data, **limits)
    needed = (341, 256)  # the short-side resize of a 4:3 image for a 224 crop
    reduced = decode_image(data, reduce_to=needed, **limits)
    assert (reduced.width, reduced.height) == (4000, 3000)  # the size the client sent
    assert reduced.image.size == (500, 375)  # 1/8 scale, still >= what the resize needs
    a, _ = preprocess_image(full.image, manifest)
    b, _ = preprocess_image(reduced.image, manifest)
    assert rel_error(b, a) < 0.02
    # never below DECODE_SLACK of what was asked for: a 1/8 decode would be too small here
    assert decode_image(data, reduce_to=(600, 450), **limits).image.size == (1000, 750)
    # a 1080p frame for a 512 letterbox (512x288): 1/4 scale (480x270) is within the slack
    frame = io.BytesIO()
    picture.resize((1920, 1080)).save(frame, "JPEG", quality=90)
    assert DECODE_SLACK * 512 <= 480
    assert decode_image(frame.getvalue(), reduce_to=(512, 288), **limits).image.size == (480, 270)
    assert decode_image(frame.getvalue(), reduce_to=(600, 340), **limits).image.size == (960, 540)
    # an ordinary photo keeps a decode at least the size its resize needs (no slack at 1/2)
    photo = io.BytesIO()
    picture.resize((640, 480)).save(photo, "JPEG", quality=90)
    assert decode_image(photo.getvalue(), reduce_to=(341, 256), **limits).image.size == (640, 480)


# -- readiness -------------------------------------------------------------------------------
def _break(package_dir: Path) -> None:
    manifest = read_manifest(package_dir)
    (package_dir / manifest.weights).write_bytes(b"not an onnx file")


def test_newest_version_failing_at_start_falls_back_and_readiness_is_strict(
    store: Path, start_stack: Any, tiny_models: dict
) -> None:
    write_package(store, make_manifest(version=2), tiny_models[2][1], LABELS)
    _break(store / "tiny" / "2")
    stack = start_stack(store)
    report = " ".join(stack.stack.startup_report)
    assert "FALLBACK" in report and "tiny/1" in report and "tiny/2" in report
    with httpx.Client(base_url=stack.http_url, timeout=30) as client:
        assert client.get("/health/ready").status_code == 200
        assert client.post("/classify", content=jpeg_bytes()).json()["version"] == 1
        detail = client.get("/models/tiny").json()
        assert detail["error_version"] == 2 and "model.onnx" in detail["error"]
        assert str(store) not in detail["error"]  # no filesystem path reaches the client

    write_package(store, make_manifest(name="broken"), tiny_models[1][1], LABELS)
    _break(store / "broken" / "1")
    strict = start_stack(store)
    with httpx.Client(base_url=strict.http_url, timeout=30) as client:
        ready = client.get("/health/ready")
        assert ready.status_code == 503
        assert ready.json()["not_serving"] == ["broken"]
        assert client.post("/classify?model=tiny", content=jpeg_bytes()).status_code == 200
    lenient = start_stack(store, strict_readiness=False)
    with httpx.Client(base_url=lenient.http_url, timeout=30) as client:
        assert client.get("/health/ready").status_code == 200


def test_a_reload_never_flips_readiness(store: Path, start_stack: Any, tiny_models: dict) -> None:
    write_package(store, make_manifest(version=2), tiny_models[2][1], LABELS)
    stack = start_stack(store, models=["tiny:1"], warmup_runs=8, admin_token=ADMIN_TOKEN)
    seen: list[int] = []
    done = threading.Event()

    def poll() -> None:
        with httpx.Client(base_url=stack.http_url, timeout=10) as client:
            while not done.is_set() and len(seen) < 5000:
                seen.append(client.get("/health/ready").status_code)

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        with httpx.Client(base_url=stack.http_url, timeout=60) as client:
            for version in (2, 1, 2):
                loaded = client.post(f"/models/tiny/load?version={version}", headers=ADMIN)
                assert loaded.status_code == 200, loaded.text
    finally:
        done.set()
        poller.join(10)
    assert len(seen) > 10
    assert set(seen) == {200}


# -- the drain -------------------------------------------------------------------------------
def test_shutdown_answers_what_did_not_finish_with_503_within_the_grace_period(
    store: Path, start_stack: Any
) -> None:
    stack = start_stack(store, graceful_shutdown_s=1.0)
    gate = _hold(stack.stack.manager.loaded()["tiny"].executor)
    answers: list[httpx.Response] = []

    def send() -> None:
        with httpx.Client(timeout=30) as client:
            answers.append(client.post(f"{stack.http_url}/classify", content=jpeg_bytes()))

    threads = [threading.Thread(target=send) for _ in range(4)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 5
    while stack.stack.data_plane.inflight < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        started = time.monotonic()
        stack.run(stack.stack.stop())
        elapsed = time.monotonic() - started
    finally:
        gate.set()
    for t in threads:
        t.join(10)
    assert 0.9 < elapsed < 2.0, elapsed
    assert [r.status_code for r in answers] == [503] * 4
    assert {r.json()["error"]["type"] for r in answers} == {"ShuttingDown"}
    assert all(r.headers["retry-after"] == "1" for r in answers)


def test_sigterm_drains_and_exits_within_the_grace_period(store: Path) -> None:
    """16 slow requests in flight (big images queue in the one-thread large pool), 1 s grace."""
    env = {**os.environ, "CARE_SERVE_GRACEFUL_SHUTDOWN_S": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "care_serve", "serve", "--model-store", str(store)]
    cmd += ["--http-port", "0", "--grpc-port", "0", "--intra-op-threads", "1"]
    cmd += ["--large-image-pixels", "10000"]
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
    answers: list[httpx.Response | Exception] = []
    big = _big_png(6000, 6000)  # about 0.5 s of decoding each, one at a time

    def send(url: str) -> None:
        try:
            answers.append(httpx.post(f"{url}/classify", content=big, timeout=30))
        except httpx.HTTPError as exc:
            answers.append(exc)

    try:
        url = None
        assert proc.stderr is not None
        for line in proc.stderr:
            found = re.search(r"REST (http://[\d.]+:\d+)", line)
            if found:
                url = found.group(1)
                break
        assert url, "the server never said it was ready"
        threading.Thread(target=proc.stderr.read, daemon=True).start()
        assert httpx.post(f"{url}/classify", content=jpeg_bytes(), timeout=30).status_code == 200
        senders = [threading.Thread(target=send, args=(url,)) for _ in range(16)]
        for t in senders:
            t.start()
        time.sleep(1.0)  # every request sent and admitted; the large pool has seconds of work
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=15)
        elapsed = time.monotonic() - started
        for t in senders:
            t.join(15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == 0
    assert elapsed < 2.5, elapsed
    statuses = [a.status_code if isinstance(a, httpx.Response) else repr(a) for a in answers]
    assert len(statuses) == 16
    assert 503 in statuses, statuses  # the work did not fit in 1 s: the rest was answered
    assert set(statuses) <= {200, 503}, statuses
    assert all(
        a.json()["error"]["type"] == "ShuttingDown"
        for a in answers
        if isinstance(a, httpx.Response) and a.status_code == 503
    )
