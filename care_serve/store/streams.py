"""Streams as declared in ``store.json``, in ``--streams FILE`` or in ``POST /streams``.

A stream is a source (a camera or a file), the pipeline or model that each frame
goes through, a frame-rate cap, a filter on which results become events, and the
sinks the events go to::

    {"name": "cam1", "source": "rtsp://10.0.0.5:554/stream1", "pipeline": "shapes-detect-classify",
     "max_fps": 5, "sinks": [{"type": "mqtt", "url": "mqtt://127.0.0.1:1883",
                              "topic": "care-serve/{stream}/events"}]}

Sources: ``rtsp://`` / ``rtsps://`` (``rtsp_transport`` tcp or udp), ``http(s)://``
MJPEG, a video file (``loop`` to play it again at its end, paced at its own frame
rate as a camera would be), a V4L2 device ``/dev/videoN``.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from care_serve.store.manifest import validate_model_name

__all__ = [
    "EventFilter",
    "MqttSinkSpec",
    "SinkSpec",
    "SourceKind",
    "StreamSpec",
    "WebhookSinkSpec",
    "redact_url",
    "source_kind",
]

SourceKind = Literal["rtsp", "http", "file", "v4l2"]
_DEVICE = re.compile(r"^/dev/video[0-9]{1,3}$")
STREAM_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


def source_kind(source: str) -> SourceKind:
    """What kind of source ``source`` names (``ValueError`` when none)."""
    scheme = urlsplit(source).scheme.lower()
    if scheme in ("rtsp", "rtsps"):
        return "rtsp"
    if scheme in ("http", "https"):
        return "http"
    if _DEVICE.match(source):
        return "v4l2"
    if scheme in ("", "file") and source.strip():
        return "file"
    raise ValueError(
        f"source {redact_url(source)!r} is not rtsp://, rtsps://, http(s):// (MJPEG), a video "
        "file path or a V4L2 device /dev/videoN"
    )


def redact_url(url: str) -> str:
    """``url`` without the password of its user part (``rtsp://user:***@host/...``)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    if parts.password is None:
        return url
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    netloc = f"{parts.username}:***@{host}{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


class _Sink(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MqttSinkSpec(_Sink):
    """Publish each event to an MQTT broker (paho-mqtt)."""

    type: Literal["mqtt"]
    url: str = Field(description="mqtt://host:port, or mqtts://host:port for TLS.")
    topic: str = Field(
        "care-serve/{stream}/events",
        min_length=1,
        max_length=200,
        description="Topic template; {stream} and {pipeline} are filled in.",
    )
    qos: Literal[0, 1, 2] = 0
    retain: bool = False
    username: str | None = None
    password: SecretStr | None = None
    ca_file: str | None = Field(None, description="CA bundle for mqtts (default: the system's).")
    client_id: str | None = Field(None, max_length=64)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ValueError(
                f"an MQTT sink's url is mqtt://host[:port] or mqtts://..., got {value!r}"
            )
        return value

    @field_validator("topic")
    @classmethod
    def _topic(cls, value: str) -> str:
        if "+" in value or "#" in value:
            raise ValueError("an MQTT topic to publish to holds no wildcards ('+', '#')")
        try:
            value.format(stream="s", pipeline="p")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(
                f"topic template {value!r} may use only {{stream}} and {{pipeline}} ({exc})"
            ) from None
        return value


class WebhookSinkSpec(_Sink):
    """POST each event as JSON to a URL, retrying failures, from a bounded queue."""

    type: Literal["webhook"]
    url: str
    headers: dict[str, str] = Field(default_factory=dict)
    timeout_s: float = Field(5.0, gt=0, le=60)
    retries: int = Field(3, ge=0, le=10)
    queue_size: int = Field(100, ge=1, le=10_000)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"a webhook url is http(s)://host/..., got {value!r}")
        return value


SinkSpec = Annotated[MqttSinkSpec | WebhookSinkSpec, Field(discriminator="type")]


class EventFilter(BaseModel):
    """Which results become events (all by default)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    on_change: bool = Field(
        default=False,
        description="Only when the set of labels detected (or the top class) changes.",
    )
    labels: tuple[str, ...] = Field(
        default=(), description="Only results holding one of these labels."
    )
    min_score: float = Field(
        default=0.0, ge=0.0, le=1.0, description="Ignore objects scoring below."
    )


class StreamSpec(BaseModel):
    """One stream: source, what runs on each frame, frame-rate cap, events and sinks."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=STREAM_NAME_PATTERN, description="The stream's name in URLs.")
    source: str = Field(min_length=1, max_length=2000)
    pipeline: str | None = None
    model: str | None = None
    parameters: dict[str, Any] = Field(
        default_factory=dict, description="Request parameters of the model (with 'model')."
    )
    max_fps: float = Field(5.0, gt=0, le=60, description="Frames processed per second, at most.")
    loop: bool = Field(False, description="A file source plays again from the start at its end.")
    rtsp_transport: Literal["tcp", "udp"] = "tcp"
    sinks: tuple[SinkSpec, ...] = Field((), max_length=8)
    events: EventFilter = EventFilter()
    reconnect_initial_s: float = Field(1.0, gt=0, le=60)
    reconnect_max_s: float = Field(30.0, gt=0, le=3600)

    @field_validator("source")
    @classmethod
    def _source(cls, value: str) -> str:
        source_kind(value)
        return value

    @field_validator("pipeline", "model")
    @classmethod
    def _names(cls, value: str | None) -> str | None:
        return None if value is None else validate_model_name(value)

    @model_validator(mode="after")
    def _target(self) -> StreamSpec:
        if (self.pipeline is None) == (self.model is None):
            raise ValueError("a stream names exactly one of 'pipeline' or 'model'")
        if self.parameters and self.model is None:
            raise ValueError("'parameters' go with 'model' (a pipeline has its own per step)")
        if self.loop and self.kind != "file":
            raise ValueError("'loop' is for file sources")
        if self.reconnect_max_s < self.reconnect_initial_s:
            raise ValueError("reconnect_max_s must be at least reconnect_initial_s")
        return self

    @property
    def kind(self) -> SourceKind:
        return source_kind(self.source)

    @property
    def target(self) -> str:
        """The pipeline or model each frame goes through."""
        return self.pipeline or self.model or ""

    def public(self) -> dict[str, Any]:
        """The spec as clients may see it: no passwords, in the source URL or the sinks."""
        data = self.model_dump(mode="json", exclude_none=True)
        data["source"] = redact_url(self.source)
        if self.kind == "file":
            data["source"] = PurePosixPath(self.source).name
        for sink in data.get("sinks", ()):
            if "url" in sink:
                sink["url"] = redact_url(sink["url"])
            if "password" in sink:
                sink["password"] = "***"
            if "headers" in sink:
                sink["headers"] = {k: "***" for k in sink["headers"]}
        return data
