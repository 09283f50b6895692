"""One access-log line per request, request ids over REST and gRPC."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from care_serve.grpc_gen.care_serve.v1 import inference_pb2 as pb
from care_serve.grpc_gen.care_serve.v1 import inference_pb2_grpc as pb_grpc
from care_serve.observability.log_config import configure_logging
from care_serve.server import BackgroundStack
from care_serve.settings import Settings
from tests.helpers.packages import jpeg_bytes
from tests.helpers.stacks import ADMIN, ADMIN_TOKEN

ACCESS = "care_serve.access"
ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


@pytest.fixture
def running(store: Path, start_stack: Any) -> BackgroundStack:
    return start_stack(store)


def _access_records(caplog: pytest.LogCaptureFixture, expected: int = 0) -> list[logging.LogRecord]:
    """The access-log records so far, waiting (up to 5 s) until there are ``expected``.

    The line is written once the response has been sent, so the client may see the answer a
    moment before the server logs it.
    """
    deadline = time.monotonic() + 5
    while True:
        records = [r for r in caplog.records if r.name == ACCESS]
        if len(records) >= expected or time.monotonic() > deadline:
            return records
        time.sleep(0.01)


def test_rest_request_id_is_returned_and_logged(
    running: BackgroundStack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=ACCESS)
    url = running.http_url
    ok = httpx.post(f"{url}/classify", content=jpeg_bytes(), headers={"X-Request-Id": "abc-123"})
    assert ok.status_code == 200 and ok.headers["x-request-id"] == "abc-123"
    bad = httpx.post(f"{url}/classify", content=b"not an image", headers={"X-Request-Id": "r-2"})
    assert bad.status_code == 400 and bad.headers["x-request-id"] == "r-2"
    assert bad.json()["error"]["request_id"] == "r-2"
    records = {r.request_id: r for r in _access_records(caplog, 2)}  # type: ignore[attr-defined]
    line = records["abc-123"]
    assert (line.protocol, line.method, line.path, line.status) == (
        "rest",
        "POST",
        "/classify",
        200,
    )
    assert (line.model, line.version) == ("tiny", 1)
    assert isinstance(line.latency_ms, float) and line.latency_ms > 0
    assert "request_id=abc-123" in line.getMessage() and "status=200" in line.getMessage()
    assert records["r-2"].status == 400


@pytest.mark.parametrize("sent", [None, b"x" * 65, b"a b", b"<script>", "é".encode()])
def test_rest_generates_an_id_when_absent_or_unsafe(
    running: BackgroundStack, sent: bytes | None
) -> None:
    headers = {} if sent is None else {"X-Request-Id": sent}
    for response in (
        httpx.get(f"{running.http_url}/health/live", headers=headers),
        httpx.get(f"{running.http_url}/no/such/route", headers=headers),
    ):
        rid = response.headers["x-request-id"]
        assert ID_RE.match(rid) and rid.encode() != sent
    assert response.json()["error"]["request_id"] == rid


def test_grpc_request_id_in_metadata_and_log(
    running: BackgroundStack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=ACCESS)
    with grpc.insecure_channel(running.grpc_target) as channel:
        stub = pb_grpc.InferenceServiceStub(channel)
        request = pb.ClassifyRequest(image=jpeg_bytes())
        _, call = stub.Classify.with_call(request, metadata=(("x-request-id", "g-1"),))
        assert ("x-request-id", "g-1") in call.initial_metadata()
        with pytest.raises(grpc.RpcError) as info:
            stub.Classify(pb.ClassifyRequest(image=b"junk"), metadata=(("x-request-id", "g-2"),))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert ("x-request-id", "g-2") in info.value.trailing_metadata()
        _, call = stub.ListModels.with_call(pb.ListModelsRequest())
        generated = dict(call.initial_metadata())["x-request-id"]
        assert ID_RE.match(generated)
    records = {r.request_id: r for r in _access_records(caplog, 3)}  # type: ignore[attr-defined]
    line = records["g-1"]
    assert line.protocol == "grpc" and line.rpc == "/care_serve.v1.InferenceService/Classify"
    assert (line.status, line.model, line.version) == ("OK", "tiny", 1)
    assert records["g-2"].status == "INVALID_ARGUMENT"
    assert generated in records


def test_load_and_unload_lines_name_the_model_and_the_version_asked_for(
    store: Path, start_stack: Any, caplog: pytest.LogCaptureFixture
) -> None:
    stack = start_stack(store, admin_token=ADMIN_TOKEN)
    caplog.set_level(logging.INFO, logger=ACCESS)
    url = stack.http_url
    calls = [
        ("l-1", "load", {"version": 1}, 200),
        ("l-2", "unload", {"version": 1}, 200),
        ("l-3", "load", {}, 200),
        ("l-4", "unload", {}, 200),
        ("l-5", "load", {}, 404),  # a model the store does not have
    ]
    for rid, action, params, status in calls:
        name = "ghost" if rid == "l-5" else "tiny"
        response = httpx.post(
            f"{url}/models/{name}/{action}",
            params=params,
            headers={**ADMIN, "X-Request-Id": rid},
            timeout=60,
        )
        assert response.status_code == status, response.text
    with grpc.insecure_channel(stack.grpc_target) as channel:
        stub = pb_grpc.InferenceServiceStub(channel)
        stub.LoadModel(
            pb.LoadModelRequest(name="tiny", version=1),
            metadata=(("x-request-id", "g-1"), ("authorization", ADMIN["Authorization"])),
        )
    records = {r.request_id: r for r in _access_records(caplog, 6)}  # type: ignore[attr-defined]
    seen = {rid: (r.model, r.version) for rid, r in records.items()}  # type: ignore[attr-defined]
    assert seen == {
        "l-1": ("tiny", 1),
        "l-2": ("tiny", 1),
        "l-3": ("tiny", None),
        "l-4": ("tiny", None),
        "l-5": ("ghost", None),
        "g-1": ("tiny", 1),
    }
    assert "model=tiny version=1" in records["l-1"].getMessage()
    assert "model=tiny version=-" in records["l-3"].getMessage()


def test_json_log_format_gives_one_object_per_line() -> None:
    stream = _Stream()
    configure_logging(Settings(log_format="json"), stream=stream)
    try:
        logging.getLogger(ACCESS).info(
            "request", extra={"access": {"request_id": "j-1", "status": 200, "latency_ms": 1.5}}
        )
        logging.getLogger("care_serve").warning("plain line")
    finally:
        configure_logging(Settings(), stream=sys.stderr)
    lines = [json.loads(line) for line in stream.text.splitlines()]
    assert lines[0]["request_id"] == "j-1" and lines[0]["status"] == 200
    assert lines[0]["logger"] == ACCESS and lines[0]["level"] == "INFO"
    assert lines[1]["message"] == "plain line" and lines[1]["level"] == "WARNING"


class _Stream:
    def __init__(self) -> None:
        self.text = ""

    def write(self, text: str) -> None:
        self.text += text

    def flush(self) -> None:
        pass


def test_serve_prints_access_lines(store: Path) -> None:
    env = {**os.environ, "CARE_SERVE_LOG_FORMAT": "json"}
    command = [sys.executable, "-m", "care_serve", "serve", "--model-store", str(store)]
    proc = subprocess.Popen(
        [*command, "--http-port", "0", "--grpc-port", "0", "--warmup-runs", "0"],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    lines: list[str] = []
    ready = threading.Event()
    port: list[int] = []

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            found = re.search(r"REST http://127\.0\.0\.1:(\d+)", line)
            if found:
                port.append(int(found.group(1)))
                ready.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert ready.wait(60), "".join(lines)
        response = httpx.get(
            f"http://127.0.0.1:{port[0]}/health/live", headers={"X-Request-Id": "s-1"}
        )
        assert response.status_code == 200
    finally:
        proc.terminate()
        proc.wait(30)
        reader.join(10)
    access = [json.loads(x) for x in lines if '"care_serve.access"' in x]
    assert [a["request_id"] for a in access] == ["s-1"], "".join(lines)
    assert access[0]["path"] == "/health/live" and access[0]["status"] == 200
