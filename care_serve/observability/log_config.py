"""The server's log configuration: ``log_level`` and ``log_format`` (text or JSON lines).

Text: ``<time> <level> <logger>: <message>``; access lines (logger
``care_serve.access``) carry ``key=value`` fields in the message. JSON: one
object per line with ``time``, ``level``, ``logger``, ``message`` and, for
access lines, every access field (``request_id``, ``protocol``, ``method``,
``path`` or ``rpc``, ``model``, ``version``, ``status``, ``latency_ms``).
"""

from __future__ import annotations

import json
import logging
import sys
from typing import IO, Any

from care_serve.settings import Settings

__all__ = ["JsonFormatter", "configure_logging"]

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per record."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}",
            "level": record.levelname,
            "logger": record.name,
        }
        access = getattr(record, "access", None)
        if isinstance(access, dict):
            data.update(access)
        else:
            data["message"] = record.getMessage()
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


def configure_logging(settings: Settings, stream: IO[str] | Any = None) -> None:
    """Send every log record (access lines included) to ``stream`` (default stderr)."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.log_level.upper())
    logging.getLogger("care_serve.access").setLevel(logging.INFO if settings.access_log else 100)
