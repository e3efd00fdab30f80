"""Process-wide logging set-up: one JSON object per line, or plain text for humans.

Entry points call `configure_logging(settings, service)` once. Code that
handles a request sets `request_id_var`, and every line logged while it is set
carries the id, across awaits and tasks spawned from that context.
"""

from __future__ import annotations

import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import TextIO

import orjson

from shared.settings import Settings

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_RECORD_ATTRIBUTES = frozenset(
    logging.LogRecord("", logging.INFO, "", 0, "", None, None).__dict__
) | {"message", "asctime", "taskName"}

_TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


class _JsonFormatter(logging.Formatter):
    """Renders a record as one JSON line: fixed fields, then the `extra` keys."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "service": self._service,
        }
        request_id = request_id_var.get()
        if request_id is not None:
            payload["request_id"] = request_id
        for key, value in record.__dict__.items():
            if key not in _RECORD_ATTRIBUTES and key not in payload:
                payload[key] = value
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            payload["stack"] = self.formatStack(record.stack_info)
        # default=str: an odd `extra` value (a Path, an exception) must not lose the line.
        return orjson.dumps(payload, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


class _TextFormatter(logging.Formatter):
    """The stdlib text layout, with the service and request id when set."""

    def __init__(self, service: str) -> None:
        super().__init__(_TEXT_FORMAT)
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        request_id = request_id_var.get()
        # Up front, not appended: a traceback would push a trailing id far away.
        context = self._service if request_id is None else f"{self._service} {request_id}"
        return f"[{context}] {super().format(record)}"


class _ServiceHandler(logging.StreamHandler[TextIO]):
    """Marks the handler we install, so a second call replaces it and nothing else."""


def configure_logging(settings: Settings, service: str) -> None:
    """Send the root logger to stderr in the format and at the level settings ask for.

    Calling it again replaces the handler it installed; handlers others put on
    the root logger (pytest's capture, for one) stay.

    Raises:
        ValueError: `settings.log_level` is not a logging level name.
    """
    handler = _ServiceHandler(sys.stderr)
    formatter = _JsonFormatter(service) if settings.log_json else _TextFormatter(service)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for existing in [h for h in root.handlers if isinstance(h, _ServiceHandler)]:
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(settings.log_level.upper())
