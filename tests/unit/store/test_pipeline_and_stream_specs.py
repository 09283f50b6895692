"""What store.json (and POST /streams) accept as pipelines and streams, and what they refuse."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from care_serve.errors import ModelStoreError
from care_serve.store.config import read_store_config
from care_serve.store.pipelines import PipelineSpec
from care_serve.store.streams import StreamSpec, redact_url, source_kind

DETECT = {"name": "detect", "model": "det"}
CLASSIFY = {"name": "classify", "model": "cls", "crops": {"padding": 0.2, "max_boxes": 4}}


def test_a_detector_then_a_classifier_of_its_crops() -> None:
    spec = PipelineSpec.model_validate({"steps": [DETECT, CLASSIFY]})
    assert spec.models() == ["det", "cls"]
    assert spec.classifier is not None and spec.classifier.crops is not None
    assert spec.classifier.crops.max_boxes == 4
    assert PipelineSpec.model_validate({"steps": [DETECT]}).classifier is None


@pytest.mark.parametrize(
    ("steps", "needle"),
    [
        ([], "at least 1"),
        ([DETECT, CLASSIFY, {**CLASSIFY, "name": "again"}], "at most 2"),
        ([{**DETECT, "crops": {}}], "whole image"),
        ([DETECT, {"name": "classify", "model": "cls"}], "needs 'crops'"),
        ([DETECT, {**CLASSIFY, "name": "detect"}], "name them apart"),
        ([{**DETECT, "name": "total"}, CLASSIFY], "not one of"),
        ([{**DETECT, "model": "../x"}], "model"),
        ([DETECT, {**CLASSIFY, "crops": {"padding": 2}}], "padding"),
    ],
)
def test_bad_pipelines_are_refused_with_a_reason(steps: list[Any], needle: str) -> None:
    with pytest.raises(ValidationError) as caught:
        PipelineSpec.model_validate({"steps": steps})
    assert needle in str(caught.value)


def test_store_json_names_the_bad_pipeline(tmp_path: Path) -> None:
    (tmp_path / "store.json").write_text(
        json.dumps({"pipelines": {"p": {"steps": [{**DETECT, "crops": {}}]}}})
    )
    with pytest.raises(ModelStoreError, match=r"pipelines\.p"):
        read_store_config(tmp_path)


def test_the_bundled_store_declares_its_pipeline() -> None:
    config = read_store_config(Path(__file__).resolve().parents[3] / "model_store")
    spec = config.pipelines["shapes-detect-classify"]
    assert spec.models() == ["shapes-detector", "shapes-classifier"]


STREAM = {"name": "cam1", "source": "rtsp://127.0.0.1:8554/cam", "pipeline": "p"}


@pytest.mark.parametrize(
    ("source", "kind"),
    [
        ("rtsp://10.0.0.5/s", "rtsp"),
        ("rtsps://cam.local/s", "rtsp"),
        ("http://cam.local/mjpeg", "http"),
        ("/videos/door.mp4", "file"),
        ("file:///videos/door.mp4", "file"),
        ("/dev/video0", "v4l2"),
    ],
)
def test_source_kinds(source: str, kind: str) -> None:
    assert source_kind(source) == kind


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"pipeline": None}, "exactly one of 'pipeline' or 'model'"),
        ({"model": "m"}, "exactly one of 'pipeline' or 'model'"),
        ({"loop": True}, "'loop' is for file sources"),
        ({"source": "ftp://x/y"}, "is not rtsp://"),
        ({"name": "a/b"}, "name"),
        ({"max_fps": 0}, "max_fps"),
        ({"sinks": [{"type": "mqtt", "url": "mqtt://h", "topic": "a/#"}]}, "wildcards"),
        ({"sinks": [{"type": "mqtt", "url": "mqtt://h", "topic": "{camera}"}]}, "{stream}"),
        ({"sinks": [{"type": "mqtt", "url": "http://h"}]}, "mqtt://"),
        ({"sinks": [{"type": "webhook", "url": "mqtt://h"}]}, "http(s)://"),
        ({"sinks": [{"type": "email", "url": "x"}]}, "mqtt"),
        ({"parameters": {"top_k": 1}}, "'parameters' go with 'model'"),
    ],
)
def test_bad_streams_are_refused_with_a_reason(change: dict[str, Any], needle: str) -> None:
    with pytest.raises(ValidationError) as caught:
        StreamSpec.model_validate({**STREAM, **change})
    assert needle in str(caught.value)


def test_what_clients_see_of_a_stream_holds_no_secret() -> None:
    spec = StreamSpec.model_validate(
        {
            **STREAM,
            "source": "rtsp://admin:hunter2@10.0.0.5:554/s",
            "sinks": [
                {"type": "mqtt", "url": "mqtt://u:pw@broker", "username": "u", "password": "pw2"},
                {"type": "webhook", "url": "https://h/x", "headers": {"X-Token": "t0k3n"}},
            ],
        }
    )
    shown = json.dumps(spec.public())
    for secret in ("hunter2", "pw2", '"pw@', "t0k3n"):
        assert secret not in shown
    assert spec.public()["source"] == "rtsp://admin:***@10.0.0.5:554/s"
    assert redact_url("rtsp://10.0.0.5/s") == "rtsp://10.0.0.5/s"


def test_stream_names_are_unique_in_store_json(tmp_path: Path) -> None:
    (tmp_path / "store.json").write_text(json.dumps({"streams": [STREAM, STREAM]}))
    with pytest.raises(ModelStoreError, match="unique"):
        read_store_config(tmp_path)
