"""Span exporters: which one the settings ask for, made fork-safe and privacy-safe.

The exporter wrappers run on the SDK's export thread, never on the request path;
``CountingBatchSpanProcessor.on_end`` and ``QueueFullLogFilter`` run where spans end (request threads).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
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
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, Status, TraceFlags

from .conf import Config
from .sanitize import Sanitizer

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


def sanitize_span(span: ReadableSpan, sanitizer: Sanitizer,
                  clean_resource: Callable[[Resource], Resource] | None = None) -> ReadableSpan:
    """A copy of ``span`` with nothing secret left in any exported field, or ``span`` itself when it
    was clean already.

    Scrubbed: name, attributes, event names and attributes, link attributes, the status description
    (the SDK writes ``"ExcType: message"`` there when an exception escapes a span), the
    instrumentation scope's attributes and the resource, all through
    :meth:`Sanitizer.clean_attributes` / :meth:`Sanitizer.scrub_text`, the path the record writer
    uses too. ``clean_resource`` lets the exporter reuse one cleaned copy per Resource (default:
    clean it here)."""
    changes: dict[str, Any] = {}
    scrub = sanitizer.scrub_text
    name = scrub(span.name)
    if name != span.name:
        changes["name"] = name
    attributes = span.attributes or {}
    clean = sanitizer.clean_attributes(attributes)
    if clean is not attributes:
        changes["attributes"] = clean
    events = span.events  # a fresh tuple per access: read once
    if events:
        clean_events = [_clean_event(event, sanitizer) for event in events]
        if any(new is not old for new, old in zip(clean_events, events, strict=True)):
            changes["events"] = clean_events
    links = span.links
    if links:
        clean_links = [_clean_link(link, sanitizer) for link in links]
        if any(new is not old for new, old in zip(clean_links, links, strict=True)):
            changes["links"] = clean_links
    description = span.status.description
    if description:
        scrubbed = scrub(description)
        if scrubbed != description:
            changes["status"] = Status(span.status.status_code, scrubbed)
    scope = span.instrumentation_scope
    if scope is not None and scope.attributes:  # browsers send scope attributes too
        scope_attributes = sanitizer.clean_attributes(scope.attributes)
        if scope_attributes is not scope.attributes:
            changes["instrumentation_scope"] = InstrumentationScope(scope.name, scope.version, scope.schema_url,
                                                                    scope_attributes)
    resource = span.resource
    if resource is not None:
        cleaned = clean_resource(resource) if clean_resource else _clean_resource(resource, sanitizer)
        if cleaned is not resource:
            changes["resource"] = cleaned
    return replace_span(span, **changes) if changes else span


def _clean_event(event: Event, sanitizer: Sanitizer) -> Event:
    attributes = event.attributes or {}
    clean = sanitizer.clean_attributes(attributes)
    name = sanitizer.scrub_text(event.name)
    if clean is attributes and name == event.name:
        return event
    return Event(name, clean, event.timestamp)


def _clean_link(link: Link, sanitizer: Sanitizer) -> Link:
    attributes = link.attributes or {}
    clean = sanitizer.clean_attributes(attributes)
    return link if clean is attributes else Link(link.context, clean)


def _clean_resource(resource: Resource, sanitizer: Sanitizer) -> Resource:
    attributes = resource.attributes
    clean = sanitizer.clean_attributes(attributes)
    return resource if clean is attributes else Resource(clean, resource.schema_url)


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


RESOURCE_CACHE_SIZE = 64


class SanitizingSpanExporter(SpanExporter):
    """Scrubs every span before it leaves the process (secrets and SQL literals never exported).

    Runs on the SDK's export thread (and on a thread calling ``force_flush``; the SDK serialises
    the two). Resources are cleaned once per Resource object: a provider's spans all share one, and
    ingested browser spans share one per OTLP request, so a small identity-keyed cache of
    ``RESOURCE_CACHE_SIZE`` entries holds the cleaned copies (``Resource.__hash__`` serialises every
    attribute to JSON, so hashing by value would cost more than the cleaning).
    """

    def __init__(self, inner: SpanExporter, sanitizer: Sanitizer) -> None:
        self.inner = inner
        self._sanitizer = sanitizer
        self._resources: OrderedDict[int, tuple[Resource, Resource]] = OrderedDict()
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self.inner.export([sanitize_span(span, self._sanitizer, self._clean_resource) for span in spans])

    def _clean_resource(self, resource: Resource) -> Resource:
        key = id(resource)
        with self._lock:  # dictionary operations only
            # Each entry holds its resource, so no other object can take that id while it is cached.
            cached = self._resources.get(key)
            if cached is not None:
                self._resources.move_to_end(key)
                return cached[1]
        clean = _clean_resource(resource, self._sanitizer)
        with self._lock:
            self._resources[key] = (resource, clean)
            self._resources.move_to_end(key)
            if len(self._resources) > RESOURCE_CACHE_SIZE:
                self._resources.popitem(last=False)
        return clean

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


def build_span_exporter(config: Config, sanitizer: Sanitizer) -> SpanExporter | None:
    """The exporter(s) ``TRACES_EXPORTER`` asks for, wrapped for fork-safety and scrubbing; or ``None``."""
    exporters: list[SpanExporter] = []
    for kind in config.TRACES_EXPORTER.split(","):
        if kind == "console":
            exporters.append(ConsoleSpanExporter())
        elif kind == "otlp":
            exporters.append(PerProcessExporter(_otlp_exporter_factory(config)))
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
