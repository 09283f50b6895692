"""Load errors: the last one is shown with its version, and no client sees a filesystem path."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import grpc
import httpx

from care_serve.grpc_gen.care_serve.v1 import inference_pb2 as pb
from care_serve.grpc_gen.care_serve.v1 import inference_pb2_grpc as pb_grpc
from care_serve.observability.redaction import redact_paths
from care_serve.store import write_package
from tests.helpers.packages import LABELS, make_manifest
from tests.helpers.stacks import ADMIN, ADMIN_TOKEN


def _no_paths(text: str, *roots: Path) -> None:
    for root in roots:
        assert str(root) not in text, text
        assert str(root.resolve()) not in text, text


def test_last_load_error_is_shown_with_its_version_and_cleared_by_a_good_load(
    store: Path, start_stack: Any, tmp_path: Path
) -> None:
    stack = start_stack(store, admin_token=ADMIN_TOKEN)
    url = stack.http_url
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"this is not an onnx file")
    write_package(store, make_manifest(version=2), broken, LABELS)

    failed = httpx.post(f"{url}/models/tiny/load", params={"version": 2}, headers=ADMIN, timeout=60)
    assert failed.status_code == 422, failed.text
    _no_paths(failed.text, tmp_path)
    detail = httpx.get(f"{url}/models/tiny").json()
    assert detail["error_version"] == 2 and detail["error"], detail
    assert "tiny/2" in detail["error"]
    _no_paths(json.dumps(detail), tmp_path)

    # a later failure of another kind (a manifest that does not parse) replaces it
    v3 = write_package(store, make_manifest(version=3), broken, LABELS)
    (v3 / "manifest.json").write_text("{not json")
    failed = httpx.post(f"{url}/models/tiny/load", params={"version": 3}, headers=ADMIN, timeout=60)
    assert failed.status_code == 422, failed.text
    assert "tiny/3" in failed.json()["error"]["message"]
    _no_paths(failed.text, tmp_path)
    detail = httpx.get(f"{url}/models/tiny").json()
    assert detail["error_version"] == 3 and "not readable JSON" in detail["error"], detail
    listing = httpx.get(f"{url}/models").text
    _no_paths(listing, tmp_path)
    with grpc.insecure_channel(stack.grpc_target) as channel:
        info = pb_grpc.InferenceServiceStub(channel).GetModel(pb.GetModelRequest(name="tiny"))
    assert "not readable JSON" in info.error
    _no_paths(info.error, tmp_path)

    # reloading another version keeps the error of version 3 (it is still broken) ...
    ok = httpx.post(f"{url}/models/tiny/load", params={"version": 1}, headers=ADMIN, timeout=60)
    assert ok.status_code == 200, ok.text
    detail = httpx.get(f"{url}/models/tiny").json()
    assert detail["error_version"] == 3, detail
    status = {s["version"]: s for s in detail["version_status"]}
    assert status[1]["state"] == "ready" and status[1]["error"] is None
    assert status[2]["state"] == "failed" and "tiny/2" in status[2]["error"]
    assert status[3]["state"] == "failed" and "not readable JSON" in status[3]["error"]
    # ... and a successful load of a version clears that version's error
    good = store / "tiny" / "1" / "model.onnx"
    write_package(store, make_manifest(version=3), good, LABELS, overwrite=True)
    ok = httpx.post(f"{url}/models/tiny/load", params={"version": 3}, headers=ADMIN, timeout=60)
    assert ok.status_code == 200, ok.text
    detail = httpx.get(f"{url}/models/tiny").json()
    assert detail["error_version"] == 2 and "tiny/2" in detail["error"], detail
    assert detail["loaded_versions"] == [1, 3] and detail["loaded_version"] == 3


def test_model_details_show_no_filesystem_paths(
    tmp_path: Path, start_stack: Any, tiny_models: dict
) -> None:
    ckpt = tmp_path / "checkpoints" / "care_s0.pth"
    card = {
        "source": str(ckpt),
        "training_command": f"care-serve train --out {tmp_path}/runs/a",
        "notes": {"dataset": f"{tmp_path}/data/shapes"},
    }
    store = tmp_path / "store"
    write_package(store, make_manifest(model_card=card), tiny_models[1][1], LABELS)
    stack = start_stack(store, admin_token=ADMIN_TOKEN)
    detail = httpx.get(f"{stack.http_url}/models/tiny").json()
    assert detail["state"] == "ready"
    assert detail["model_card"]["source"] == "<path>/care_s0.pth"
    assert detail["model_card"]["notes"]["dataset"] == "<path>/shapes"
    for text in (json.dumps(detail), httpx.get(f"{stack.http_url}/models").text):
        _no_paths(text, tmp_path)


def test_redact_paths_keeps_store_relative_names_and_hides_the_rest(tmp_path: Path) -> None:
    root = tmp_path / "store"
    text = (
        f"{root}/tiny/2/model.onnx: cannot load (see {tmp_path}/other/x.onnx and /etc/passwd); "
        "retry with POST /models/tiny/load"
    )
    out = redact_paths(text, root)
    assert "tiny/2/model.onnx: cannot load" in out
    assert str(tmp_path) not in out and "/etc/passwd" not in out
    assert "POST /models/tiny/load" in out


def test_loading_a_model_the_store_lacks_says_so_and_lists_the_models_it_has(
    store: Path, start_stack: Any, tiny_models: dict
) -> None:
    write_package(store, make_manifest(name="other"), tiny_models[1][1], LABELS)
    stack = start_stack(store, admin_token=ADMIN_TOKEN)
    for params in ({}, {"version": 2}):
        answer = httpx.post(
            f"{stack.http_url}/models/ghost/load", params=params, headers=ADMIN, timeout=60
        )
        assert answer.status_code == 404, answer.text
        message = answer.json()["error"]["message"]
        assert message == (
            "model 'ghost' is not in the model store (models in the store: other, tiny)"
        ), message
        _no_paths(answer.text, store)
