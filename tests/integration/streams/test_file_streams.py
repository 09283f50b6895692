"""Streams over REST with file sources: events, state, preview, limits and the admin rule."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from care_serve.errors import ConfigurationError
from care_serve.server import BackgroundStack
from tests.helpers.scenes import SCENES, write_video
from tests.helpers.stacks import ADMIN_TOKEN, serving_stack
from tests.helpers.streams import StreamClient, scene_of
from tests.helpers.waiting import wait_for

PIPELINE = "shapes-detect-classify"


@pytest.fixture(scope="module")
def stack() -> Iterator[BackgroundStack]:
    with serving_stack(admin_token=ADMIN_TOKEN, max_streams=3) as running:
        yield running


@pytest.fixture
def streams(stack: BackgroundStack) -> Iterator[StreamClient]:
    client = StreamClient(stack)
    yield client
    client.close()


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Each scene for 1 s at 10 fps (H.264)."""
    return write_video(tmp_path_factory.mktemp("video") / "scenes.mp4", fps=10, hold=10)


def test_a_looped_file_gives_events_with_each_scene_detected_and_classified(
    streams: StreamClient, video: Path
) -> None:
    answer = streams.add(name="door", source=str(video), pipeline=PIPELINE, max_fps=5, loop=True)
    assert answer.status_code == 201, answer.text
    assert answer.json()["state"] in ("connecting", "running")
    events = streams.events("door", 24, timeout_s=40)
    seen = {scene_of(e["result"]) for e in events}
    assert {s.name for s in SCENES} <= seen, seen
    first = events[0]
    assert set(first) == {"stream", "frame", "source_time", "captured_at", "latency_ms", "result"}
    assert first["stream"] == "door" and first["result"]["pipeline"] == PIPELINE
    numbers = [e["frame"] for e in events]
    assert numbers == sorted(numbers)
    status = streams.status("door")
    assert status["state"] == "running" and status["reconnects"] == 0
    assert status["frames_processed"] >= 24 and status["frames_skipped"] > 0  # 10 fps, cap 5
    assert 0 < status["fps_out"] <= 6.5
    assert (status["width"], status["height"]) == (640, 480)


def test_the_newest_frame_and_the_preview_show_the_boxes(
    streams: StreamClient, video: Path
) -> None:
    assert streams.add(name="yard", source=str(video), pipeline=PIPELINE, loop=True).is_success
    wait_for(lambda: streams.status("yard")["frames_processed"] > 0, "a processed frame", 30)
    frame = streams.http.get("/streams/yard/frame.jpg")
    assert frame.status_code == 200 and frame.headers["content-type"] == "image/jpeg"
    assert frame.content[:2] == b"\xff\xd8"
    with streams.http.stream("GET", "/streams/yard/preview.mjpeg") as preview:
        assert preview.headers["content-type"].startswith("multipart/x-mixed-replace")
        chunk = b""
        for part in preview.iter_bytes():
            chunk += part
            if chunk.count(b"\xff\xd9") >= 2:
                break
    assert chunk.startswith(b"--care-serve-frame\r\nContent-Type: image/jpeg")


def test_a_model_stream_sends_what_its_endpoint_answers(streams: StreamClient, video: Path) -> None:
    assert streams.add(
        name="cls", source=str(video), model="shapes-classifier", parameters={"top_k": 2}
    ).is_success
    (event,) = streams.events("cls", 1)
    single = SCENES[2]
    answer = streams.http.post(
        "/classify?top_k=2", content=single.png(), headers={"Content-Type": "image/png"}
    ).json()
    assert set(event["result"]) == set(answer)
    assert len(event["result"]["predictions"]) == 2


def test_a_file_without_loop_ends(streams: StreamClient, video: Path) -> None:
    assert streams.add(name="once", source=str(video), pipeline=PIPELINE, max_fps=20).is_success
    status = streams.wait_state("once", "ended", timeout_s=30)
    assert "loop" in status["error"]
    assert status["frames_processed"] > 0


def test_a_missing_source_backs_off_and_the_server_stays_ready(
    stack: BackgroundStack, streams: StreamClient, tmp_path: Path
) -> None:
    missing = tmp_path / "gone.mp4"
    answer = streams.add(
        name="gone", source=str(missing), pipeline=PIPELINE, reconnect_initial_s=0.1
    )
    assert answer.status_code == 201
    wait_for(lambda: streams.status("gone")["reconnects"] >= 2, "two reconnects", 30)
    status = streams.status("gone")
    assert status["state"] in ("backing_off", "connecting")
    assert "No such file" in (status["error"] or ""), status["error"]
    assert str(tmp_path) not in str(status)  # the folder is not shown to clients
    assert httpx.get(f"{stack.http_url}/health/ready").status_code == 200


def test_a_slow_pipeline_drops_frames_instead_of_lagging(
    streams: StreamClient, tmp_path: Path
) -> None:
    fast = write_video(tmp_path / "fast.mp4", fps=30, hold=15)
    assert streams.add(
        name="fast", source=str(fast), pipeline=PIPELINE, max_fps=30, loop=True
    ).is_success
    events = streams.events("fast", 15, timeout_s=40)
    status = streams.status("fast")
    # The pipeline takes longer than a frame: frames are dropped, the lag stays bounded
    # (a frame waits at most for the one being processed).
    assert status["frames_dropped"] > 0
    assert max(e["latency_ms"] for e in events[5:]) < 3000


def test_requests_keep_being_answered_while_streams_run(streams: StreamClient, video: Path) -> None:
    for name in ("a", "b"):
        assert streams.add(name=name, source=str(video), pipeline=PIPELINE, loop=True).is_success
    streams.events("a", 2)
    image = SCENES[0].jpeg()
    for _ in range(10):
        answer = streams.http.post(
            "/classify", content=image, headers={"Content-Type": "image/jpeg"}
        )
        assert answer.status_code == 200, answer.text


def test_adding_and_removing_need_the_admin_credential(streams: StreamClient, video: Path) -> None:
    spec = {"name": "x", "source": str(video), "pipeline": PIPELINE}
    assert streams.http.post("/streams", json=spec).status_code == 401
    assert streams.add(**spec).status_code == 201
    assert streams.http.delete("/streams/x").status_code == 401
    assert streams.http.get("/streams/x").status_code == 200  # reading needs no admin
    removed = streams.remove("x")
    assert removed.status_code == 200 and removed.json()["state"] == "stopped"
    assert streams.http.get("/streams/x").status_code == 404


@pytest.mark.parametrize(
    ("spec", "status", "needle"),
    [
        ({"pipeline": "nope"}, 404, "no pipeline named 'nope'"),
        ({"model": "nope", "pipeline": None}, 404, "no model named 'nope'"),
        ({"source": "ftp://x/y"}, 400, "is not rtsp://"),
        ({"max_fps": 1000}, 400, "max_fps"),
        ({"sinks": [{"type": "mqtt", "url": "mqtt://127.0.0.1", "topic": "a/#"}]}, 400, "wild"),
    ],
)
def test_bad_streams_are_refused_saying_why(
    streams: StreamClient, video: Path, spec: dict[str, object], status: int, needle: str
) -> None:
    body = {"name": "bad", "source": str(video), "pipeline": PIPELINE, **spec}
    answer = streams.add(**{k: v for k, v in body.items() if v is not None})
    assert answer.status_code == status, answer.text
    assert needle in answer.text


def test_names_are_unique_and_the_count_is_limited(streams: StreamClient, video: Path) -> None:
    for name in ("one", "two", "three"):
        assert streams.add(name=name, source=str(video), pipeline=PIPELINE).status_code == 201
    twice = streams.add(name="one", source=str(video), pipeline=PIPELINE)
    assert twice.status_code == 409 and "exists" in twice.text
    over = streams.add(name="four", source=str(video), pipeline=PIPELINE)
    assert over.status_code == 409 and "--max-streams" in over.text


def test_streams_of_a_streams_file_start_with_the_server(video: Path, tmp_path: Path) -> None:
    listing = tmp_path / "streams.json"
    spec = {"name": "boot", "source": str(video), "pipeline": PIPELINE, "loop": True}
    listing.write_text(json.dumps({"streams": [spec]}))
    with serving_stack(streams=listing) as running:
        client = StreamClient(running)
        try:
            (event,) = client.events("boot", 1)
            assert event["stream"] == "boot"
        finally:
            client.close()


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("{not json", "not readable JSON"),
        ('{"streams": [{"name": "x", "source": "/v.mp4"}]}', "exactly one of"),
        ('{"cameras": []}', "cameras"),
    ],
)
def test_a_bad_streams_file_stops_the_start_saying_why(
    tmp_path: Path, content: str, needle: str
) -> None:
    listing = tmp_path / "streams.json"
    listing.write_text(content)
    with pytest.raises(ConfigurationError) as caught, serving_stack(streams=listing):
        pass
    assert needle in str(caught.value) and "--streams" in str(caught.value)
