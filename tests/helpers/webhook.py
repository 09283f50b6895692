"""An HTTP webhook receiver on loopback that collects JSON POST bodies.

::

    with WebhookReceiver(fail_first=2) as hook:   # the first 2 POSTs get 500
        ...  # the code under test POSTs to hook.url (http://127.0.0.1:PORT/hook)
        bodies = hook.wait_for(1, timeout_s=5)     # JSON bodies of accepted POSTs
        assert len(hook.attempts) == 3             # every request, failed ones included

Any path is accepted (``hook.url`` names ``/hook``). A body that is not JSON is answered 400
and recorded with ``json=None``.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.helpers.loopback import HOST, LoopbackPart

__all__ = ["WebhookReceiver", "WebhookRequest"]


@dataclass(frozen=True)
class WebhookRequest:
    """One request: method, path, headers (lower-case names), raw body, parsed JSON, status."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    json: Any
    status: int
    at: float = field(default_factory=time.monotonic)


class WebhookReceiver(LoopbackPart):
    """A threaded HTTP server on 127.0.0.1 recording POSTs (see the module docstring)."""

    def __init__(
        self, fail_first: int = 0, fail_status: int = 500, delay_s: float = 0.0, path: str = "/hook"
    ) -> None:
        self.fail_first, self.fail_status, self.delay_s = fail_first, fail_status, delay_s
        self.path = path
        self.attempts: list[WebhookRequest] = []
        self._cond = threading.Condition()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The listening port (once started)."""
        if self._server is None:
            raise RuntimeError("the webhook receiver has not started")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT/hook``."""
        return f"http://{HOST}:{self.port}{self.path}"

    @property
    def received(self) -> list[WebhookRequest]:
        """The accepted (2xx) requests, in arrival order."""
        with self._cond:
            return [r for r in self.attempts if 200 <= r.status < 300]

    def _record(self, handler: BaseHTTPRequestHandler) -> int:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        try:
            parsed: Any = json.loads(body)
        except ValueError:
            parsed = None
        with self._cond:
            if parsed is None:
                status = 400
            elif len(self.attempts) < self.fail_first:
                status = self.fail_status
            else:
                status = 200
            headers = {k.lower(): v for k, v in handler.headers.items()}
            self.attempts.append(
                WebhookRequest(handler.command, handler.path, headers, body, parsed, status)
            )
            self._cond.notify_all()
        return status

    def start(self) -> WebhookReceiver:
        """Listen on a free 127.0.0.1 port, serving in a daemon thread."""
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                if receiver.delay_s:
                    time.sleep(receiver.delay_s)
                status = receiver._record(self)
                reply = json.dumps({"ok": status == 200}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer((HOST, 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="webhook", daemon=True
        )
        self._thread.start()
        return self

    def wait_for(self, n: int, timeout_s: float = 10.0) -> list[Any]:
        """The JSON bodies of the first ``n`` accepted requests once there are that many;
        ``AssertionError`` after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                accepted = [r.json for r in self.attempts if 200 <= r.status < 300]
                if len(accepted) >= n:
                    return accepted[:n]
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"{len(accepted)} of {n} webhook posts in {timeout_s:g} s "
                        f"({len(self.attempts)} requests)"
                    )
                self._cond.wait(left)

    def close(self) -> None:
        """Stop the server and its thread."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            with contextlib.suppress(RuntimeError):
                self._thread.join(5)
            self._thread = None
