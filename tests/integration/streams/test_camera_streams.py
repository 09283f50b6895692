"""Streams from real cameras on loopback to real sinks.

GStreamer's RTSP server and an MJPEG-over-HTTP server play the test scenes; events go
to Mosquitto, to a webhook receiver and over server-sent events.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from care_serve.server import BackgroundStack
from tests.helpers.mjpeg import MjpegServer, scene_jpegs
from tests.helpers.mqtt import Mosquitto, MqttCollector
from tests.helpers.rtsp import RtspServer
from tests.helpers.scenes import SCENES
from tests.helpers.stacks import ADMIN_TOKEN, serving_stack
from tests.helpers.streams import StreamClient, scene_of
from tests.helpers.tls import make_authority
from tests.helpers.waiting import wait_for
from tests.helpers.webhook import WebhookReceiver

PIPELINE = "shapes-detect-classify"
ALL_SCENES = {s.name for s in SCENES}


@pytest.fixture(scope="module")
def stack() -> Iterator[BackgroundStack]:
    with serving_stack(admin_token=ADMIN_TOKEN) as running:
        yield running


@pytest.fixture
def streams(stack: BackgroundStack) -> Iterator[StreamClient]:
    client = StreamClient(stack)
    yield client
    client.close()


@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_rtsp_frames_become_mqtt_events_naming_every_scene(
    streams: StreamClient, transport: str
) -> None:
    with (
        RtspServer(fps=10, hold=5) as camera,
        Mosquitto() as broker,
        MqttCollector(broker.port, "care-serve/+/events") as inbox,
    ):
        sink = {"type": "mqtt", "url": broker.url, "topic": "care-serve/{stream}/events", "qos": 1}
        answer = streams.add(
            name="gate",
            source=camera.url,
            pipeline=PIPELINE,
            max_fps=10,
            rtsp_transport=transport,
            sinks=[sink],
        )
        assert answer.status_code == 201, answer.text
        wait_for(lambda: len(inbox.messages) >= 20, "20 MQTT events", 40)
        events = [m.json() for m in inbox.messages]
        assert {m.topic for m in inbox.messages} == {"care-serve/gate/events"}
        assert {m.qos for m in inbox.messages} == {1}
        assert {scene_of(e["result"]) for e in events} >= ALL_SCENES
        status = streams.status("gate")
        assert status["state"] == "running"
        assert status["sinks"][0]["connected"] is True and status["sinks"][0]["failed"] == 0


def test_a_camera_that_dies_is_reconnected_and_its_events_resume(
    streams: StreamClient,
) -> None:
    with RtspServer(fps=10, hold=5) as camera:
        assert streams.add(
            name="porch", source=camera.url, pipeline=PIPELINE, reconnect_initial_s=0.2
        ).is_success
        streams.events("porch", 2)
        camera.stop()
        streams.wait_state("porch", "backing_off", timeout_s=20)
        before = streams.status("porch")["frames_processed"]
        camera.restart()
        status = streams.wait_state("porch", "running", timeout_s=30)
        assert status["reconnects"] >= 1
        events = streams.events("porch", 3)
        assert all(e["frame"] > 0 for e in events)
        assert streams.status("porch")["frames_processed"] > before


def test_mjpeg_frames_reach_a_webhook_that_fails_at_first_and_sse(
    streams: StreamClient,
) -> None:
    # Each scene for half a second: 40 events (4 s) see every one of them twice.
    frames = scene_jpegs(hold=5)
    with MjpegServer(frames, fps=10) as camera, WebhookReceiver(fail_first=1) as hook:
        sink = {"type": "webhook", "url": hook.url, "retries": 3}
        answer = streams.add(
            name="shop", source=camera.url, pipeline=PIPELINE, max_fps=10, sinks=[sink]
        )
        assert answer.status_code == 201, answer.text
        sse = streams.events("shop", 40, timeout_s=40)
        bodies = hook.wait_for(20, timeout_s=30)
        assert len(hook.attempts) > len(bodies)  # the first POST failed and was retried
        assert ALL_SCENES - {"empty"} <= {scene_of(e["result"]) for e in sse + bodies}
        assert streams.status("shop")["sinks"][0]["failed"] == 0


def test_mqtt_over_tls_with_a_password(streams: StreamClient, tmp_path: Path) -> None:
    authority = make_authority(tmp_path)
    users = {"cam": "s3cret"}
    with (
        MjpegServer(fps=10) as camera,
        Mosquitto(users=users, tls=authority.issue("127.0.0.1", server=True)) as broker,
    ):
        assert broker.tls_port is not None
        with MqttCollector(
            broker.tls_port, "#", ca=authority.cert_path, username="cam", password="s3cret"
        ) as inbox:
            sink = {
                "type": "mqtt",
                "url": f"mqtts://127.0.0.1:{broker.tls_port}",
                "topic": "cams/{stream}",
                "username": "cam",
                "password": "s3cret",
                "ca_file": str(authority.cert_path),
            }
            assert streams.add(
                name="tls", source=camera.url, pipeline=PIPELINE, sinks=[sink]
            ).is_success
            (message, *_) = inbox.wait_for(2, timeout_s=30)
            assert message.topic == "cams/tls" and message.json()["stream"] == "tls"
            assert "s3cret" not in streams.http.get("/streams/tls").text
