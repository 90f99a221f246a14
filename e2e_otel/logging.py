"""Log correlation: every record carries ``correlation_id``, ``trace_id`` and ``span_id``.

A record factory (not a filter) so that records from every logger get the fields, whatever handlers
the host app configured. ``JsonFormatter`` writes one JSON object per line for log shippers.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from opentelemetry import trace

from .propagation import format_correlation_id

_installed_lock = threading.Lock()
_installed = False

_STANDARD_ATTRS = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys()
    | {"message", "asctime", "correlation_id", "trace_id", "span_id", "trace_sampled"}
)

# (trace id, correlation id, 32-hex trace id) of the last record made in a trace: the records of one
# request share its trace, so each is formatted once. One entry, replaced whole (thread-safe).
_last_trace: tuple[int, str, str] = (0, "", "")


def _trace_fields(trace_id: int) -> tuple[str, str]:
    """``(correlation_id, trace_id)`` text for a valid trace id, memoised for the previous trace."""
    global _last_trace
    last = _last_trace
    if last[0] != trace_id:
        last = _last_trace = (trace_id, format_correlation_id(trace_id), f"{trace_id:032x}")
    return last[1], last[2]


def install_record_factory() -> None:
    """Wrap the current log record factory once per process."""
    global _installed
    with _installed_lock:
        if _installed:
            return
        previous: Callable[..., logging.LogRecord] = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            # Runs for every record any logger creates, on the logging thread (often a request's).
            record = previous(*args, **kwargs)
            context = trace.get_current_span().get_span_context()
            if context.is_valid:
                record.correlation_id, record.trace_id = _trace_fields(context.trace_id)
                record.span_id = f"{context.span_id:016x}"
                record.trace_sampled = context.trace_flags.sampled
            else:
                record.correlation_id = record.trace_id = record.span_id = ""
                record.trace_sampled = False
            return record

        logging.setLogRecordFactory(factory)
        _installed = True


class JsonFormatter(logging.Formatter):
    """One JSON object per record, with the correlation fields and any ``extra=`` values.

    Usage in ``LOGGING``: ``"formatters": {"json": {"()": "e2e_otel.logging.JsonFormatter"}}``.
    """

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, tz=timezone.utc).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "correlation_id": getattr(record, "correlation_id", ""),
            "trace_id": getattr(record, "trace_id", ""),
            "span_id": getattr(record, "span_id", ""),
        }
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            payload["stack"] = self.formatStack(record.stack_info)
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                payload[key] = value
        return json.dumps(payload, default=str, ensure_ascii=False)
