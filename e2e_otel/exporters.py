"""Span exporters: which one the settings ask for, made fork-safe and privacy-safe.

The exporter wrappers run on the SDK's export thread, never on the request path;
``CountingBatchSpanProcessor.on_end`` and ``QueueFullLogFilter`` run where spans end (request threads).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.trace import Link, Status, TraceFlags

from .conf import Config
from .export_health import ExportHealth, QuietExporter
from .sanitize import MASK, Sanitizer, ansi_quotes_for

logger = logging.getLogger(__name__)

_SAMPLED = TraceFlags.SAMPLED


class QueueFullLogFilter(logging.Filter):
    """Lets the SDK's per-span "Queue full, dropping span" warning through once a minute.

    During a collector outage the SDK logs one warning per dropped span on the request thread;
    the drops are counted in ``e2e_otel_export_dropped_spans_total`` instead.
    """

    def __init__(self, interval: float = 60.0) -> None:
        super().__init__()
        self.interval = interval
        self._next = 0.0
        self.suppressed = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith("Queue full"):
            return True
        now = time.monotonic()
        if now >= self._next:
            self._next = now + self.interval
            return True
        self.suppressed += 1
        return False


_SDK_QUEUE_LOGGER = "opentelemetry.sdk._shared_internal"
_queue_full_filter = QueueFullLogFilter()


def _install_queue_full_filter() -> None:
    sdk_logger = logging.getLogger(_SDK_QUEUE_LOGGER)
    if _queue_full_filter not in sdk_logger.filters:
        sdk_logger.addFilter(_queue_full_filter)


class CountingBatchSpanProcessor(BatchSpanProcessor):
    """The SDK's batch processor, plus a count of the spans it drops when its queue is full.

    Runs on span-ending threads (``on_end``), i.e. request threads. The SDK drops silently (one log line per span); we
    read its queue length before handing the span over — two attribute reads, no lock (the SDK
    clears that deque in place after fork, so the reference stays valid) — and then call the SDK's
    ``emit`` directly: ``on_end`` is per span, so it does the sampled check once instead of again
    in ``super().on_end``. If a future SDK renames those internals, counting stops (``counting`` is
    False) and spans go through ``super().on_end``; export is unaffected.
    """

    def __init__(self, exporter: SpanExporter, on_drop: Callable[[], None] | None = None) -> None:
        super().__init__(exporter)
        self.dropped = 0
        self._on_drop = on_drop
        batch = getattr(self, "_batch_processor", None)
        self._queue = getattr(batch, "_queue", None)
        self._capacity = getattr(batch, "_max_queue_size", None)
        self._emit: Callable[[ReadableSpan], None] | None = getattr(batch, "emit", None)
        self.counting = self._queue is not None and isinstance(self._capacity, int) and self._emit is not None
        if self.counting:
            _install_queue_full_filter()

    def on_end(self, span: ReadableSpan) -> None:
        if not self.counting:
            super().on_end(span)
            return
        context = span.context
        if not (context and context.trace_flags & _SAMPLED):  # as the SDK's on_end: export sampled spans
            return
        if len(self._queue) >= self._capacity:  # type: ignore[arg-type,operator]
            self.dropped += 1
            if self._on_drop is not None:
                self._on_drop()
        self._emit(span)  # type: ignore[misc]

    @property
    def pending(self) -> int:
        """Spans queued for export and not yet handed to the exporter (0 when not counting)."""
        return len(self._queue) if self._queue is not None else 0

    def shutdown(self, timeout_millis: int = 30_000) -> None:  # type: ignore[override]
        """Export what is queued, giving up after ``timeout_millis`` (the SDK's own ``shutdown``
        takes no timeout and waits up to 30 s for its worker)."""
        batch = getattr(self, "_batch_processor", None)
        if batch is None:
            super().shutdown()
            return
        batch.shutdown(timeout_millis=max(0, int(timeout_millis)))


class PerProcessExporter(SpanExporter):
    """Builds the real exporter lazily in the process that exports.

    A gRPC channel created before ``fork()`` (``gunicorn --preload``) is unusable in the child, so
    each worker makes its own on its first export.
    """

    def __init__(self, factory: Callable[[], SpanExporter]) -> None:
        self._factory = factory
        self._pid: int | None = None
        self._exporter: SpanExporter | None = None
        self._lock = threading.Lock()
        self._origin_pid = os.getpid()  # the process that built the provider and its resource
        self._resource_pid: int | None = None
        # (inherited resource, same with our pid): the provider's spans all share one Resource, so
        # one entry is enough, and spans from elsewhere can't grow it.
        self._resource_cache: tuple[Resource, Resource] | None = None

    @property
    def exporter(self) -> SpanExporter:
        pid = os.getpid()
        if self._exporter is None or self._pid != pid:
            with self._lock:
                if self._exporter is None or self._pid != pid:
                    self._exporter = self._factory()
                    self._pid = pid
        return self._exporter

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        exporter = self.exporter
        return exporter.export(self._with_own_pid(spans))

    def _with_own_pid(self, spans: Sequence[ReadableSpan]) -> Sequence[ReadableSpan]:
        """Spans made in a forked child name the child's pid, not the preloading parent's.

        The provider's resource (with ``process.pid``) was built before ``fork()``; without this every
        gunicorn worker would report the master's pid and their spans could not be told apart. Only
        that inherited pid is replaced (spans ingested from elsewhere keep their own resource).
        """
        pid = os.getpid()
        if pid == self._origin_pid:
            return spans
        if self._resource_pid != pid:
            self._resource_cache = None
            self._resource_pid = pid
        result: list[ReadableSpan] | None = None
        for index, span in enumerate(spans):
            resource = span.resource
            if resource is None or resource.attributes.get("process.pid") != self._origin_pid:
                continue
            cached = self._resource_cache
            if cached is None or cached[0] is not resource:
                cached = (resource, resource.merge(Resource({"process.pid": pid}, resource.schema_url)))
                self._resource_cache = cached
            if result is None:
                result = list(spans)
            result[index] = replace_span(span, resource=cached[1])
        return spans if result is None else result

    def shutdown(self) -> None:
        if self._exporter is not None and self._pid == os.getpid():
            self._exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        if self._exporter is not None and self._pid == os.getpid():
            return self._exporter.force_flush(timeout_millis)
        return True


# Attributes whose values are free text that may carry secrets.
_TEXT_ATTRIBUTES = ("exception.message", "exception.stacktrace", "error.message", "http.url", "url.full",
                    "url.query", "http.target")
_SQL_ATTRIBUTES = ("db.statement", "db.query.text")


def sanitize_span(span: ReadableSpan, sanitizer: Sanitizer) -> ReadableSpan:
    """A copy of ``span`` with SQL literals, sensitive attributes and secrets in text removed: in
    attributes, event attributes, link attributes and the status description (the SDK writes
    ``"ExcType: message"`` there when an exception escapes a span)."""
    changes: dict[str, Any] = {}
    attributes = _clean_attributes(span.attributes or {}, sanitizer)
    if attributes is not None:
        changes["attributes"] = attributes
    events = [_clean_attributes(e.attributes or {}, sanitizer) for e in span.events]
    if any(clean is not None for clean in events):
        changes["events"] = [
            Event(e.name, clean, e.timestamp) if clean is not None else e
            for clean, e in zip(events, span.events, strict=True)
        ]
    links = [_clean_attributes(link.attributes or {}, sanitizer) for link in span.links]
    if any(clean is not None for clean in links):
        changes["links"] = [
            Link(link.context, clean) if clean is not None else link
            for clean, link in zip(links, span.links, strict=True)
        ]
    description = span.status.description
    if description:
        scrubbed = sanitizer.scrub_text(description)
        if scrubbed != description:
            changes["status"] = Status(span.status.status_code, scrubbed)
    return replace_span(span, **changes) if changes else span


def replace_span(span: ReadableSpan, **changes: Any) -> ReadableSpan:
    """A copy of ``span`` with some constructor fields replaced (spans are immutable once ended)."""
    fields: dict[str, Any] = {
        "name": span.name, "context": span.context, "parent": span.parent, "resource": span.resource,
        "attributes": span.attributes, "events": span.events, "links": span.links, "kind": span.kind,
        "status": span.status, "start_time": span.start_time, "end_time": span.end_time,
        "instrumentation_scope": span.instrumentation_scope,
    }
    fields.update(changes)
    return ReadableSpan(**fields)


def _clean_attributes(attributes, sanitizer: Sanitizer):  # type: ignore[no-untyped-def]
    """Cleaned copy of ``attributes``, or ``None`` when nothing needed cleaning (the common case)."""
    changed: dict[str, object] | None = None
    for key, value in attributes.items():
        new = value
        if key in _SQL_ATTRIBUTES and isinstance(value, str):
            new = sanitizer.scrub_sql(value, ansi_quotes=ansi_quotes_for(attributes.get("db.system")))
        elif sanitizer.enabled and sanitizer.is_sensitive_key(key):
            new = MASK
        elif key in _TEXT_ATTRIBUTES and isinstance(value, str):
            new = sanitizer.scrub_text(value)
        if new != value:
            if changed is None:
                changed = dict(attributes)
            changed[key] = new
    return changed


class SanitizingSpanExporter(SpanExporter):
    """Scrubs every span before it leaves the process (secrets and SQL literals never exported)."""

    def __init__(self, inner: SpanExporter, sanitizer: Sanitizer) -> None:
        self.inner = inner
        self._sanitizer = sanitizer

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self.inner.export([sanitize_span(span, self._sanitizer) for span in spans])

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.inner.force_flush(timeout_millis)


def _otlp_exporter_factory(config: Config) -> Callable[[], SpanExporter]:
    """A zero-argument factory for the configured OTLP exporter.

    The exporter module is imported here, at set-up: importing it runs ``Resource.create()``, which
    needs a thread pool, and a process whose first export is the exit flush would otherwise import
    it during interpreter shutdown, fail ("cannot schedule new futures") and lose every span.
    Only the exporter (its gRPC channel / HTTP session) is created lazily, per process.
    """
    kwargs: dict[str, Any] = {}
    if config.OTLP_HEADERS is not None:
        kwargs["headers"] = config.OTLP_HEADERS
    if config.OTLP_TIMEOUT is not None:
        kwargs["timeout"] = config.OTLP_TIMEOUT
    endpoint = config.OTLP_ENDPOINT
    exporter_class: type[SpanExporter]
    if config.OTLP_PROTOCOL == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        exporter_class = GrpcExporter
        if endpoint:
            kwargs["endpoint"] = endpoint
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

        exporter_class = HttpExporter
        if endpoint:
            # Like OTEL_EXPORTER_OTLP_ENDPOINT: a bare base URL gets the signal path appended.
            kwargs["endpoint"] = endpoint if urlsplit(endpoint).path not in ("", "/") else (
                endpoint.rstrip("/") + "/v1/traces"
            )
    return lambda: exporter_class(**kwargs)


def otlp_endpoint_label(config: Config, environ: Mapping[str, str] | None = None) -> str:
    """Where the OTLP exporter sends spans, for log lines: scheme, host, port and path only (no
    user:password, no query)."""
    environ = os.environ if environ is None else environ
    grpc = config.OTLP_PROTOCOL == "grpc"
    endpoint, base = config.OTLP_ENDPOINT, True
    if not endpoint:
        traces = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
        general = environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
        endpoint, base = (traces, False) if traces else (general, True)
    if not endpoint:
        return "localhost:4317" if grpc else "http://localhost:4318/v1/traces"
    parts = urlsplit(endpoint if "//" in endpoint else f"//{endpoint}")
    if not grpc and base and parts.path in ("", "/"):
        parts = parts._replace(path="/v1/traces")  # as the exporter itself completes a base URL
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    host = f"{parts.hostname or ''}{port}"
    return f"{parts.scheme}://{host}{parts.path}" if parts.scheme else host


def build_span_exporter(config: Config, sanitizer: Sanitizer,
                        health: ExportHealth | None = None) -> SpanExporter | None:
    """The exporter(s) ``TRACES_EXPORTER`` asks for, wrapped for fork-safety and scrubbing; or ``None``.

    The OTLP exporter reports its failures through ``health`` (one warning a minute, see
    ``export_health.py``) instead of logging every retry; one is made when not given.
    """
    exporters: list[SpanExporter] = []
    for kind in config.TRACES_EXPORTER.split(","):
        if kind == "console":
            exporters.append(ConsoleSpanExporter())
        elif kind == "otlp":
            otlp = PerProcessExporter(_otlp_exporter_factory(config))
            exporters.append(QuietExporter(otlp, health or ExportHealth(otlp_endpoint_label(config))))
    if not exporters:
        return None
    inner = exporters[0] if len(exporters) == 1 else MultiSpanExporter(exporters)
    return SanitizingSpanExporter(inner, sanitizer)


class MultiSpanExporter(SpanExporter):
    """Several exporters behind one batch processor (``OTEL_TRACES_EXPORTER=otlp,console``).
    Runs on the export thread; the batch succeeds only if every exporter took it."""

    def __init__(self, exporters: Sequence[SpanExporter]) -> None:
        self.exporters = tuple(exporters)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        results = [exporter.export(spans) for exporter in self.exporters]
        ok = all(result is SpanExportResult.SUCCESS for result in results)
        return SpanExportResult.SUCCESS if ok else SpanExportResult.FAILURE

    def shutdown(self) -> None:
        for exporter in self.exporters:
            exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return all([exporter.force_flush(timeout_millis) for exporter in self.exporters])
