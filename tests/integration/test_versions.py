"""Versions side by side, version policies, stable defaults and gRPC model control."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from care_serve.grpc_gen.care_serve.v1 import inference_pb2 as pb
from care_serve.grpc_gen.care_serve.v1 import inference_pb2_grpc as pb_grpc
from care_serve.store import VersionPolicy, write_package
from tests.helpers.packages import LABELS, jpeg_bytes, make_manifest
from tests.helpers.stacks import ADMIN, ADMIN_TOKEN

AUTH = {"Authorization": "Bearer s3cret"}


def _store_json(store: Path, doc: dict[str, Any]) -> None:
    (store / "store.json").write_text(json.dumps(doc))


def _classify(url: str, **params: Any) -> httpx.Response:
    return httpx.post(f"{url}/classify", content=jpeg_bytes(seed=1), params=params, timeout=30)


@pytest.mark.parametrize(
    ("policy", "on_disk", "selected"),
    [
        ({"latest": 1}, [1, 2, 5], [5]),
        ({"latest": 2}, [5, 1, 2], [2, 5]),
        ({"latest": 9}, [1, 2], [1, 2]),
        ({"specific": [3, 1, 1]}, [1, 2, 3], [1, 3]),
        ({"specific": [4]}, [1, 2, 3], []),
        ({"all": True}, [3, 1, 2], [1, 2, 3]),
    ],
)
def test_version_policy_selects(policy: dict, on_disk: list[int], selected: list[int]) -> None:
    assert VersionPolicy.model_validate(policy).select(on_disk) == selected


def test_two_versions_serve_side_by_side_with_metrics_and_listing(
    store: Path, start_stack: Any, tiny_models: dict
) -> None:
    write_package(store, make_manifest(version=2), tiny_models[2][1], LABELS)
    write_package(store, make_manifest(version=3), tiny_models[1][1], LABELS)
    _store_json(store, {"models": {"tiny": {"version_policy": {"specific": [1, 2]}}}})
    stack = start_stack(store, admin_token="s3cret")
    url = stack.http_url
    assert "tiny/3" not in " ".join(stack.stack.startup_report)
    ones = _classify(url, version=1).json()
    twos = _classify(url, version=2).json()
    assert (ones["version"], twos["version"]) == (1, 2)
    assert ones["predictions"] != twos["predictions"]  # two different networks answered
    assert _classify(url).json()["version"] == 2  # no version: the highest serving
    missing = _classify(url, version=3)
    assert missing.status_code == 404
    assert "serving versions: 1, 2" in missing.json()["error"]["message"]
    with grpc.insecure_channel(stack.grpc_target) as channel:
        stub = pb_grpc.InferenceServiceStub(channel)
        image = jpeg_bytes(seed=1)
        assert stub.Classify(pb.ClassifyRequest(image=image, version=1)).version == 1
        assert stub.Classify(pb.ClassifyRequest(image=image)).version == 2

    detail = httpx.get(f"{url}/models/tiny").json()
    assert detail["loaded_versions"] == [1, 2] and detail["loaded_version"] == 2
    assert detail["version_policy"] == {"specific": [1, 2]}
    states = {
        s["version"]: (s["state"], s["default"], s["in_policy"]) for s in detail["version_status"]
    }
    assert states == {
        1: ("ready", False, True),
        2: ("ready", True, True),
        3: ("available", False, False),
    }
    assert httpx.get(f"{url}/v2/models/tiny/versions/1/ready").status_code == 200
    assert httpx.get(f"{url}/v2/models/tiny/versions/3/ready").status_code != 200
    assert httpx.get(f"{url}/v2/models/tiny").json()["versions"] == ["1", "2"]
    index = httpx.post(f"{url}/v2/repository/index", json={}, headers=AUTH).json()
    assert [(e["version"], e["state"]) for e in index] == [
        ("1", "READY"),
        ("2", "READY"),
        ("3", "UNAVAILABLE"),
    ]
    metrics = httpx.get(f"{url}/metrics").text
    for version in ("1", "2"):
        assert f'care_model_ready{{model="tiny",version="{version}"}} 1.0' in metrics
        success = f'key="",model="tiny",outcome="success",protocol="rest",version="{version}"'
        assert f"care_inference_requests_total{{{success}}}" in metrics

    # a default version in store.json takes effect with the next load, and is listed
    _store_json(
        store,
        {"models": {"tiny": {"version_policy": {"specific": [1, 2]}, "default_version": 1}}},
    )
    loaded = httpx.post(f"{url}/models/tiny/load", params={"version": 3}, headers=AUTH, timeout=60)
    assert loaded.status_code == 200, loaded.text
    assert loaded.json()["loaded_versions"] == [1, 2, 3]
    assert loaded.json()["default_version"] == 1
    assert loaded.json()["default_version_source"] == "store.json"
    assert _classify(url).json()["version"] == 1
    # unloading one version leaves the others; the default version gone is a clear 404
    one = httpx.post(f"{url}/models/tiny/unload", params={"version": 1}, headers=AUTH)
    assert one.status_code == 200 and one.json()["loaded_versions"] == [2, 3]
    gone = _classify(url)
    assert gone.status_code == 404
    assert "default version 1" in gone.json()["error"]["message"]
    assert _classify(url, version=3).json()["version"] == 3
    # loading without a version applies the policy: 1 and 2 serve, 3 (outside it) retires
    applied = httpx.post(f"{url}/models/tiny/load", headers=AUTH, timeout=60)
    assert applied.status_code == 200 and applied.json()["loaded_versions"] == [1, 2]
    metrics = httpx.get(f"{url}/metrics").text
    assert 'care_model_ready{model="tiny",version="3"} 0.0' in metrics


def test_defaults_never_change_because_another_model_was_loaded(
    store: Path, start_stack: Any, tiny_models: dict
) -> None:
    # "aaa" sorts before "tiny": the old rule (alphabetically first loaded) would switch to it
    write_package(store, make_manifest(name="aaa"), tiny_models[2][1], LABELS)
    stack = start_stack(store, models=["tiny"], admin_token=ADMIN_TOKEN)
    url = stack.http_url
    assert _classify(url).json()["model"] == "tiny"
    assert httpx.post(f"{url}/models/aaa/load", headers=ADMIN, timeout=60).status_code == 200
    assert _classify(url).json()["model"] == "tiny"
    listing = httpx.get(f"{url}/models").json()
    assert listing["defaults"]["classification"] == {
        "model": "tiny",
        "source": "first loaded",
        "serving": True,
    }
    by_name = {m["name"]: m for m in listing["models"]}
    assert by_name["tiny"]["default_for"] == ["classification"]
    assert by_name["aaa"]["default_for"] == []
    # reloading the default or loading another version of another model changes nothing
    assert httpx.post(f"{url}/models/tiny/load", headers=ADMIN, timeout=60).status_code == 200
    assert _classify(url).json()["model"] == "tiny"
    # the default unloaded: the alphabetically first model still serving takes over
    assert httpx.post(f"{url}/models/tiny/unload", headers=ADMIN).status_code == 200
    assert _classify(url).json()["model"] == "aaa"
    assert httpx.post(f"{url}/models/tiny/load", headers=ADMIN, timeout=60).status_code == 200
    assert _classify(url).json()["model"] == "aaa"

    # store.json names the default explicitly: it wins, and when it is not loaded the
    # error says so instead of answering with another model
    _store_json(store, {"defaults": {"classification": "tiny"}})
    assert httpx.post(f"{url}/models/tiny/load", headers=ADMIN, timeout=60).status_code == 200
    assert _classify(url).json()["model"] == "tiny"
    assert httpx.get(f"{url}/models").json()["defaults"]["classification"]["source"] == (
        "store.json"
    )
    assert httpx.post(f"{url}/models/tiny/unload", headers=ADMIN).status_code == 200
    refused = _classify(url)
    assert refused.status_code == 404
    assert "default classification model 'tiny' (set in store.json)" in refused.text
    assert _classify(url, model="aaa").status_code == 200


def test_an_invalid_store_file_is_reported_and_the_last_good_one_kept(
    store: Path, start_stack: Any
) -> None:
    _store_json(store, {"defaults": {"classification": "tiny"}})
    stack = start_stack(store, admin_token=ADMIN_TOKEN)
    _store_json(store, {"models": {"tiny": {"version_policy": {"newest": 1}}}})
    loaded = httpx.post(f"{stack.http_url}/models/tiny/load", headers=ADMIN, timeout=60)
    assert loaded.status_code == 200
    assert stack.stack.manager.config_error is not None
    assert "version_policy" in stack.stack.manager.config_error
    assert stack.stack.manager.config.defaults == {"classification": "tiny"}


def _control_stub(stack: Any) -> tuple[grpc.Channel, Any]:
    channel = grpc.insecure_channel(stack.grpc_target)
    return channel, pb_grpc.InferenceServiceStub(channel)


def test_grpc_model_control_needs_the_admin_token(
    store: Path, start_stack: Any, tiny_models: dict
) -> None:
    write_package(store, make_manifest(version=2), tiny_models[2][1], LABELS)
    stack = start_stack(store, admin_token="s3cret", models=["tiny:1"])
    channel, stub = _control_stub(stack)
    token = (("authorization", "Bearer s3cret"),)
    with channel:
        for metadata in ((), (("authorization", "Bearer wrong"),), (("authorization", "s3cret"),)):
            for call in (
                lambda m: stub.LoadModel(pb.LoadModelRequest(name="tiny", version=2), metadata=m),
                lambda m: stub.UnloadModel(pb.UnloadModelRequest(name="tiny"), metadata=m),
            ):
                with pytest.raises(grpc.RpcError) as info:
                    call(metadata)
                assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
                assert "admin token" in (info.value.details() or "")
        assert stub.GetModel(pb.GetModelRequest(name="tiny")).loaded_versions == [1]

        info = stub.LoadModel(pb.LoadModelRequest(name="tiny", version=2), metadata=token)
        assert list(info.loaded_versions) == [1, 2] and info.loaded_version == 2
        assert info.version_policy.latest == 1
        assert [(s.version, s.state, s.is_default) for s in info.version_status] == [
            (1, "ready", False),
            (2, "ready", True),
        ]
        assert stub.Classify(pb.ClassifyRequest(image=jpeg_bytes(), version=1)).version == 1
        info = stub.UnloadModel(pb.UnloadModelRequest(name="tiny", version=1), metadata=token)
        assert list(info.loaded_versions) == [2]
        listing = stub.ListModels(pb.ListModelsRequest())
        assert dict(listing.defaults) == {"classification": "tiny"}
        assert list(listing.models[0].default_for) == ["classification"]
        with pytest.raises(grpc.RpcError) as err:
            stub.UnloadModel(pb.UnloadModelRequest(name="tiny", version=7), metadata=token)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.RpcError) as err:
            stub.LoadModel(pb.LoadModelRequest(name="../etc"), metadata=token)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        info = stub.UnloadModel(pb.UnloadModelRequest(name="tiny"), metadata=token)
        assert info.state == "available" and list(info.loaded_versions) == []
