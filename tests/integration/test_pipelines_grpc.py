"""Pipelines and streams over the own gRPC service: RunPipeline, ListPipelines and the
stream RPCs (Add and Remove need the admin credential; WatchStream streams events)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from care_serve.grpc_gen.care_serve.v1 import inference_pb2 as pb
from care_serve.grpc_gen.care_serve.v1 import inference_pb2_grpc as pb_grpc
from care_serve.server import BackgroundStack
from tests.helpers.scenes import SCENES, box_iou, write_video
from tests.helpers.stacks import ADMIN_TOKEN, serving_stack

PIPELINE = "shapes-detect-classify"
AUTH = (("authorization", f"Bearer {ADMIN_TOKEN}"),)
TRIO = SCENES[0]  # a red circle, a blue square and a green triangle on grey, 640x480
SHAPES = {o.label: o.box for o in TRIO.objects}  # label -> its box


def stub_of(stack: BackgroundStack) -> Iterator[pb_grpc.InferenceServiceStub]:
    with grpc.insecure_channel(stack.grpc_target) as channel:
        yield pb_grpc.InferenceServiceStub(channel)


@pytest.fixture(scope="module")
def stub(served: BackgroundStack) -> Iterator[pb_grpc.InferenceServiceStub]:
    yield from stub_of(served)


@pytest.fixture(scope="module")
def admin_stack() -> Iterator[BackgroundStack]:
    with serving_stack(admin_token=ADMIN_TOKEN) as stack:
        yield stack


@pytest.fixture(scope="module")
def admin_stub(admin_stack: BackgroundStack) -> Iterator[pb_grpc.InferenceServiceStub]:
    yield from stub_of(admin_stack)


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_video(tmp_path_factory.mktemp("video") / "shapes.mkv", [TRIO], hold=20)


def _code(call: Callable[[], object]) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    code: grpc.StatusCode = caught.value.code()
    return code


def test_run_pipeline_finds_and_classifies_each_shape(stub: pb_grpc.InferenceServiceStub) -> None:
    reply = stub.RunPipeline(pb.RunPipelineRequest(pipeline=PIPELINE, image=TRIO.png()), timeout=30)
    assert (reply.pipeline, reply.image_width, reply.image_height) == (PIPELINE, 640, 480)
    assert sorted(d.label for d in reply.detections) == sorted(SHAPES)
    for d in reply.detections:
        box = (d.box.x1, d.box.y1, d.box.x2, d.box.y2)
        assert box_iou(box, SHAPES[d.label]) > 0.7
        assert d.HasField("classification")
        assert d.classification.model == "shapes-classifier" and d.classification.version == 1
        assert len(d.classification.predictions) == 3  # the pipeline's top_k
        assert d.classification.predictions[0].label == d.label
    assert {"decode", "detect", "crop", "classify", "total"} <= set(reply.timings_ms)


def test_pipelines_are_listed(stub: pb_grpc.InferenceServiceStub) -> None:
    (info,) = [
        p for p in stub.ListPipelines(pb.ListPipelinesRequest()).pipelines if p.name == PIPELINE
    ]
    assert info.ready and info.problem == ""
    assert [(s.name, s.model, s.task, s.serving) for s in info.steps] == [
        ("detect", "shapes-detector", "detection", True),
        ("classify", "shapes-classifier", "classification", True),
    ]


def test_unknown_pipeline_and_bad_image_are_refused(stub: pb_grpc.InferenceServiceStub) -> None:
    with pytest.raises(grpc.RpcError) as unknown:
        stub.RunPipeline(pb.RunPipelineRequest(pipeline="nope", image=TRIO.png()))
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    assert PIPELINE in unknown.value.details()
    bad = pb.RunPipelineRequest(pipeline=PIPELINE, image=b"not an image")
    assert _code(lambda: stub.RunPipeline(bad)) == grpc.StatusCode.INVALID_ARGUMENT


def test_adding_and_removing_streams_needs_the_admin_credential(
    stub: pb_grpc.InferenceServiceStub, admin_stub: pb_grpc.InferenceServiceStub, video: Path
) -> None:
    add = pb.AddStreamRequest(
        spec_json=json.dumps({"name": "s", "source": str(video), "pipeline": PIPELINE})
    )
    # No admin credential exists on `served`: model control (and stream control) is off.
    assert _code(lambda: stub.AddStream(add)) == grpc.StatusCode.PERMISSION_DENIED
    assert _code(lambda: admin_stub.AddStream(add)) == grpc.StatusCode.UNAUTHENTICATED
    remove = pb.RemoveStreamRequest(name="s")
    assert _code(lambda: admin_stub.RemoveStream(remove)) == grpc.StatusCode.UNAUTHENTICATED
    assert admin_stub.ListStreams(pb.ListStreamsRequest()).streams == []


def test_a_bad_stream_spec_is_invalid_argument_naming_the_field(
    admin_stub: pb_grpc.InferenceServiceStub, video: Path
) -> None:
    spec = {"name": "s", "source": str(video), "pipeline": PIPELINE, "max_fps": 0}
    with pytest.raises(grpc.RpcError) as caught:
        admin_stub.AddStream(pb.AddStreamRequest(spec_json=json.dumps(spec)), metadata=AUTH)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "max_fps" in caught.value.details()
    unknown = pb.AddStreamRequest(spec_json=json.dumps({**spec, "max_fps": 5, "pipeline": "nope"}))
    assert _code(lambda: admin_stub.AddStream(unknown, metadata=AUTH)) == grpc.StatusCode.NOT_FOUND


def test_a_stream_is_added_listed_watched_and_removed(
    admin_stub: pb_grpc.InferenceServiceStub, video: Path
) -> None:
    spec = {
        "name": "shapes",
        "source": str(video),
        "pipeline": PIPELINE,
        "max_fps": 10,
        "loop": True,
    }
    added = admin_stub.AddStream(pb.AddStreamRequest(spec_json=json.dumps(spec)), metadata=AUTH)
    try:
        assert (added.name, added.pipeline, added.model, added.source) == (
            "shapes",
            PIPELINE,
            "",
            "shapes.mkv",  # no folders
        )
        assert json.loads(added.spec_json)["loop"] is True
        assert [s.name for s in admin_stub.ListStreams(pb.ListStreamsRequest()).streams] == [
            "shapes"
        ]
        events = admin_stub.WatchStream(pb.WatchStreamRequest(name="shapes"), timeout=30)
        frames = []
        for event in events:
            assert event.stream == "shapes" and event.latency_ms >= 0 and event.captured_at > 0
            result = json.loads(event.result_json)
            assert result["pipeline"] == PIPELINE
            labels = sorted(d["label"] for d in result["detections"])
            assert labels == sorted(SHAPES)
            for d in result["detections"]:
                assert d["classification"]["predictions"][0]["label"] == d["label"]
            frames.append(event.frame)
            if len(frames) == 25:  # past the 20 frames of the file: it looped
                break
        events.cancel()
        assert frames == sorted(frames) and len(set(frames)) == len(frames)
        status = admin_stub.GetStream(pb.GetStreamRequest(name="shapes"))
        assert status.state == "running" and status.frames_processed >= 25
        assert (status.width, status.height) == (640, 480) and status.HasField("lag_ms")
    finally:
        removed = admin_stub.RemoveStream(pb.RemoveStreamRequest(name="shapes"), metadata=AUTH)
    assert removed.state == "stopped"
    assert admin_stub.ListStreams(pb.ListStreamsRequest()).streams == []
    get = pb.GetStreamRequest(name="shapes")
    assert _code(lambda: admin_stub.GetStream(get)) == grpc.StatusCode.NOT_FOUND
    watch = pb.WatchStreamRequest(name="shapes")
    assert _code(lambda: list(admin_stub.WatchStream(watch))) == grpc.StatusCode.NOT_FOUND


def test_watching_ends_when_the_stream_is_removed(
    admin_stub: pb_grpc.InferenceServiceStub, video: Path
) -> None:
    spec = {"name": "ending", "source": str(video), "pipeline": PIPELINE, "loop": True}
    admin_stub.AddStream(pb.AddStreamRequest(spec_json=json.dumps(spec)), metadata=AUTH)
    events = admin_stub.WatchStream(pb.WatchStreamRequest(name="ending"), timeout=30)
    assert next(events).stream == "ending"
    admin_stub.RemoveStream(pb.RemoveStreamRequest(name="ending"), metadata=AUTH)
    rest = list(events)  # the call ends (OK) once the stream stops
    assert len(rest) <= 32
    assert events.code() == grpc.StatusCode.OK
