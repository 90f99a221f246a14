"""OTLP over the wire: a Django server process exports server + PyMySQL spans to a real receiver.

The subprocess only adds ``"e2e_otel"`` and an ``E2E_OTEL`` dict (tests/settings_export.py); the
collector address comes from the standard ``OTEL_EXPORTER_OTLP_*`` variables, as a user would set it.
"""

from __future__ import annotations

import time
import uuid

import pytest
from django.db import connection

from e2e_otel.testing.otlp_receiver import OTLPReceiver
from tests.servers import gunicorn, runserver, subprocess_env
from tests.testapp.models import Item

SERVER, CLIENT = 2, 3  # OTLP span kinds


def _exporting_env(receiver: OTLPReceiver, protocol: str, **extra: str) -> dict[str, str]:
    endpoint = receiver.grpc_endpoint if protocol == "grpc" else receiver.http_base_endpoint
    return subprocess_env({
        "DJANGO_SETTINGS_MODULE": "tests.settings_export",
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        **extra,
    })


def _trace(receiver: OTLPReceiver, correlation_id: str, *, with_query: bool = True) -> list:
    """The spans of one trace, once its server span (and its testapp_item query) have arrived."""
    trace_hex = correlation_id.replace("-", "")

    def complete(spans: list) -> bool:
        mine = [s for s in spans if s.trace_id == trace_hex]
        has_query = any("testapp_item" in str(s.attributes.get("db.statement")) for s in mine)
        return any(s.kind == SERVER for s in mine) and (has_query or not with_query)

    receiver.wait_for(complete, timeout=15)
    return receiver.spans_for_trace(trace_hex)


@pytest.mark.slow
@pytest.mark.mysql
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("protocol", "launcher"), [("grpc", gunicorn), ("http/protobuf", runserver)],
                         ids=["grpc-gunicorn", "http-runserver"])
def test_server_and_pymysql_spans_arrive_over_otlp(otlp_receiver: OTLPReceiver, protocol: str,
                                                   launcher) -> None:
    item = Item.objects.create(name="exported-widget")
    distinctive_pk = item.pk + 7_310_000_000
    env = _exporting_env(
        otlp_receiver, protocol,
        E2E_MYSQL_DATABASE=connection.settings_dict["NAME"],
        OTEL_EXPORTER_OTLP_HEADERS="x-tenant=shop,authorization=Bearer%20t0ken",
        E2E_SERVICE_NAME="shop",
    )
    with launcher(env) as server:
        correlation_id = str(uuid.uuid4())
        status, headers, _ = server.get(f"/items/{distinctive_pk}/", {"X-Correlation-ID": correlation_id})
        assert status == 200, server.logs()
        assert headers["x-correlation-id"] == correlation_id
        raw_id = str(uuid.uuid4())
        status, headers, _ = server.get("/raw-sql/", {"X-Correlation-ID": raw_id})
        assert status == 200 and headers["x-correlation-id"] == raw_id, server.logs()

        spans = _trace(otlp_receiver, correlation_id)
        raw_spans = _trace(otlp_receiver, raw_id)

    assert {s.transport for s in otlp_receiver.spans} == {"grpc" if protocol == "grpc" else "http"}
    (server_span,) = [s for s in spans if s.kind == SERVER]
    db_spans = [s for s in spans if s.kind == CLIENT and s.attributes.get("db.system") == "mysql"]
    # the first request of a process also carries Django's connection set-up queries
    assert all(s.parent_span_id == server_span.span_id for s in db_spans)
    (db_span,) = [s for s in db_spans if "testapp_item" in s.attributes["db.statement"]]
    assert server_span.is_root
    assert server_span.attributes.get("http.route") == "items/<int:pk>/"
    assert db_span.parent_span_id == server_span.span_id
    statement = db_span.attributes["db.statement"]
    assert "testapp_item" in statement and "%s" in statement
    assert str(distinctive_pk) not in statement
    assert all(str(distinctive_pk) not in str(v) for v in db_span.attributes.values())

    (raw_db,) = [s for s in raw_spans if s.kind == CLIENT and "testapp_item" in s.attributes["db.statement"]]
    assert raw_db.parent_span_id == next(s for s in raw_spans if s.kind == SERVER).span_id
    assert "testapp_item" in raw_db.attributes["db.statement"]
    everything = repr([(s.attributes, s.events) for s in otlp_receiver.spans])
    assert "hunter2-literal" not in everything and "hunter2" not in everything

    resource = server_span.resource
    assert resource["service.name"] == "shop"
    assert resource["deployment.environment"] == "development"
    assert resource["host.name"] and isinstance(resource["process.pid"], int)
    assert db_span.resource["service.name"] == "shop"

    requests = otlp_receiver.requests
    assert requests and all(r.headers.get("x-tenant") == "shop" for r in requests)
    assert all(r.headers.get("authorization") == "Bearer t0ken" for r in requests)


@pytest.mark.slow
def test_e2e_otel_dict_endpoint_and_headers_win_over_environment(otlp_receiver: OTLPReceiver) -> None:
    """OTLP_ENDPOINT/OTLP_HEADERS in the settings dict beat OTEL_EXPORTER_OTLP_* (no DB needed)."""
    env = _exporting_env(
        otlp_receiver, "http/protobuf",
        OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9",  # wrong on purpose: the dict wins
        OTEL_EXPORTER_OTLP_HEADERS="x-tenant=from-env",
        E2E_TEST_DB="sqlite",
        E2E_TEST_OTEL_OVERRIDES=f'{{"OTLP_ENDPOINT": "{otlp_receiver.http_base_endpoint}", '
                                f'"OTLP_HEADERS": {{"x-tenant": "from-settings"}}, "RECORDS_ENABLED": false}}',
    )
    with gunicorn(env) as server:
        correlation_id = str(uuid.uuid4())
        status, headers, _ = server.get("/ping/", {"X-Correlation-ID": correlation_id})
        assert status == 200 and headers["x-correlation-id"] == correlation_id, server.logs()
        (span,) = _trace(otlp_receiver, correlation_id, with_query=False)
    assert span.kind == SERVER and span.transport == "http"
    assert {r.headers.get("x-tenant") for r in otlp_receiver.requests} == {"from-settings"}


def test_spans_dropped_by_a_full_export_queue_are_counted() -> None:
    """The SDK drops silently when its queue is full; we count every such span."""
    import threading

    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    from e2e_otel.exporters import CountingBatchSpanProcessor

    release = threading.Event()

    class StuckExporter(SpanExporter):
        def export(self, spans):  # type: ignore[no-untyped-def]
            release.wait(10)
            return SpanExportResult.SUCCESS

    drops: list[int] = []
    processor = CountingBatchSpanProcessor(StuckExporter(), lambda: drops.append(1))
    assert processor.counting
    capacity = processor._capacity
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("t")
    for _ in range(capacity + 700):  # the worker takes one batch (≤ 512) and then blocks in export
        tracer.start_span("s").end()
    try:
        assert processor.dropped >= 700 - 512 and processor.dropped == len(drops)
    finally:
        release.set()
        provider.shutdown()


def test_counting_processor_queues_exactly_the_sampled_spans() -> None:
    """Unsampled (record-only) spans never reach the export queue, with or without counting."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    from e2e_otel.exporters import CountingBatchSpanProcessor
    from e2e_otel.sampling import build_sampler

    class NullExporter(SpanExporter):
        def export(self, spans):  # type: ignore[no-untyped-def]
            return SpanExportResult.SUCCESS

    for counting in (True, False):
        processor = CountingBatchSpanProcessor(NullExporter())
        assert processor.counting
        queue = processor._queue
        processor.counting = counting  # False: what an SDK with renamed internals gets
        tracer = TracerProvider(sampler=build_sampler(0.5, record_unsampled=True)).get_tracer("t")
        spans = [tracer.start_span("s") for _ in range(200)]
        sampled = sum(span.get_span_context().trace_flags.sampled for span in spans)
        assert 0 < sampled < 200
        for span in spans:
            span.end()
            processor.on_end(span)
        assert len(queue) == sampled and processor.dropped == 0, counting
        processor.shutdown()


def test_exported_status_description_and_link_attributes_are_scrubbed() -> None:
    """The SDK copies an escaping exception's message into the status description."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import Link, StatusCode

    from e2e_otel.exporters import SanitizingSpanExporter
    from e2e_otel.sanitize import Sanitizer

    sink = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(SanitizingSpanExporter(sink, Sanitizer())))
    tracer = provider.get_tracer("t")
    other = tracer.start_span("other")
    other.end()
    with (
        pytest.raises(RuntimeError),
        tracer.start_as_current_span("s", links=[Link(other.get_span_context(), {"api_key": "k-123"})]),
    ):
        raise RuntimeError("login failed password=hunter2 Authorization: Bearer abc.def.ghi")
    exported = next(s for s in sink.get_finished_spans() if s.name == "s")
    assert exported.status.status_code is StatusCode.ERROR
    text = repr((exported.status.description, [e.attributes for e in exported.events],
                 [link.attributes for link in exported.links]))
    assert "hunter2" not in text and "abc.def.ghi" not in text and "k-123" not in text
    assert exported.status.description.startswith("RuntimeError: login failed password=")


def test_queue_full_warnings_are_rate_limited() -> None:
    import logging

    from e2e_otel.exporters import QueueFullLogFilter

    log_filter = QueueFullLogFilter(interval=60)
    record = logging.LogRecord("opentelemetry.sdk._shared_internal", logging.WARNING, "", 0,
                               "Queue full, dropping %s.", ("span",), None)
    other = logging.LogRecord("x", logging.WARNING, "", 0, "something else", None, None)
    assert [log_filter.filter(record) for _ in range(5)] == [True, False, False, False, False]
    assert log_filter.suppressed == 4 and log_filter.filter(other)


# --- every exported field is scrubbed, on the same path the record writer uses ------------------------


def _sanitizing_provider(resource=None):  # type: ignore[no-untyped-def]
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from e2e_otel.exporters import SanitizingSpanExporter
    from e2e_otel.sanitize import Sanitizer

    sink = InMemorySpanExporter()
    exporter = SanitizingSpanExporter(sink, Sanitizer())
    provider = TracerProvider(resource=resource) if resource is not None else TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter, sink


def test_failed_workflow_message_in_an_event_attribute_is_scrubbed() -> None:
    """Issue #18.4: ``fail_workflow(..., "... api_key=...")`` put the raw message in the status event."""
    from e2e_otel.spans_to_records import ATTR_WORKFLOW_MESSAGE, ATTR_WORKFLOW_STATUS, EVENT_WORKFLOW_STATUS

    provider, _, sink = _sanitizing_provider()
    span = provider.get_tracer("t").start_span("workflow")
    span.add_event(EVENT_WORKFLOW_STATUS, {ATTR_WORKFLOW_STATUS: "failed",
                                           ATTR_WORKFLOW_MESSAGE: "charge refused api_key=sk_live_4242 by PSP",
                                           "e2e.workflow.metadata.note": "retry with token: abc123xyz"})
    span.end()
    (exported,) = sink.get_finished_spans()
    attributes = exported.events[0].attributes
    assert "sk_live_4242" not in repr(attributes) and "abc123xyz" not in repr(attributes)
    assert attributes[ATTR_WORKFLOW_MESSAGE].startswith("charge refused api_key=")
    assert attributes[ATTR_WORKFLOW_STATUS] == "failed"


def test_database_error_values_are_masked_in_exception_events_and_status() -> None:
    import pymysql

    provider, _, sink = _sanitizing_provider()
    error = pymysql.err.IntegrityError(1062, "Duplicate entry 'alice@example.org' for key 'email'")
    with pytest.raises(pymysql.err.IntegrityError), provider.get_tracer("t").start_as_current_span("INSERT"):
        raise error
    (exported,) = sink.get_finished_spans()
    everything = repr((exported.status.description, [dict(e.attributes) for e in exported.events]))
    assert "alice@example.org" not in everything
    assert "Duplicate entry '?' for key 'email'" in exported.status.description
    assert "Duplicate entry '?' for key 'email'" in exported.events[0].attributes["exception.stacktrace"]


def test_resource_attributes_are_scrubbed_once_per_resource_object() -> None:
    from opentelemetry.sdk.resources import Resource

    from e2e_otel.sanitize import MASK

    resource = Resource({"service.name": "shop", "app.api_token": "t-123",
                         "browser.url": "https://shop.example/reset?api_token=t-456&x=1"})
    provider, exporter, sink = _sanitizing_provider(resource)
    tracer = provider.get_tracer("t")
    for _ in range(3):
        tracer.start_span("s").end()
    first, *rest = sink.get_finished_spans()
    assert first.resource.attributes["app.api_token"] == MASK
    assert "t-456" not in first.resource.attributes["browser.url"]
    assert first.resource.attributes["service.name"] == "shop"
    assert all(span.resource is first.resource for span in rest)  # one cleaned copy, reused
    assert len(exporter._resources) == 1
    clean = Resource({"service.name": "clean"})
    provider2, _, sink2 = _sanitizing_provider(clean)
    provider2.get_tracer("t").start_span("s").end()
    assert sink2.get_finished_spans()[0].resource is clean  # nothing to scrub: exported as is


def test_browser_resource_and_scope_attributes_are_scrubbed() -> None:
    """Ingested spans carry the browser's resource: ``api_token=…`` came through from a browser."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
    from opentelemetry.proto.resource.v1.resource_pb2 import Resource
    from opentelemetry.proto.trace.v1 import trace_pb2
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from e2e_otel.exporters import SanitizingSpanExporter
    from e2e_otel.otlp_decode import to_readable_spans
    from e2e_otel.sanitize import Sanitizer

    def kv(key: str, value: str) -> KeyValue:
        return KeyValue(key=key, value=AnyValue(string_value=value))

    now = time.time_ns()
    span = trace_pb2.Span(trace_id=b"\x01" * 16, span_id=b"\x02" * 8, name="GET /reset?api_token=tok-span",
                          start_time_unix_nano=now - 1000, end_time_unix_nano=now,
                          attributes=[kv("http.url", "https://shop.example/?session=tok-attr")])
    request = ExportTraceServiceRequest(resource_spans=[trace_pb2.ResourceSpans(
        resource=Resource(attributes=[kv("service.name", "shop-web"),
                                      kv("browser.page", "https://shop.example/?api_token=tok-resource"),
                                      kv("app.session_token", "tok-key")]),
        scope_spans=[trace_pb2.ScopeSpans(
            scope=InstrumentationScope(name="fetch", attributes=[kv("config", "password=tok-scope")]),
            spans=[span, span])],
    )])
    spans = to_readable_spans(request).spans
    assert "tok-resource" in repr(spans[0].resource.attributes)  # the decoder keeps them: export must scrub
    sink = InMemorySpanExporter()
    SanitizingSpanExporter(sink, Sanitizer()).export(spans)
    exported = sink.get_finished_spans()
    for item in exported:
        text = repr((item.name, dict(item.attributes), dict(item.resource.attributes),
                     dict(item.instrumentation_scope.attributes or {})))
        assert "tok-" not in text, text
        assert item.resource.attributes["service.name"] == "shop-web"
    assert exported[0].resource is exported[1].resource


def test_exported_attributes_equal_the_stored_scrubbing() -> None:
    """One path: what the exporter sends is exactly ``Sanitizer.clean_attributes``, the function the
    record writer stores (so export and storage cannot diverge)."""
    from e2e_otel.sanitize import Sanitizer

    attributes = {
        "db.system": "postgresql", "db.statement": "SELECT * FROM \"u\" WHERE email = 'a@b.c'",
        "http.url": "https://x.example/?token=abc", "custom.note": "password=hunter2", "user.password": "p",
        "tags": ("ok", "secret=s3"), "n": 5, "flag": True, "exception.message": "Duplicate entry 'v' for key 'k'",
    }
    provider, _, sink = _sanitizing_provider()
    provider.get_tracer("t").start_span("s", attributes=attributes).end()
    (exported,) = sink.get_finished_spans()
    assert dict(exported.attributes) == dict(Sanitizer().clean_attributes(attributes))
    text = repr(dict(exported.attributes))
    for secret in ("a@b.c", "abc", "hunter2", "'p'", "s3", "'v'"):
        assert secret not in text, secret


def test_clean_spans_are_exported_unchanged() -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from e2e_otel.exporters import SanitizingSpanExporter
    from e2e_otel.sanitize import Sanitizer

    raw = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(raw))
    with provider.get_tracer("t").start_as_current_span("GET /items", attributes={"http.route": "/items"}) as span:
        span.add_event("e", {"k": "v"})
    (ended,) = raw.get_finished_spans()
    sink = InMemorySpanExporter()
    SanitizingSpanExporter(sink, Sanitizer()).export([ended])
    assert sink.get_finished_spans()[0] is ended  # nothing copied when nothing needed scrubbing
