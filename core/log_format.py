"""How the long-running commands write their log: readable text lines (the default) or one JSON object per
line for a log collector, each record carrying the id of the HTTP request it was written for.

The request id lives in a context variable set by the API's request-id middleware (api/observability.py);
a filter on the handler copies it onto every record, so it reaches the text and the JSON format alike, and
records written outside a request simply have none.
"""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from typing import Final, Literal, TextIO

LogFormat = Literal["text", "json"]
LOG_FORMATS: Final = ("text", "json")

_REQUEST_ID: ContextVar[str | None] = ContextVar("citywatch_request_id", default=None)

TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def bind_request_id(request_id: str) -> Token[str | None]:
    """Make `request_id` the current request's id (for the task handling it and the threads it uses)."""
    return _REQUEST_ID.set(request_id)


def unbind_request_id(token: Token[str | None]) -> None:
    _REQUEST_ID.reset(token)


def current_request_id() -> str | None:
    return _REQUEST_ID.get()


class RequestIdFilter(logging.Filter):
    """Adds `request_id` (None outside a request) to every record that passes the handler."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = _REQUEST_ID.get()
        return True


class TextFormatter(logging.Formatter):
    """The classic line, with ` request_id=...` at its end while a request is being handled."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        request_id = getattr(record, "request_id", None)
        if request_id is None:
            return line
        first, newline, rest = line.partition("\n")  # after the message, before a traceback
        return f"{first} request_id={request_id}{newline}{rest}"


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line: time (RFC 3339, UTC), level, logger, message, and
    request_id and exception when there are any."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None)
        if request_id is not None:
            line["request_id"] = request_id
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        # Newlines in a message or a traceback are escaped by json.dumps: the record stays one line.
        return json.dumps(line, ensure_ascii=False, default=str)


class _CitywatchHandler(logging.StreamHandler[TextIO]):
    """The handler configure_logging installs (and replaces when it is called again)."""

    def __init__(self, log_format: LogFormat) -> None:
        super().__init__(sys.stderr)
        self.log_format = log_format
        self.addFilter(RequestIdFilter())
        self.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())


def configure_logging(level: str, log_format: LogFormat) -> None:
    """Log records at `level` and above to standard error in `log_format`.

    Called at start and again once the configuration file is read (its `logging.format` applies when the
    command line names no format). As `logging.basicConfig`, it leaves alone a root logger that something
    else (a program embedding citywatch, a test harness) already gave handlers to."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _CitywatchHandler)]:
        root.removeHandler(handler)
        handler.close()
    if root.handlers:
        return
    root.addHandler(_CitywatchHandler(log_format))
    root.setLevel(level)


def json_logs_on() -> bool:
    """Whether configure_logging installed the JSON format: then the HTTP server's own loggers must reach
    it (instead of writing their own text lines)."""
    handlers = logging.getLogger().handlers
    return any(isinstance(h, _CitywatchHandler) and h.log_format == "json" for h in handlers)
