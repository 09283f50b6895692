"""A real MQTT broker (mosquitto) on loopback and a paho-mqtt subscriber that collects.

::

    with Mosquitto(users={"cam": "secret"}) as broker, MqttCollector(
        broker.port, "care/#", username="cam", password="secret"
    ) as inbox:
        ...  # the code under test publishes to 127.0.0.1:broker.port
        messages = inbox.wait_for(3, timeout_s=5)  # [MqttMessage(topic, payload, qos, retain)]

``Mosquitto(tls=issued)`` (an ``Issued`` server certificate of ``tests.helpers.tls``) adds a
TLS listener on ``broker.tls_port``; ``MqttCollector(broker.tls_port, ca=authority.cert_path)``
connects to it. With ``users`` anonymous clients are refused unless ``allow_anonymous=True``.
Without the ``mosquitto`` binary, ``start`` calls ``pytest.skip`` with the apt command.
"""

from __future__ import annotations

import getpass
import json
import shutil
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.loopback import (
    HOST,
    LoopbackPart,
    ProcessPart,
    free_port,
    stop_process,
    tail,
    wait_listening,
)
from tests.helpers.tls import Issued

__all__ = ["MOSQUITTO", "Mosquitto", "MqttCollector", "MqttMessage", "mosquitto_problem"]

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"


def mosquitto_problem() -> str | None:
    """Why the broker cannot run here, or ``None`` when it can."""
    for binary in (MOSQUITTO, MOSQUITTO_PASSWD):
        if not Path(binary).exists():
            return f"{Path(binary).name} not installed"
    return None


class Mosquitto(ProcessPart):
    """A mosquitto broker on 127.0.0.1 (a context manager that starts and always stops it)."""

    def __init__(
        self,
        users: Mapping[str, str] | None = None,
        allow_anonymous: bool | None = None,
        tls: Issued | None = None,
        start_timeout_s: float = 10.0,
    ) -> None:
        self.users = dict(users or {})
        self.allow_anonymous = not self.users if allow_anonymous is None else allow_anonymous
        self.tls = tls
        self.start_timeout_s = start_timeout_s
        self.host = HOST
        self.port = 0  # plain MQTT, set by the first start, kept by restart
        self.tls_port: int | None = None
        self._dir: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        """Whether the broker process is alive."""
        return self._process is not None and self._process.poll() is None

    @property
    def url(self) -> str:
        """``mqtt://127.0.0.1:PORT``."""
        return f"mqtt://{self.host}:{self.port}"

    @property
    def log(self) -> Path | None:
        """The broker's log file."""
        return self._dir / "mosquitto.log" if self._dir else None

    def _configure(self) -> Path:
        assert self._dir is not None
        lines = [
            "per_listener_settings false",
            f"allow_anonymous {'true' if self.allow_anonymous else 'false'}",
            "persistence false",
            f"user {getpass.getuser()}",  # run as root, mosquitto would switch user
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            f"listener {self.port} {HOST}",
        ]
        if self.users:
            passwords = self._dir / "passwords"
            passwords.write_text("")
            passwords.chmod(0o600)
            for user, password in self.users.items():
                subprocess.run(
                    [MOSQUITTO_PASSWD, "-b", str(passwords), user, password],
                    check=True,
                    capture_output=True,
                    timeout=10,
                )
            lines.insert(2, f"password_file {passwords}")
        if self.tls is not None:
            assert self.tls_port is not None
            lines += [
                f"listener {self.tls_port} {HOST}",
                f"certfile {self.tls.cert}",
                f"keyfile {self.tls.key}",
            ]
        config = self._dir / "mosquitto.conf"
        config.write_text("\n".join(lines) + "\n")
        return config

    def start(self) -> Mosquitto:
        """Start the broker (on the same ports after a first start) and wait until it accepts."""
        if self.running:
            return self
        problem = mosquitto_problem()
        if problem is not None:
            pytest.skip(f"MQTT broker unavailable ({problem}); apt-get install -y mosquitto")
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="mosquitto-"))
        fixed = bool(self.port)
        for _ in range(1 if fixed else 3):  # a freshly picked port may be taken meanwhile
            if not fixed:
                self.port = free_port()
                self.tls_port = free_port() if self.tls is not None else None
            config = self._configure()
            with open(self._dir / "mosquitto.log", "ab") as log:
                process = subprocess.Popen(
                    [MOSQUITTO, "-c", str(config)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                )
            try:
                wait_listening(self.port, "mosquitto", self.start_timeout_s, process)
                if self.tls_port is not None:
                    wait_listening(self.tls_port, "mosquitto (TLS)", self.start_timeout_s, process)
            except RuntimeError:
                stop_process(process, kill=True)
                continue
            self._process = process
            return self
        raise RuntimeError(f"mosquitto did not start:\n{tail(self._dir / 'mosquitto.log')}")


@dataclass(frozen=True)
class MqttMessage:
    """One message the collector received."""

    topic: str
    payload: bytes
    qos: int
    retain: bool

    def json(self) -> Any:
        """The payload parsed as JSON."""
        return json.loads(self.payload)


class MqttCollector(LoopbackPart):
    """A paho-mqtt client subscribed to ``topic`` (a filter) on 127.0.0.1 that keeps every
    message; connected and subscribed (SUBACK received) once started."""

    def __init__(
        self,
        port: int,
        topic: str = "#",
        qos: int = 1,
        username: str | None = None,
        password: str | None = None,
        ca: Path | None = None,
        host: str = HOST,
        timeout_s: float = 10.0,
    ) -> None:
        import paho.mqtt.client as mqtt

        self.topic, self.qos, self.timeout_s = topic, qos, timeout_s
        self.host, self.port = host, port
        self.messages: list[MqttMessage] = []
        self._lock = threading.Condition()
        self._subscribed = threading.Event()
        self._failure: str | None = None
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
        if username is not None:
            self._client.username_pw_set(username, password)
        if ca is not None:
            self._client.tls_set(ca_certs=str(ca), tls_version=ssl.PROTOCOL_TLS_CLIENT)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            self._failure = f"connect refused: {reason}"
            client.disconnect()  # no reconnect attempts (close() would wait for them)
            self._subscribed.set()
            return
        client.subscribe(self.topic, self.qos)

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, reasons: Any, props: Any) -> None:
        if any(r.is_failure for r in reasons):
            self._failure = f"subscribe refused: {reasons}"
        self._subscribed.set()

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        with self._lock:
            self.messages.append(
                MqttMessage(message.topic, bytes(message.payload), message.qos, message.retain)
            )
            self._lock.notify_all()

    def start(self) -> MqttCollector:
        """Connect, subscribe and wait for the SUBACK (``RuntimeError`` if refused)."""
        self._client.connect(self.host, self.port, keepalive=30)
        self._client.loop_start()
        if not self._subscribed.wait(self.timeout_s) or self._failure:
            self.close()
            raise RuntimeError(self._failure or f"no SUBACK within {self.timeout_s:g} s")
        return self

    def wait_for(self, n: int, timeout_s: float = 10.0) -> list[MqttMessage]:
        """The first ``n`` messages once there are that many; ``AssertionError`` after
        ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while len(self.messages) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    got = [m.topic for m in self.messages]
                    raise AssertionError(
                        f"{len(got)} of {n} MQTT messages in {timeout_s:g} s: {got}"
                    )
                self._lock.wait(left)
            return list(self.messages[:n])

    def close(self) -> None:
        """Disconnect and stop the network thread."""
        self._client.disconnect()
        self._client.loop_stop()
