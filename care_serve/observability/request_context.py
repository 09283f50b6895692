"""The request being served: its id and, once resolved, its model (one per task).

Transports start a request with ``begin_request`` (REST middleware, gRPC
interceptor); the data plane calls ``note_model`` when it has resolved the model
and version, and the access log line and error bodies read them back through
``current_request``. The context variable holds a mutable object, so what the
data plane notes deeper in the call is seen by the transport that started it.
"""

from __future__ import annotations

import logging
import re
import uuid
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ACCESS_LOGGER",
    "MAX_REQUEST_ID_LENGTH",
    "RequestInfo",
    "begin_request",
    "current_key",
    "current_request",
    "current_request_id",
    "log_access",
    "note_key",
    "note_model",
    "request_id_from",
]

ACCESS_LOGGER = "care_serve.access"
MAX_REQUEST_ID_LENGTH = 64
_SAFE_ID = re.compile(rf"[A-Za-z0-9._:-]{{1,{MAX_REQUEST_ID_LENGTH}}}")
_access_log = logging.getLogger(ACCESS_LOGGER)


@dataclass
class RequestInfo:
    """What the access log says about one request."""

    request_id: str
    protocol: str
    model: str | None = None
    version: int | None = None
    key: str | None = None  # the API key's name, once the request is authenticated


_current: ContextVar[RequestInfo | None] = ContextVar("care_serve_request", default=None)


def request_id_from(sent: str | bytes | None) -> str:
    """``sent`` if it is a safe id (1-64 of ``A-Z a-z 0-9 . _ : -``), else a fresh one."""
    if isinstance(sent, bytes):
        sent = sent.decode("latin-1")
    if sent and _SAFE_ID.fullmatch(sent):
        return sent
    return uuid.uuid4().hex


def begin_request(request_id: str, protocol: str) -> RequestInfo:
    """Make ``request_id`` the current request of this task."""
    info = RequestInfo(request_id, protocol)
    _current.set(info)
    return info


def current_request() -> RequestInfo | None:
    return _current.get()


def current_request_id() -> str | None:
    info = _current.get()
    return info.request_id if info is not None else None


def note_key(name: str | None) -> None:
    """Record the API key name (never the key) that sent the current request."""
    info = _current.get()
    if info is not None:
        info.key = name


def current_key() -> str:
    """The current request's key name, '' when anonymous (a metric label)."""
    info = _current.get()
    return (info.key or "") if info is not None else ""


def note_model(name: str, version: int | None) -> None:
    """Record the model and version of the current request (the data plane's hook): the ones
    serving it, or the ones a load or unload names (no version: it named none)."""
    info = _current.get()
    if info is not None:
        info.model, info.version = name, version


def log_access(info: RequestInfo, status: int | str, latency_ms: float, **where: Any) -> None:
    """One access-log line: id, where (method/path or rpc), model, version, status, latency."""
    if not _access_log.isEnabledFor(logging.INFO):
        return
    fields: dict[str, Any] = {
        "request_id": info.request_id,
        "protocol": info.protocol,
        **where,
        "model": info.model,
        "version": info.version,
        "key": info.key,
        "status": status,
        "latency_ms": round(latency_ms, 3),
    }
    text = " ".join(f"{k}={'-' if v is None else v}" for k, v in fields.items())
    _access_log.info("%s", text, extra={"access": fields, **fields})
