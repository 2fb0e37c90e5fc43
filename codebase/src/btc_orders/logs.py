"""Structured logs: one JSON object a line on stdout, and the same events to Fluentd.

Every log line is an *event* with a name (`order_created`, `rate_fetch_failed`)
and fields. The request id of the HTTP request (or of the event being relayed or
projected) rides in a context variable and lands on every line written while it
is set. Fluentd gets the events through fluent-logger's asynchronous sender,
tagged `btc.<service>.<event>`, from a bounded queue that drops the oldest line
when Fluentd is away: a dead Fluentd never slows or fails a request.
"""

import contextvars
import logging
import sys
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
from fluent import asyncsender

from btc_orders.domain import money

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)

FLUENTD_QUEUE_SIZE = 10_000
FLUENTD_TIMEOUT_SECONDS = 1.0

_service_name = "btc_orders"


def new_request_id() -> str:
    return uuid.uuid4().hex


def event(logger: logging.Logger, name: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log the event `name` with `fields` (JSON-serialisable values or Decimals).

    The record is made and handed to the handlers directly: `Logger.log` would first walk the
    stack for the caller's file and line (`findCaller`), which no line of ours prints."""
    if logger.isEnabledFor(level):
        record = logger.makeRecord(logger.name, level, "", 0, name, (), None, extra={"event_fields": fields})
        logger.handle(record)


# (whole second, its ISO 8601 text): one line in a second formats the date, the others reuse it
_second_text: tuple[int, str] = (-1, "")


def _timestamp(created: float) -> str:
    """`created` as `datetime.fromtimestamp(created, UTC).isoformat(timespec="microseconds")`."""
    global _second_text
    second = int(created)  # as datetime does: the fraction rounded to the microsecond on its own
    micro = round((created - second) * 1_000_000)
    if micro == 1_000_000:
        second, micro = second + 1, 0
    cached_second, text = _second_text
    if second != cached_second:
        text = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        _second_text = (second, text)
    return f"{text}.{micro:06d}+00:00"


def _record_to_dict(record: logging.LogRecord) -> dict[str, Any]:
    document: dict[str, Any] = {
        "time": _timestamp(record.created),
        "level": record.levelname.lower(),
        "service": _service_name,
        "event": record.getMessage(),
        "logger": record.name,
        "pid": record.process,
    }
    request_id = request_id_var.get()
    if request_id is not None:
        document["request_id"] = request_id
    fields = getattr(record, "event_fields", None)
    if fields:
        document.update(fields)
    if record.exc_info:
        document["exception"] = logging.Formatter().formatException(record.exc_info)
    return document


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return money.plain(value)  # never `0E-8`
    return str(value)  # UUID, Enum: their exact text


def _json(record: logging.LogRecord) -> bytes:
    """The record as one JSON object, built once per record whatever the number of handlers."""
    cached: bytes | None = getattr(record, "_btc_json", None)
    if cached is None:
        cached = orjson.dumps(_record_to_dict(record), default=_default)
        record._btc_json = cached
    return cached


class JsonLinesFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return _json(record).decode()


class FluentdHandler(logging.Handler):
    """Sends each event to Fluentd as `btc.<service>.<event>`, never blocking the caller."""

    def __init__(self, service: str, host: str, port: int) -> None:
        super().__init__()
        self.sender = asyncsender.FluentSender(
            f"btc.{service}",
            host=host,
            port=port,
            timeout=FLUENTD_TIMEOUT_SECONDS,
            queue_maxsize=FLUENTD_QUEUE_SIZE,
            queue_circular=True,
        )

    def emit(self, record: logging.LogRecord) -> None:
        try:
            document = orjson.loads(_json(record))
            label = _tag_safe(document["event"])
            self.sender.emit_with_time(label, int(record.created), document)
        except Exception:  # a log line must never break the caller
            self.handleError(record)

    def close(self) -> None:
        self.sender.close()
        super().close()


def _tag_safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "_-" else "_" for c in name) or "event"


def configure(service: str, level: str = "INFO", fluentd_host: str | None = None, fluentd_port: int = 24224) -> None:
    """Send every log record of the process as JSON lines to stdout (and Fluentd)."""
    global _service_name
    _service_name = service
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    stdout = logging.StreamHandler(sys.stdout)
    stdout.setFormatter(JsonLinesFormatter())
    root.addHandler(stdout)
    if fluentd_host:
        root.addHandler(FluentdHandler(service, fluentd_host, fluentd_port))
    root.setLevel(level)
    # No line prints the thread or the multiprocessing process name: do not look them up per record.
    logging.logThreads = False
    logging.logMultiprocessing = False
    # Libraries log through the same handlers; their chatter is kept to warnings.
    for noisy in ("pika", "httpx", "httpcore", "uvicorn.access", "yoyo"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    for name in ("uvicorn", "uvicorn.error", "gunicorn.error"):
        logging.getLogger(name).handlers = []
        logging.getLogger(name).propagate = True
