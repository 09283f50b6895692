"""SIGHUP re-reads the TLS files: new connections get the new certificate, none is dropped.

The server runs as its own process, started with a certificate of one CA; while
clients (REST and gRPC, trusting both CAs) call it in a loop, the files are
replaced by a certificate of a second CA and the process gets SIGHUP. Clients that
trust only the second CA then connect on both ports, and every call of the loop
was answered.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import httpx
import pytest

from care_serve.grpc_gen.care_serve.v1 import inference_pb2 as pb
from care_serve.grpc_gen.care_serve.v1 import inference_pb2_grpc as pb_grpc
from tests.helpers.paths import BUNDLED_STORE, ROOT
from tests.helpers.tls import make_authority

IMAGE = (ROOT / "examples" / "shape.png").read_bytes()


def _start(cert: Path, key: Path) -> tuple[subprocess.Popen[str], str, str]:
    cmd = [sys.executable, "-m", "care_serve", "serve", "--model-store", str(BUNDLED_STORE)]
    cmd += ["--models", "shapes-classifier", "--http-port", "0", "--grpc-port", "0"]
    cmd += ["--intra-op-threads", "1", "--tls-cert", str(cert), "--tls-key", str(key)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    for line in proc.stderr:
        found = re.search(r"REST (https://[\d.]+:\d+), gRPC ([\d.]+:\d+)", line)
        if found:
            threading.Thread(target=proc.stderr.read, daemon=True).start()
            return proc, found.group(1), found.group(2)
    proc.wait(10)
    raise AssertionError("the server never said it was ready")


def test_sighup_swaps_the_certificate_without_dropping_calls(tmp_path: Path) -> None:
    old_ca, new_ca = make_authority(tmp_path, "old"), make_authority(tmp_path, "new")
    old, new = old_ca.issue("server", server=True), new_ca.issue("server", server=True)
    cert, key = tmp_path / "server.pem", tmp_path / "server.key"
    cert.write_bytes(old.cert_pem)
    key.write_bytes(old.key_pem)
    both = tmp_path / "both-ca.pem"
    both.write_bytes(old_ca.cert_pem + new_ca.cert_pem)

    proc, url, target = _start(cert, key)
    stop = threading.Event()
    results: list[object] = []

    def rest_loop() -> None:
        with httpx.Client(verify=ssl.create_default_context(cafile=str(both)), timeout=30) as c:
            while not stop.is_set() and len(results) < 2000:
                try:
                    results.append(c.post(f"{url}/classify", content=IMAGE).status_code)
                except httpx.HTTPError as exc:
                    results.append(exc)

    def grpc_loop() -> None:
        creds = grpc.ssl_channel_credentials(both.read_bytes())
        with grpc.secure_channel(target, creds) as channel:
            stub = pb_grpc.InferenceServiceStub(channel)
            while not stop.is_set() and len(results) < 2000:
                try:
                    stub.Classify(pb.ClassifyRequest(image=IMAGE), timeout=30)
                    results.append(200)
                except grpc.RpcError as exc:
                    results.append(exc)

    workers = [threading.Thread(target=rest_loop), threading.Thread(target=grpc_loop)]
    try:
        for worker in workers:
            worker.start()
        time.sleep(0.5)
        new_only = ssl.create_default_context(cafile=str(new_ca.cert_path))
        with pytest.raises(httpx.HTTPError):  # the old certificate, before the reload
            httpx.get(f"{url}/health/live", verify=new_only, timeout=5)
        before = len(results)
        cert.write_bytes(new.cert_pem)
        key.write_bytes(new.key_pem)
        proc.send_signal(signal.SIGHUP)

        deadline = time.monotonic() + 15
        rest_ok = grpc_ok = False
        while time.monotonic() < deadline and not (rest_ok and grpc_ok):
            if not rest_ok:
                with contextlib.suppress(httpx.HTTPError):
                    rest_ok = httpx.get(f"{url}/health/live", verify=new_only, timeout=5).is_success
            if not grpc_ok:
                creds = grpc.ssl_channel_credentials(new_ca.cert_pem)
                with grpc.secure_channel(target, creds) as channel:
                    try:
                        pb_grpc.InferenceServiceStub(channel).ListModels(
                            pb.ListModelsRequest(), timeout=5
                        )
                        grpc_ok = True
                    except grpc.RpcError:
                        pass
            time.sleep(0.1)
        time.sleep(0.3)
    finally:
        stop.set()
        for worker in workers:
            worker.join(30)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert rest_ok and grpc_ok
    assert before > 0 and len(results) > before
    assert [r for r in results if r != 200] == []
