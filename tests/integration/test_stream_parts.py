"""The real parts the stream tests use, each on loopback: scenes the bundled models get right,
an RTSP camera, an MJPEG camera, a mosquitto broker and a webhook receiver."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.helpers.mjpeg import MjpegServer, scene_jpegs
from tests.helpers.mqtt import Mosquitto, MqttCollector
from tests.helpers.rtsp import RtspServer
from tests.helpers.scenes import SCENES, ShapeModels, match_scene, write_video
from tests.helpers.tls import make_authority
from tests.helpers.webhook import WebhookReceiver

# Faster probing: FFmpeg otherwise reads about 2.8 s of an RTSP stream before the first frame.
QUICK_PROBE = {"analyzeduration": "100000", "probesize": "32768"}
TIMEOUTS = (5.0, 3.0)  # av.open: open, then each read


@pytest.fixture(scope="module")
def models() -> Iterator[ShapeModels]:
    with ShapeModels() as loaded:
        yield loaded


def _decode(image: bytes) -> np.ndarray:
    import io

    with Image.open(io.BytesIO(image)) as opened:
        return np.asarray(opened.convert("RGB"))


def av_open(url: str, **kwargs: Any) -> Any:
    """``av.open`` with open and read timeouts."""
    import av

    return av.open(url, timeout=TIMEOUTS, **kwargs)


def _frames(container: Any, n: int) -> list[np.ndarray]:
    """The next ``n`` decoded frames of ``container`` as RGB arrays."""
    frames = []
    for frame in container.decode(video=0):
        frames.append(frame.to_ndarray(format="rgb24"))
        if len(frames) == n:
            break
    assert len(frames) == n, f"stream ended after {len(frames)} of {n} frames"
    return frames


def _check_sequence(frames: list[np.ndarray], hold: int, max_diff: float = 6.0) -> None:
    """The frames are the scenes in order from the first, each ``hold`` frames."""
    for n, frame in enumerate(frames):
        index, diff = match_scene(frame)
        assert index == (n // hold) % len(SCENES), f"frame {n} shows scene {index}"
        assert diff < max_diff, f"frame {n} differs from scene {index} by {diff:.1f}"


def test_models_get_the_scenes_right(models: ShapeModels, tmp_path: Path) -> None:
    for scene in SCENES:
        assert models.problems(scene.frame, scene) == []
        assert models.problems(_decode(scene.jpeg(quality=50)), scene) == []
    # And after H.264 and MJPEG round trips (the middle frame of each held scene).
    for codec, name in (("h264", "scenes.mkv"), ("mjpeg", "scenes.avi")):
        path = write_video(tmp_path / name, fps=10, hold=3, codec=codec)
        with av_open(str(path)) as container:
            frames = _frames(container, 3 * len(SCENES))
        _check_sequence(frames, hold=3)
        for index, scene in enumerate(SCENES):
            assert models.problems(frames[3 * index + 1], scene) == [], codec


@pytest.mark.parametrize(
    ("codec", "transport"), [("h264", "tcp"), ("h264", "udp"), ("mjpeg", "tcp")]
)
def test_rtsp_camera_serves_the_scenes_live(
    codec: str, transport: str, models: ShapeModels
) -> None:
    fps, hold = 20, 4
    with RtspServer(fps=fps, hold=hold, codec=codec) as camera:  # type: ignore[arg-type]
        assert camera.url.startswith("rtsp://127.0.0.1:")
        options = {"rtsp_transport": transport, **QUICK_PROBE}
        with av_open(camera.url, options=options) as container:
            stream = container.streams.video[0]
            assert (stream.width, stream.height) == (640, 480)
            first = _frames(container, 1)
            started = time.monotonic()
            rest = _frames(container, 2 * hold * len(SCENES) - 1)
            elapsed = time.monotonic() - started
        frames = first + rest
        _check_sequence(frames, hold)
        # Live-paced: the frames arrive at about fps, not as fast as they decode.
        assert elapsed > 0.7 * len(rest) / fps, elapsed
        for index, scene in enumerate(SCENES):
            assert models.problems(frames[index * hold + hold // 2], scene) == []


def test_rtsp_camera_restarts_on_the_same_port() -> None:
    with RtspServer(fps=20, hold=2) as camera:
        url = camera.url
        container = av_open(url, options={"rtsp_transport": "tcp", **QUICK_PROBE})
        try:
            _frames(container, 3)
            camera.stop()
            assert not camera.running
            started = time.monotonic()
            with pytest.raises(Exception):  # noqa: B017  # PyAV ends the stream or raises
                _frames(container, 1000)
            assert time.monotonic() - started < 5
        finally:
            container.close()
        with pytest.raises(Exception):  # noqa: B017  # nothing listens while it is down
            av_open(url, options={"rtsp_transport": "tcp"})
        camera.restart()
        assert camera.url == url and camera.running and camera.starts == 2
        with av_open(url, options={"rtsp_transport": "tcp", **QUICK_PROBE}) as container:
            _check_sequence(_frames(container, 4), hold=2)


def test_mjpeg_camera_serves_the_scenes() -> None:
    hold = 3
    with MjpegServer(scene_jpegs(hold=hold), fps=30) as camera:
        with av_open(camera.url, format="mpjpeg") as container:
            assert container.streams.video[0].codec_context.name == "mjpeg"
            _check_sequence(_frames(container, 2 * hold * len(SCENES)), hold)
        assert camera.connections == 1
        port = camera.port
        camera.restart()
        assert camera.port == port
        with av_open(camera.url, format="mpjpeg") as container:
            _check_sequence(_frames(container, 2), hold)
    # A camera that drops its clients after 5 frames: PyAV reads them, then raises (EIO).
    with MjpegServer(fps=30, max_frames=5) as camera, av_open(camera.url) as container:
        seen = 0
        with pytest.raises(OSError):
            for _ in container.decode(video=0):
                seen += 1
        assert seen == 5


def _publish(port: int, topic: str, payload: dict[str, Any], **auth: str) -> None:
    import paho.mqtt.client as mqtt

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    if auth:
        client.username_pw_set(auth["username"], auth["password"])
    client.connect("127.0.0.1", port, keepalive=10)
    client.loop_start()
    try:
        client.publish(topic, json.dumps(payload), qos=1).wait_for_publish(5)
    finally:
        client.disconnect()
        client.loop_stop()


def test_mosquitto_round_trip(tmp_path: Path) -> None:
    with Mosquitto() as broker, MqttCollector(broker.port, "cams/+/events") as inbox:
        _publish(broker.port, "cams/door/events", {"n": 1})
        _publish(broker.port, "cams/door/other", {"n": 2})
        _publish(broker.port, "cams/yard/events", {"n": 3})
        messages = inbox.wait_for(2, timeout_s=5)
        assert [(m.topic, m.json(), m.qos) for m in messages] == [
            ("cams/door/events", {"n": 1}, 1),
            ("cams/yard/events", {"n": 3}, 1),
        ]
        broker.restart()
        assert broker.running and broker.url == f"mqtt://127.0.0.1:{broker.port}"

    authority = make_authority(tmp_path)
    with Mosquitto(users={"cam": "s3cret"}, tls=authority.issue("broker", server=True)) as broker:
        with pytest.raises(RuntimeError, match="Not authorized"):
            MqttCollector(broker.port, timeout_s=5).start()
        with pytest.raises(RuntimeError, match="Not authorized"):
            MqttCollector(broker.port, username="cam", password="wrong", timeout_s=5).start()
        credentials = {"username": "cam", "password": "s3cret"}
        assert broker.tls_port is not None
        with (
            MqttCollector(broker.port, "#", **credentials) as plain,
            MqttCollector(broker.tls_port, "#", ca=authority.cert_path, **credentials) as tls,
        ):
            _publish(broker.port, "a/b", {"ok": True}, **credentials)
            assert plain.wait_for(1, timeout_s=5)[0].json() == {"ok": True}
            assert tls.wait_for(1, timeout_s=5)[0].topic == "a/b"


def _post(url: str, body: Any) -> int:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


def test_webhook_receiver_collects_and_fails_first() -> None:
    with WebhookReceiver(fail_first=2) as hook:
        assert hook.url.startswith("http://127.0.0.1:")
        assert [_post(hook.url, {"n": n}) for n in range(4)] == [500, 500, 200, 200]
        assert hook.wait_for(2, timeout_s=2) == [{"n": 2}, {"n": 3}]
        assert len(hook.attempts) == 4 and hook.attempts[0].headers["content-type"] == (
            "application/json"
        )
        with pytest.raises(AssertionError, match="2 of 3 webhook posts"):
            hook.wait_for(3, timeout_s=0.2)
