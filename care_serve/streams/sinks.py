"""Where a stream's events go: an MQTT broker (paho-mqtt) or a webhook (HTTP POST).

A sink never blocks the stream: ``offer`` hands the event over and returns. The
MQTT client runs paho's own network thread, reconnects by itself and (QoS 1 and
2) queues a bounded number of messages while the broker is away. The webhook
sink posts from a bounded queue in a task of its own, retrying each event with
a doubling pause; when the queue is full the oldest event is dropped. Events a
sink could not deliver or dropped are counted (``care_stream_sink_failures``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx
from pydantic import BaseModel

from care_serve.observability.metrics import ServingMetrics
from care_serve.store.streams import MqttSinkSpec, SinkSpec, WebhookSinkSpec, redact_url

__all__ = ["MqttSink", "Sink", "SinkStatus", "WebhookSink", "make_sink"]

log = logging.getLogger(__name__)
MQTT_QUEUE = 1000  # messages paho keeps while the broker is away (QoS 1 and 2)


class SinkStatus(BaseModel):
    """A sink as ``GET /streams/{name}`` shows it."""

    type: str
    url: str
    connected: bool
    delivered: int
    failed: int
    last_error: str | None = None


class Sink(Protocol):
    """What a stream needs of a sink."""

    async def start(self) -> None: ...

    def offer(self, payload: bytes, *, pipeline: str) -> None: ...

    async def close(self) -> None: ...

    def status(self) -> SinkStatus: ...


def make_sink(spec: SinkSpec, stream: str, metrics: ServingMetrics) -> Sink:
    """The sink ``spec`` describes, for stream ``stream``."""
    if isinstance(spec, MqttSinkSpec):
        return MqttSink(spec, stream, metrics)
    return WebhookSink(spec, stream, metrics)


class MqttSink:
    """Publishes each event to ``topic`` (``{stream}``, ``{pipeline}`` filled in)."""

    def __init__(self, spec: MqttSinkSpec, stream: str, metrics: ServingMetrics) -> None:
        self.spec = spec
        self.stream = stream
        self._failures = metrics.stream_sink_failures.labels(stream, "mqtt")
        self.delivered = 0
        self.failed = 0
        self.connected = False
        self.last_error: str | None = None
        self._client: Any = None

    async def start(self) -> None:
        import paho.mqtt.client as mqtt

        spec = self.spec
        parts = urlsplit(spec.url)
        tls = parts.scheme == "mqtts"
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=spec.client_id or f"care-serve-{self.stream}",
        )
        if spec.username is not None:
            password = spec.password.get_secret_value() if spec.password is not None else None
            client.username_pw_set(spec.username, password)
        if tls:
            client.tls_set_context(ssl.create_default_context(cafile=spec.ca_file))
        client.max_queued_messages_set(MQTT_QUEUE)
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        self._client = client
        client.connect_async(parts.hostname or "", parts.port or (8883 if tls else 1883), 30)
        client.loop_start()

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        self.connected = not reason.is_failure
        if reason.is_failure:
            self.last_error = f"the broker refused the connection: {reason}"
            log.warning("stream %s: MQTT %s: %s", self.stream, self.spec.url, self.last_error)
        else:
            self.last_error = None

    def _on_disconnect(
        self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        self.connected = False
        if reason.is_failure:
            self.last_error = f"disconnected: {reason}"

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        self.delivered += 1

    def offer(self, payload: bytes, *, pipeline: str) -> None:
        import paho.mqtt.client as mqtt

        topic = self.spec.topic.format(stream=self.stream, pipeline=pipeline)
        info = self._client.publish(topic, payload, qos=self.spec.qos, retain=self.spec.retain)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            self.failed += 1
            self._failures.inc()
            self.last_error = mqtt.error_string(info.rc)

    async def close(self) -> None:
        client = self._client
        if client is None:
            return
        self._client = None
        client.disconnect()
        await asyncio.to_thread(client.loop_stop)

    def status(self) -> SinkStatus:
        return SinkStatus(
            type="mqtt",
            url=redact_url(self.spec.url),
            connected=self.connected,
            delivered=self.delivered,
            failed=self.failed,
            last_error=self.last_error,
        )


class WebhookSink:
    """POSTs each event (``application/json``) to ``url``, retrying, from a bounded queue."""

    def __init__(self, spec: WebhookSinkSpec, stream: str, metrics: ServingMetrics) -> None:
        self.spec = spec
        self.stream = stream
        self._failures = metrics.stream_sink_failures.labels(stream, "webhook")
        self.delivered = 0
        self.failed = 0
        self.last_error: str | None = None
        self.connected = False
        self._queue: asyncio.Queue[bytes] = asyncio.Queue(spec.queue_size)
        self._task: asyncio.Task[None] | None = None
        self._client: httpx.AsyncClient | None = None

    async def start(self) -> None:
        self._client = httpx.AsyncClient(timeout=self.spec.timeout_s, follow_redirects=False)
        self._task = asyncio.create_task(self._send_all(), name=f"webhook-{self.stream}")

    def offer(self, payload: bytes, *, pipeline: str) -> None:
        if self._queue.full():
            self._queue.get_nowait()
            self._fail("the queue was full; the oldest event was dropped")
        self._queue.put_nowait(payload)

    def _fail(self, reason: str) -> None:
        self.failed += 1
        self._failures.inc()
        self.last_error = reason

    async def _send_all(self) -> None:
        while True:
            payload = await self._queue.get()
            await self._send(payload)

    async def _send(self, payload: bytes) -> None:
        assert self._client is not None
        headers = {**self.spec.headers, "Content-Type": "application/json"}
        pause = 0.25
        reason = ""
        for attempt in range(self.spec.retries + 1):
            if attempt:
                await asyncio.sleep(pause)
                pause = min(pause * 2.0, 10.0)
            try:
                response = await self._client.post(self.spec.url, content=payload, headers=headers)
            except httpx.HTTPError as exc:
                self.connected = False
                reason = f"{type(exc).__name__}: {exc}".rstrip(": ")
                continue
            self.connected = True
            if response.status_code < 300:
                self.delivered += 1
                self.last_error = None
                return
            reason = f"HTTP {response.status_code}"
            if 400 <= response.status_code < 500 and response.status_code not in (408, 429):
                break  # the receiver refuses this event: retrying will not help
        self._fail(f"not delivered after {attempt + 1} attempts: {reason}")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._client is not None:
            await self._client.aclose()

    def status(self) -> SinkStatus:
        return SinkStatus(
            type="webhook",
            url=redact_url(self.spec.url),
            connected=self.connected,
            delivered=self.delivered,
            failed=self.failed,
            last_error=self.last_error,
        )
