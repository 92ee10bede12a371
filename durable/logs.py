"""Log lines for people (text) or for log pipelines (JSON, one object a line).

durable logs through the standard ``logging`` module: ``durable.worker`` (instances started,
resumed, finished, failed; leases), ``durable.step`` (failed step attempts and when the next
runs), ``durable.store``. Their records carry fields besides the message (``instance_id``,
``program``, ``step``, ``attempt``, ``error``, ``next_retry``, ``worker``), which the JSON
format writes as keys of their own. ``configure_logging`` is what ``durable worker
--log-format`` uses; a program that runs a ``Worker`` itself may call it, or install
``JsonFormatter`` on handlers of its own.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import IO, Any

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# What every LogRecord has: anything else on a record came from ``extra=`` and is a field.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``time`` (ISO 8601, UTC), ``level``, ``logger``,
    ``message``, every field passed with ``extra=``, and ``exception`` (the formatted
    traceback) when there is one. Values JSON cannot hold are written as their ``str``."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str)


def configure_logging(level: int | str = "INFO", format: str = "text",
                      stream: IO[str] | None = None) -> logging.Handler:
    """Send every log record of ``level`` and above to ``stream`` (stderr by default), as
    text lines or as JSON objects (``format="json"``); returns the handler it added to the
    root logger."""
    if format not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, got {format!r}")
    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    handler.setFormatter(JsonFormatter() if format == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level)
    return handler
