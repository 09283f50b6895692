"""The watched store (model_control poll): versions and models follow the store on disk."""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import grpc
import httpx

from care_serve.grpc_gen.care_serve.v1 import inference_pb2 as pb
from care_serve.grpc_gen.care_serve.v1 import inference_pb2_grpc as pb_grpc
from care_serve.store import write_package
from tests.helpers.packages import LABELS, jpeg_bytes, make_manifest
from tests.helpers.waiting import wait_for

POLL_S = 0.1


def _serving(url: str, name: str = "tiny") -> list[int]:
    detail = httpx.get(f"{url}/models/{name}")
    return detail.json()["loaded_versions"] if detail.status_code == 200 else []


def _broken(store: Path, version: int) -> Path:
    bad = store.parent / f"broken-{version}.onnx"
    bad.write_bytes(b"this is not an onnx file")
    return write_package(store, make_manifest(version=version), bad, LABELS)


def test_versions_come_and_go_under_load_without_a_failed_request(
    store: Path, start_stack: Any, tiny_models: dict
) -> None:
    write_package(store, make_manifest(version=2), tiny_models[2][1], LABELS)
    (store / "store.json").write_text(
        json.dumps({"models": {"tiny": {"version_policy": {"all": True}}}})
    )
    stack = start_stack(store, model_control="poll", repository_poll_s=POLL_S, admin_token="s3cret")
    url = stack.http_url
    assert _serving(url) == [1, 2]
    stop = threading.Event()
    answers: list[tuple[str, int, int]] = []  # (who, status, version)
    data = jpeg_bytes(seed=2)

    stop_v1 = threading.Event()

    def rest(version: int | None) -> None:
        params = {"version": version} if version else {}
        until = stop_v1 if version == 1 else stop
        with httpx.Client(base_url=url, timeout=30) as client:
            while not until.is_set() and len(answers) < 20_000:
                r = client.post("/classify", content=data, params=params)
                got = r.json().get("version", 0) if r.status_code == 200 else 0
                answers.append((f"rest-{version}", r.status_code, got))

    def grpc_v2() -> None:
        with grpc.insecure_channel(stack.grpc_target) as channel:
            stub = pb_grpc.InferenceServiceStub(channel)
            while not stop.is_set() and len(answers) < 20_000:
                try:
                    reply = stub.Classify(pb.ClassifyRequest(image=data, version=2), timeout=30)
                    answers.append(("grpc-2", 200, reply.version))
                except grpc.RpcError as exc:
                    answers.append(("grpc-2", exc.code().value[0], 0))

    workers = [threading.Thread(target=rest, args=(None,)), threading.Thread(target=grpc_v2)]
    workers += [threading.Thread(target=rest, args=(v,)) for v in (1, 2)]
    for w in workers:
        w.start()
    try:
        time.sleep(0.5)
        write_package(store, make_manifest(version=3), tiny_models[1][1], LABELS)
        wait_for(lambda: _serving(url) == [1, 2, 3], "version 3 to serve")
        time.sleep(0.5)
        stop_v1.set()  # its clients move away before version 1 leaves the store
        workers[-2].join(30)
        shutil.rmtree(store / "tiny" / "1")
        wait_for(lambda: _serving(url) == [2, 3], "version 1 to leave")
        time.sleep(0.5)
    finally:
        stop.set()
        stop_v1.set()
        for w in workers:
            w.join(30)
    statuses = Counter(status for _, status, _ in answers)
    assert statuses and set(statuses) == {200}, statuses
    default_versions = [v for who, _, v in answers if who == "rest-None"]
    assert default_versions[0] == 2 and default_versions[-1] == 3
    assert {v for who, _, v in answers if who in ("rest-2", "grpc-2")} == {2}
    assert {v for who, _, v in answers if who == "rest-1"} == {1}
    assert sum(1 for who, _, _ in answers if who == "rest-1") > 5
    assert sum(1 for who, _, _ in answers if who == "grpc-2") > 5

    # the load/unload API is refused while the store drives what serves
    auth = {"Authorization": "Bearer s3cret"}
    refused = httpx.post(f"{url}/models/tiny/load", headers=auth)
    assert refused.status_code == 409 and "model_control poll" in refused.text
    assert httpx.post(f"{url}/models/tiny/unload", headers=auth).status_code == 409
    metrics = httpx.get(f"{url}/metrics").text
    assert 'care_model_ready{model="tiny",version="1"} 0.0' in metrics
    assert 'care_model_ready{model="tiny",version="3"} 1.0' in metrics

    # a new model appears and a removed one goes
    write_package(store, make_manifest(name="other"), tiny_models[2][1], LABELS)
    wait_for(lambda: _serving(url, "other") == [1], "the new model to serve")
    assert httpx.post(f"{url}/classify?model=other", content=data).status_code == 200
    shutil.rmtree(store / "other")
    wait_for(lambda: httpx.get(f"{url}/models/other").status_code == 404, "other to go")
    assert httpx.get(f"{url}/health/ready").status_code == 200


def test_a_broken_new_version_keeps_the_old_one_serving(
    store: Path, start_stack: Any, tiny_models: dict
) -> None:
    stack = start_stack(store, model_control="poll", repository_poll_s=POLL_S)
    url = stack.http_url
    watcher = stack.stack.watcher
    assert watcher is not None
    _broken(store, 2)

    def failed() -> bool:
        status = httpx.get(f"{url}/models/tiny").json()["version_status"]
        return any(s["version"] == 2 and s["state"] == "failed" for s in status)

    wait_for(failed, "version 2 to fail")
    detail = httpx.get(f"{url}/models/tiny").json()
    assert detail["loaded_versions"] == [1] and detail["state"] == "ready"
    assert detail["error_version"] == 2 and "cannot load" in detail["error"]
    assert str(store) not in json.dumps(detail)
    assert _classify_version(url) == 1
    # not retried while its files stay the same
    polls = watcher.polls
    wait_for(lambda: watcher.polls >= polls + 5, "five more polls")
    metrics = httpx.get(f"{url}/metrics").text
    assert 'care_model_load_failures_total{model="tiny",version="2"} 1.0' in metrics
    assert 'care_model_load_error{model="tiny",version="2"} 1.0' in metrics
    assert 'care_model_ready{model="tiny",version="1"} 1.0' in metrics
    assert httpx.get(f"{url}/health/ready").status_code == 200

    # fixed in place: loaded on the next poll, and the old version retires (latest 1)
    write_package(store, make_manifest(version=2), tiny_models[2][1], LABELS, overwrite=True)
    wait_for(lambda: _serving(url) == [2], "the fixed version to replace the old one")
    detail = httpx.get(f"{url}/models/tiny").json()
    assert detail["error"] is None and detail["error_version"] is None
    assert _classify_version(url) == 2
    metrics = httpx.get(f"{url}/metrics").text
    assert 'care_model_load_error{model="tiny",version="2"} 0.0' in metrics

    # a version changed in place reloads (same number, new files)
    write_package(store, make_manifest(version=2), tiny_models[1][1], LABELS, overwrite=True)
    before = stack.stack.manager.loaded()["tiny"]
    wait_for(lambda: stack.stack.manager.loaded()["tiny"] is not before, "the reload")
    assert _classify_version(url) == 2


def _classify_version(url: str) -> int:
    response = httpx.post(f"{url}/classify", content=jpeg_bytes(), timeout=30)
    assert response.status_code == 200, response.text
    return int(response.json()["version"])
