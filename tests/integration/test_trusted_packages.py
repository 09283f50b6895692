"""Packages the server can trust: file digests and signatures are checked before a version loads.

A refused version is a 422 naming the file or the reason, and the version that was
serving keeps serving, through the load API and in the watched store.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from care_serve.grpc_gen.care_serve.v1 import inference_pb2 as pb
from care_serve.grpc_gen.care_serve.v1 import inference_pb2_grpc as pb_grpc
from care_serve.store import write_package
from care_serve.store.signing import generate_key, load_private_key, sign_package
from tests.helpers.packages import LABELS, jpeg_bytes, make_manifest
from tests.helpers.waiting import wait_for

TOKEN = "s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
POLL_S = 0.1


def _tampered(store: Path, tiny_models: dict, version: int) -> None:
    """tiny/<version> whose weights were replaced after it was written (by other weights
    that would load fine), moved into the store whole so no scan sees it half made."""
    staging = store.parent / f"staging-{version}"
    package = write_package(staging, make_manifest(version=version), tiny_models[2][1], LABELS)
    (package / "model.onnx").write_bytes(tiny_models[1][1].read_bytes())
    package.rename(store / "tiny" / str(version))


def _classify_version(url: str) -> int:
    response = httpx.post(f"{url}/classify", content=jpeg_bytes(), timeout=30)
    assert response.status_code == 200, response.text
    return int(response.json()["version"])


def _load(url: str, version: int) -> httpx.Response:
    return httpx.post(f"{url}/models/tiny/load", params={"version": version}, headers=AUTH,
                      timeout=60)  # fmt: skip


def test_tampered_weights_are_refused_by_the_load_api_and_the_old_version_serves(
    store: Path, start_stack: Any, tiny_models: dict
) -> None:
    stack = start_stack(store, admin_token=TOKEN)
    url = stack.http_url
    _tampered(store, tiny_models, 2)
    refused = _load(url, 2)
    assert refused.status_code == 422, refused.text
    message = refused.json()["error"]["message"]
    assert message.startswith("tiny/2/model.onnx: sha256 "), message
    assert "does not match" in message and "write the package again" in message
    assert str(store) not in refused.text
    with grpc.insecure_channel(stack.grpc_target) as channel:
        stub = pb_grpc.InferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.LoadModel(pb.LoadModelRequest(name="tiny", version=2),
                           metadata=(("authorization", f"Bearer {TOKEN}"),))  # fmt: skip
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "tiny/2/model.onnx: sha256" in (info.value.details() or "")
    detail = httpx.get(f"{url}/models/tiny").json()
    assert detail["loaded_versions"] == [1] and detail["error_version"] == 2
    assert _classify_version(url) == 1


def test_tampered_weights_in_the_watched_store_keep_the_old_version_serving(
    store: Path, start_stack: Any, tiny_models: dict
) -> None:
    stack = start_stack(store, model_control="poll", repository_poll_s=POLL_S)
    url = stack.http_url
    _tampered(store, tiny_models, 2)

    def failed() -> bool:
        status = httpx.get(f"{url}/models/tiny").json()["version_status"]
        return any(s["version"] == 2 and s["state"] == "failed" for s in status)

    wait_for(failed, "version 2 to be refused")
    detail = httpx.get(f"{url}/models/tiny").json()
    assert detail["loaded_versions"] == [1] and detail["state"] == "ready"
    assert detail["error"].startswith("tiny/2/model.onnx: sha256 "), detail["error"]
    assert _classify_version(url) == 1
    # written again, whole: it verifies, loads and replaces version 1 (latest 1)
    write_package(store, make_manifest(version=2), tiny_models[2][1], LABELS, overwrite=True)
    wait_for(lambda: httpx.get(f"{url}/models/tiny").json()["loaded_versions"] == [2], "v2")
    assert _classify_version(url) == 2


def test_required_signatures_refuse_unsigned_and_badly_signed_versions(
    store: Path, start_stack: Any, tiny_models: dict, tmp_path: Path
) -> None:
    private, public, kid = generate_key(tmp_path / "package-key")
    other, _, _ = generate_key(tmp_path / "other-key")
    key = load_private_key(private)
    sign_package(store / "tiny" / "1", key)
    stack = start_stack(
        store, admin_token=TOKEN, package_public_key=public, require_signed_packages=True
    )
    url = stack.http_url
    assert httpx.get(f"{url}/models/tiny").json()["loaded_versions"] == [1]

    v2 = write_package(store, make_manifest(version=2), tiny_models[2][1], LABELS)
    refused = _load(url, 2)
    assert refused.status_code == 422, refused.text
    message = refused.json()["error"]["message"]
    assert message.startswith("tiny/2: no signature: require_signed_packages is on"), message
    assert kid in message

    sign_package(v2, load_private_key(other))
    refused = _load(url, 2)
    assert refused.status_code == 422, refused.text
    message = refused.json()["error"]["message"]
    assert message.startswith(f"tiny/2: bad signature: manifest.sig does not verify with key {kid}")
    assert _classify_version(url) == 1

    sign_package(v2, key)
    document = json.loads((v2 / "manifest.json").read_text())
    document["batching"]["max_batch_size"] = 2  # edited after signing
    (v2 / "manifest.json").write_text(json.dumps(document, indent=2) + "\n")
    assert _load(url, 2).status_code == 422

    write_package(store, make_manifest(version=2), tiny_models[2][1], LABELS, overwrite=True)
    sign_package(v2, key)
    loaded = _load(url, 2)
    assert loaded.status_code == 200, loaded.text
    assert httpx.get(f"{url}/models/tiny").json()["loaded_versions"] == [1, 2]


def test_an_old_package_without_digests_loads_with_one_warning(
    store: Path, start_stack: Any, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    path = store / "tiny" / "1" / "manifest.json"
    document = json.loads(path.read_text())
    del document["files"]
    path.write_text(json.dumps(document, indent=2) + "\n")
    caplog.set_level(logging.WARNING, logger="care_serve.serving.loader")
    _, public, _ = generate_key(tmp_path / "k")  # a key, but signatures are not required
    stack = start_stack(store, admin_token=TOKEN, package_public_key=public)
    url = stack.http_url
    assert _classify_version(url) == 1
    assert _load(url, 1).status_code == 200  # reloaded: no second warning
    warnings = [r.getMessage() for r in caplog.records if "unverified" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith("tiny/1 is unverified: its manifest.json lists no sha256")
    assert "--add-digests" in warnings[0]
