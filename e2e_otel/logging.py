"""Log correlation: every record carries ``correlation_id``, ``trace_id`` and ``span_id``.

A record factory (not a filter) so that records from every logger get the fields, whatever handlers
the host app configured. ``JsonFormatter`` writes one JSON object per line for log shippers.

Records made while a request is handled but after its server span ended get the request's ids too:
Django logs ``django.request`` "Not Found" / "Bad Request" in ``BaseHandler.get_response`` *after* the
middleware chain (so after the OTel middleware ended the span and detached its context), and
``runserver`` writes its ``django.server`` access line after the response, before closing it.
``CorrelationMiddleware`` binds the server span's context to the request's execution context
(:func:`bind_request`, a context variable); Django's ``request_started`` and ``request_finished``
signals clear it, so it lasts exactly from the start of a request to the close of its response and
never leaks into the next one. gunicorn's ``gunicorn.access`` line is written after the response is
closed and is not covered: put ``%({x-correlation-id}o)s`` in ``access_log_format`` instead.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from contextvars import ContextVar
from datetime import datetime, timezone
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import SpanContext

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


# The server span of the request being handled in this thread / asyncio task, for the records made
# after that span ended (see the module docstring). Set per request, cleared by Django's signals.
_request_span: ContextVar[SpanContext | None] = ContextVar("e2e_otel_request_span", default=None)


def bind_request(context: SpanContext) -> None:
    """Make ``context`` (the request's server span) the fallback ids of log records until the
    request's response is closed. Called by ``CorrelationMiddleware`` on the request thread."""
    _request_span.set(context if context.is_valid else None)


def _unbind_request(**_: Any) -> None:
    # request_started: nothing of a previous request on this thread survives into the next one;
    # request_finished: the response is closed, the request is over.
    if _request_span.get() is not None:
        _request_span.set(None)


def install_record_factory() -> None:
    """Wrap the current log record factory once per process and connect the request signals."""
    global _installed
    with _installed_lock:
        if _installed:
            return
        from django.core.signals import request_finished, request_started

        request_started.connect(_unbind_request, dispatch_uid="e2e_otel.logging.request_started")
        request_finished.connect(_unbind_request, dispatch_uid="e2e_otel.logging.request_finished")
        previous: Callable[..., logging.LogRecord] = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            # Runs for every record any logger creates, on the logging thread (often a request's).
            record = previous(*args, **kwargs)
            context = trace.get_current_span().get_span_context()
            if not context.is_valid:
                context = _request_span.get() or context
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
