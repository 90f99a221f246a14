"""Browser span ingestion: OTLP/HTTP protobuf + JSON + gzip, and every rejection path."""

from __future__ import annotations

import base64
import gzip
import json
import random
import time
import uuid
from typing import Any

import pytest
from django.conf import settings
from django.test import Client, RequestFactory, override_settings
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1 import trace_pb2
from opentelemetry.trace import SpanKind, StatusCode

from e2e_otel.bootstrap import get_runtime
from e2e_otel.ingest import client_address, reset_rate_limits
from e2e_otel.models import ErrorLog, TraceStep, WorkflowSession
from e2e_otel.otlp_decode import OTLPValidationError, decode_json

URL = "/api/v1/debugging/otlp/v1/traces"
ORIGIN = "http://localhost:3000"
KEY = "test-ingest-key"
PB = "application/x-protobuf"
NS = 1_000_000_000


@pytest.fixture(autouse=True)
def _fresh_limits():
    reset_rate_limits()
    yield
    reset_rate_limits()


def e2e_settings(**changes: Any) -> override_settings:
    values = {**settings.E2E_OTEL, **changes}
    for key in [k for k, v in changes.items() if v is None]:
        values.pop(key)
    return override_settings(E2E_OTEL=values)


def kv(key: str, value: Any) -> KeyValue:
    if isinstance(value, bool):
        return KeyValue(key=key, value=AnyValue(bool_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    if isinstance(value, float):
        return KeyValue(key=key, value=AnyValue(double_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=value))


def browser_payload(trace_id: int, *, fetch_span_id: int | None = None, now_ns: int | None = None,
                    span_overrides: dict[str, Any] | None = None, extra_spans: int = 0) -> ExportTraceServiceRequest:
    """What the OTel JS web SDK sends: a documentLoad span and a fetch CLIENT span with an exception."""
    now_ns = now_ns or time.time_ns()
    tid = trace_id.to_bytes(16, "big")
    load_id = random.getrandbits(63) | 1
    fetch_id = fetch_span_id or (random.getrandbits(63) | 1)
    document_load = trace_pb2.Span(
        trace_id=tid, span_id=load_id.to_bytes(8, "big"), name="documentLoad",
        kind=trace_pb2.Span.SPAN_KIND_INTERNAL,
        start_time_unix_nano=now_ns - 2 * NS, end_time_unix_nano=now_ns - NS,
        attributes=[kv("http.url", "http://localhost:3000/checkout"), kv("http.user_agent", "Mozilla/5.0")],
        events=[trace_pb2.Span.Event(time_unix_nano=now_ns - 2 * NS + 1000, name="fetchStart")],
    )
    fetch = trace_pb2.Span(
        trace_id=tid, span_id=fetch_id.to_bytes(8, "big"), parent_span_id=load_id.to_bytes(8, "big"),
        name="HTTP POST", kind=trace_pb2.Span.SPAN_KIND_CLIENT,
        start_time_unix_nano=now_ns - NS, end_time_unix_nano=now_ns - NS // 2,
        attributes=[kv("http.method", "POST"), kv("http.status_code", 500), kv("component", "fetch")],
        status=trace_pb2.Status(code=trace_pb2.Status.STATUS_CODE_ERROR, message="server error"),
        events=[trace_pb2.Span.Event(
            time_unix_nano=now_ns - NS // 2, name="exception",
            attributes=[kv("exception.type", "TypeError"), kv("exception.message", "Failed to fetch"),
                        kv("exception.stacktrace", "TypeError: Failed to fetch\n    at checkout.js:10")])],
        links=[trace_pb2.Span.Link(trace_id=random.getrandbits(127).to_bytes(16, "big"),
                                   span_id=(random.getrandbits(63) | 1).to_bytes(8, "big"))],
    )
    for key, value in (span_overrides or {}).items():
        if key == "attributes":
            del fetch.attributes[:]
            fetch.attributes.extend(value)
        else:
            setattr(fetch, key, value)
    spans = [document_load, fetch]
    for index in range(extra_spans):
        extra = trace_pb2.Span()
        extra.CopyFrom(document_load)
        extra.span_id = (index + 10).to_bytes(8, "big")
        spans.append(extra)
    return ExportTraceServiceRequest(resource_spans=[trace_pb2.ResourceSpans(
        resource=Resource(attributes=[kv("service.name", "shop-web"), kv("telemetry.sdk.language", "webjs")]),
        scope_spans=[trace_pb2.ScopeSpans(
            scope=InstrumentationScope(name="@opentelemetry/instrumentation-fetch", version="0.57.0"),
            spans=spans)],
    )])


def to_otlp_json(message: ExportTraceServiceRequest) -> bytes:
    """OTLP/JSON: proto3 JSON with trace/span ids as hex instead of base64."""
    data = json_format.MessageToDict(message)
    for resource_spans in data["resourceSpans"]:
        for scope_spans in resource_spans["scopeSpans"]:
            for span in scope_spans["spans"]:
                for item in [span, *span.get("links", [])]:
                    for field in ("traceId", "spanId", "parentSpanId"):
                        if field in item:
                            item[field] = base64.b64decode(item[field]).hex()
    return json.dumps(data).encode()


def post(body: bytes, *, content_type: str = PB, key: str | None = KEY, origin: str | None = ORIGIN,
         **headers: str) -> Any:
    if key is not None:
        headers["X-E2E-Ingest-Key"] = key
    if origin is not None:
        headers["Origin"] = origin
    return Client().post(URL, data=body, content_type=content_type, headers=headers)


def frontend_spans(exporter: Any, trace_id: int) -> list[Any]:
    return [s for s in exporter.get_finished_spans()
            if s.context.trace_id == trace_id and (s.attributes or {}).get("e2e.layer") == "frontend"]


def new_trace_id() -> int:
    # Any 128-bit value, deliberately not RFC 4122-shaped (MariaDB's native UUID type would refuse it).
    return (random.getrandbits(127) | (1 << 100)) & ~(1 << 63)


# --- conversion (no database needed) -------------------------------------------------------------------


def test_protobuf_spans_are_converted_and_marked_frontend(spans):
    trace_id = new_trace_id()
    response = post(browser_payload(trace_id).SerializeToString())
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == PB
    assert response["Access-Control-Allow-Origin"] == ORIGIN
    parsed = ExportTraceServiceResponse.FromString(response.content)
    assert not parsed.HasField("partial_success")
    got = {s.name: s for s in frontend_spans(spans, trace_id)}
    assert set(got) == {"documentLoad", "HTTP POST"}
    fetch = got["HTTP POST"]
    assert fetch.kind == SpanKind.CLIENT
    assert fetch.status.status_code == StatusCode.ERROR
    assert fetch.status.description == "server error"
    assert fetch.parent.span_id == got["documentLoad"].context.span_id
    assert fetch.resource.attributes["service.name"] == "shop-web"
    assert fetch.instrumentation_scope.name == "@opentelemetry/instrumentation-fetch"
    assert fetch.attributes["http.status_code"] == 500
    assert [e.name for e in fetch.events] == ["exception"]
    assert fetch.events[0].attributes["exception.type"] == "TypeError"
    assert len(fetch.links) == 1
    assert fetch.end_time - fetch.start_time == NS // 2


def test_json_payload_with_hex_ids(spans):
    trace_id = new_trace_id()
    response = post(to_otlp_json(browser_payload(trace_id)), content_type="application/json")
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "application/json"
    assert json.loads(response.content) == {}
    assert len(frontend_spans(spans, trace_id)) == 2


def test_gzip_body(spans):
    trace_id = new_trace_id()
    body = gzip.compress(browser_payload(trace_id).SerializeToString())
    response = post(body, HTTP_CONTENT_ENCODING="gzip", **{"Content-Encoding": "gzip"})
    assert response.status_code == 200, response.content
    assert len(frontend_spans(spans, trace_id)) == 2


def test_long_string_values_are_truncated_and_reported(spans):
    trace_id = new_trace_id()
    payload = browser_payload(trace_id, span_overrides={"attributes": [kv("http.url", "x" * 5000)]})
    response = post(to_otlp_json(payload), content_type="application/json")
    assert response.status_code == 200, response.content
    body = json.loads(response.content)
    assert "truncated" in body["partialSuccess"]["errorMessage"]
    fetch = next(s for s in frontend_spans(spans, trace_id) if s.name == "HTTP POST")
    assert len(fetch.attributes["http.url"]) == 4096


def test_preflight_allowed_origin():
    response = Client().options(URL, headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST",
                                              "Access-Control-Request-Headers": "content-type,x-e2e-ingest-key"})
    assert response.status_code == 204
    assert response["Access-Control-Allow-Origin"] == ORIGIN
    allowed = {h.strip() for h in response["Access-Control-Allow-Headers"].split(",")}
    assert {"content-type", "traceparent", "tracestate", "baggage", "x-e2e-ingest-key"} <= allowed
    assert "POST" in response["Access-Control-Allow-Methods"]


def test_preflight_disallowed_origin():
    response = Client().options(URL, headers={"Origin": "https://evil.example"})
    assert response.status_code == 403
    assert not response.has_header("Access-Control-Allow-Origin")


def test_token_bucket_refills_and_bounds_clients():
    from e2e_otel.ratelimit import TokenBucketLimiter

    now = [1000.0]
    limiter = TokenBucketLimiter(rate_per_second=1.0, burst=5, max_clients=3, clock=lambda: now[0])
    assert [limiter.allow("a")[0] for _ in range(6)] == [True] * 5 + [False]
    assert limiter.allow("a") == (False, 1)
    now[0] += 1.0  # one token back per second
    assert limiter.allow("a") == (True, 0)
    assert limiter.allow("a")[0] is False
    now[0] += 3600.0  # an idle hour refills only up to the burst
    assert [limiter.allow("a")[0] for _ in range(6)] == [True] * 5 + [False]
    for client in ("b", "c", "d", "e"):
        limiter.allow(client)
    assert len(limiter) == 3  # least recently seen clients are forgotten
    with pytest.raises(ValueError):
        TokenBucketLimiter(rate_per_second=0, burst=1)
    with pytest.raises(ValueError):
        TokenBucketLimiter(rate_per_second=1, burst=0)


# --- rejections: right status, JSON error, nothing ingested -------------------------------------------------


def _assert_rejected(response: Any, status: int, exporter: Any, trace_id: int) -> dict[str, Any]:
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/json"
    body = json.loads(response.content)
    assert body["error"]
    assert frontend_spans(exporter, trace_id) == []
    return body


def test_disallowed_origin_is_rejected_without_cors_headers(spans):
    trace_id = new_trace_id()
    response = post(browser_payload(trace_id).SerializeToString(), origin="https://evil.example")
    _assert_rejected(response, 403, spans, trace_id)
    assert not response.has_header("Access-Control-Allow-Origin")


@pytest.mark.parametrize("key", [None, "wrong-key", ""])
def test_missing_or_wrong_key(spans, key):
    trace_id = new_trace_id()
    response = post(browser_payload(trace_id).SerializeToString(), key=key)
    _assert_rejected(response, 401, spans, trace_id)
    assert response["Access-Control-Allow-Origin"] == ORIGIN  # the browser may read the error


def test_no_ingest_key_configured_refuses_everyone(spans):
    trace_id = new_trace_id()
    with e2e_settings(INGEST_KEY=None):
        response = post(browser_payload(trace_id).SerializeToString())
    body = _assert_rejected(response, 403, spans, trace_id)
    assert "INGEST_KEY" in body["error"]


def test_body_too_large(spans):
    trace_id = new_trace_id()
    body = browser_payload(trace_id, extra_spans=40).SerializeToString()
    assert len(body) > 1024
    with e2e_settings(INGEST_MAX_BODY_BYTES=1024):
        response = post(body)
    _assert_rejected(response, 413, spans, trace_id)


def test_gzip_bomb(spans):
    trace_id = new_trace_id()
    bomb = gzip.compress(b"\0" * (8 * 1024 * 1024))
    assert len(bomb) < 64 * 1024
    response = post(bomb, **{"Content-Encoding": "gzip"})
    _assert_rejected(response, 413, spans, trace_id)


def test_invalid_gzip_and_unsupported_encoding(spans):
    trace_id = new_trace_id()
    _assert_rejected(post(b"not gzip at all", **{"Content-Encoding": "gzip"}), 400, spans, trace_id)
    _assert_rejected(post(b"x", **{"Content-Encoding": "br"}), 415, spans, trace_id)


def test_unsupported_content_type(spans):
    trace_id = new_trace_id()
    _assert_rejected(post(b"<xml/>", content_type="text/xml"), 415, spans, trace_id)


def test_rate_limit(spans):
    trace_id = new_trace_id()
    body = browser_payload(trace_id).SerializeToString()
    with e2e_settings(INGEST_RATE_LIMIT=2, INGEST_RATE_BURST=2):
        assert post(body).status_code == 200
        assert post(body).status_code == 200
        response = post(body)
    assert response.status_code == 429
    assert int(response["Retry-After"]) >= 1
    assert len(frontend_spans(spans, trace_id)) == 4  # two accepted requests only


def test_garbage_protobuf_and_json(spans):
    trace_id = new_trace_id()
    _assert_rejected(post(b"\xff\xff\xff\xff"), 400, spans, trace_id)
    _assert_rejected(post(b"{not json", content_type="application/json"), 400, spans, trace_id)
    _assert_rejected(post(b"[1, 2]", content_type="application/json"), 400, spans, trace_id)
    deep = b'{"resourceSpans": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    _assert_rejected(post(deep, content_type="application/json"), 400, spans, trace_id)


def _json_with(trace_id: int, mutate: Any) -> bytes:
    data = json.loads(to_otlp_json(browser_payload(trace_id)))
    mutate(data["resourceSpans"][0]["scopeSpans"][0]["spans"][1])
    return json.dumps(data).encode()


def test_invalid_hex_id_in_json(spans):
    trace_id = new_trace_id()
    body = _json_with(trace_id, lambda span: span.update(spanId="zz" * 8))
    result = _assert_rejected(post(body, content_type="application/json"), 400, spans, trace_id)
    assert any("spanId" in detail for detail in result["details"])


NOW = time.time_ns()


@pytest.mark.parametrize(("overrides", "fragment"), [
    ({"trace_id": bytes(16)}, "trace id must not be all zeros"),
    ({"trace_id": b"\x01" * 8}, "trace id must be 16 bytes"),
    ({"span_id": bytes(8)}, "span id must not be all zeros"),
    ({"span_id": b"\x01" * 4}, "span id must be 8 bytes"),
    ({"start_time_unix_nano": NOW, "end_time_unix_nano": NOW - NS}, "before startTimeUnixNano"),
    ({"start_time_unix_nano": NOW - 8 * 86_400 * NS, "end_time_unix_nano": NOW}, "older than"),
    ({"end_time_unix_nano": NOW + 2 * 86_400 * NS}, "in the future"),
    ({"start_time_unix_nano": 0}, "missing timestamp"),
    ({"attributes": [kv(f"a{i}", i) for i in range(129)]}, "129 attributes"),
    ({"attributes": [kv("k" * 129, "v")]}, "longer than 128"),
])
def test_invalid_span_rejects_whole_payload(spans, overrides, fragment):
    trace_id = new_trace_id()
    payload = browser_payload(trace_id, span_overrides=overrides)
    body = _assert_rejected(post(payload.SerializeToString()), 400, spans, trace_id)
    assert any(fragment in detail for detail in body["details"]), body
    # the valid documentLoad span of the same payload was not ingested either
    assert [s for s in spans.get_finished_spans() if s.name == "documentLoad"
            and s.context.trace_id == trace_id] == []


def test_too_many_spans(spans):
    trace_id = new_trace_id()
    payload = browser_payload(trace_id, extra_spans=999)  # 1001 spans
    body = _assert_rejected(post(payload.SerializeToString()), 400, spans, trace_id)
    assert "too many spans" in body["error"]


def test_csrf_exempt(spans):
    trace_id = new_trace_id()
    response = Client(enforce_csrf_checks=True).post(
        URL, data=browser_payload(trace_id).SerializeToString(), content_type=PB,
        headers={"X-E2E-Ingest-Key": KEY, "Origin": ORIGIN})
    assert response.status_code == 200
    assert len(frontend_spans(spans, trace_id)) == 2


def test_get_is_not_allowed():
    response = Client().get(URL, headers={"Origin": ORIGIN})
    assert response.status_code == 405


# --- records: frontend steps join the server request's workflow (records core + MariaDB) ---------------


def _session_for(trace_id: int) -> WorkflowSession | None:
    return WorkflowSession.objects.filter(correlation_id=uuid.UUID(int=trace_id)).first()


@pytest.mark.mysql
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("encoding", ["protobuf", "json", "gzip"])
def test_browser_spans_become_frontend_steps_of_the_server_workflow(encoding):
    runtime = get_runtime()
    assert runtime is not None
    trace_id = new_trace_id()
    fetch_span_id = random.getrandbits(63) | 1
    traceparent = f"00-{trace_id:032x}-{fetch_span_id:016x}-01"
    assert Client().get("/ping/", headers={"traceparent": traceparent}).status_code == 200

    payload = browser_payload(trace_id, fetch_span_id=fetch_span_id)
    if encoding == "json":
        response = post(to_otlp_json(payload), content_type="application/json")
    elif encoding == "gzip":
        response = post(gzip.compress(payload.SerializeToString()), **{"Content-Encoding": "gzip"})
    else:
        response = post(payload.SerializeToString())
    assert response.status_code == 200, response.content
    assert runtime.force_flush(10)

    session = _session_for(trace_id)
    assert session is not None
    steps = list(TraceStep.objects.filter(workflow_session=session).order_by("start_time", "id"))
    layers = [step.layer for step in steps]
    assert layers.count("frontend") == 2
    assert "api" in layers
    assert layers[0] == "frontend"  # documentLoad started first
    api_step = next(step for step in steps if step.layer == "api")
    assert api_step.parent_span_id == f"{fetch_span_id:016x}"


_CONTROL_ATTRIBUTES = {
    "e2e.workflow.status": "failed", "e2e.workflow.message": "closed by a stranger",
    "e2e.workflow.type": "pwned", "e2e.workflow.user": "attacker", "e2e.workflow.metadata.k": "v",
    "e2e.metadata.note": "injected", "e2e.cache.hit": True,
    "e2e.component": "CheckoutButton", "e2e.operation": "click",
}


def _hostile_payload(trace_id: int) -> ExportTraceServiceRequest:
    """A browser that names someone else's trace and speaks e2e-otel's control vocabulary."""
    now_ns = time.time_ns()
    span = trace_pb2.Span(
        trace_id=trace_id.to_bytes(16, "big"), span_id=(random.getrandbits(63) | 1).to_bytes(8, "big"),
        name="click checkout", kind=trace_pb2.Span.SPAN_KIND_INTERNAL,
        start_time_unix_nano=now_ns - NS, end_time_unix_nano=now_ns,
        attributes=[kv(key, value) for key, value in _CONTROL_ATTRIBUTES.items()],
        events=[
            trace_pb2.Span.Event(time_unix_nano=now_ns, name="e2e.workflow.status", attributes=[
                kv("e2e.workflow.status", "failed"), kv("e2e.workflow.metadata.k", "v")]),
            trace_pb2.Span.Event(time_unix_nano=now_ns, name="e2e.metric", attributes=[
                kv("e2e.metric.name", "render_time"), kv("e2e.metric.value", 99999.0)]),
            trace_pb2.Span.Event(time_unix_nano=now_ns, name="click", attributes=[
                kv("e2e.metadata.note", "injected"), kv("target", "button")]),
        ],
    )
    hidden = trace_pb2.Span(  # e2e.internal would hide the browser's steps from the records
        trace_id=span.trace_id, span_id=(random.getrandbits(63) | 1).to_bytes(8, "big"), name="render",
        start_time_unix_nano=now_ns - NS, end_time_unix_nano=now_ns - NS // 2,
        attributes=[kv("e2e.internal", "1"), kv("e2e.component", "Cart"), kv("e2e.ingested", False)],
    )
    return ExportTraceServiceRequest(resource_spans=[trace_pb2.ResourceSpans(
        resource=Resource(attributes=[kv("service.name", "shop-web"), kv("telemetry.sdk.language", "webjs")]),
        scope_spans=[trace_pb2.ScopeSpans(scope=InstrumentationScope(name="user-interaction"),
                                          spans=[span, hidden])],
    )])


def test_browser_cannot_send_e2e_control_attributes_or_events(spans):
    trace_id = new_trace_id()
    assert post(_hostile_payload(trace_id).SerializeToString()).status_code == 200
    span, hidden = sorted(frontend_spans(spans, trace_id), key=lambda s: s.name)
    assert {k for k in span.attributes if k.startswith("e2e.")} == {
        "e2e.layer", "e2e.component", "e2e.operation", "e2e.ingested"}
    # the ingestion marker is ours: a browser cannot unset it
    assert dict(hidden.attributes) == {"e2e.component": "Cart", "e2e.layer": "frontend", "e2e.ingested": True}
    assert [event.name for event in span.events] == ["click"]
    assert dict(span.events[0].attributes) == {"target": "button"}


@pytest.mark.mysql
@pytest.mark.django_db(transaction=True)
def test_browser_cannot_close_or_relabel_another_session():
    from e2e_otel.models import PerformanceSnapshot

    runtime = get_runtime()
    assert runtime is not None
    trace_id = new_trace_id()
    traceparent = f"00-{trace_id:032x}-{random.getrandbits(63) | 1:016x}-01"
    response = Client().get("/ping/", headers={"traceparent": traceparent, "baggage": "e2e.workflow=checkout"})
    assert response.status_code == 200
    assert post(_hostile_payload(trace_id).SerializeToString()).status_code == 200
    assert runtime.force_flush(10)
    session = _session_for(trace_id)
    assert session is not None
    assert (session.status, session.workflow_type, session.workflow_type_source) == ("completed", "checkout", "baggage")
    assert not session.status_explicit and session.user_id == ""
    assert "note" not in session.metadata and "k" not in session.metadata
    assert "status_message" not in session.metadata
    steps = list(TraceStep.objects.filter(workflow_session=session).order_by("start_time"))
    assert sorted((step.layer, step.component) for step in steps) == [
        ("api", "/ping/"), ("frontend", "Cart"), ("frontend", "CheckoutButton")]
    steps = [step for step in steps if step.component == "CheckoutButton"]
    assert "note" not in steps[0].metadata
    assert not PerformanceSnapshot.objects.filter(correlation_id=uuid.UUID(int=trace_id)).exists()


@pytest.mark.mysql
@pytest.mark.django_db(transaction=True)
def test_frontend_steps_never_set_the_workflow_status():
    """Defence in depth below the decoder: a frontend-layer span's explicit status is ignored."""
    from opentelemetry.sdk.resources import Resource as SdkResource
    from opentelemetry.sdk.trace import Event, ReadableSpan
    from opentelemetry.trace import SpanContext, TraceFlags

    runtime = get_runtime()
    assert runtime is not None
    trace_id = new_trace_id()
    assert Client().get("/ping/", headers={
        "traceparent": f"00-{trace_id:032x}-{random.getrandbits(63) | 1:016x}-01"}).status_code == 200
    now = time.time_ns()
    browser = ReadableSpan(
        name="click", context=SpanContext(trace_id, random.getrandbits(63) | 1, False, TraceFlags(1)),
        resource=SdkResource.create({"telemetry.sdk.language": "webjs"}),
        attributes={"e2e.layer": "frontend", "e2e.workflow.status": "failed"},
        events=(Event("e2e.workflow.status", {"e2e.workflow.status": "failed"}, now),),
        start_time=now - NS, end_time=now,
    )
    runtime.ingest_spans([browser])
    assert runtime.force_flush(10)
    session = _session_for(trace_id)
    assert session is not None and session.status == "completed" and not session.status_explicit


@pytest.mark.mysql
@pytest.mark.django_db(transaction=True)
def test_rejected_payload_stores_nothing():
    runtime = get_runtime()
    assert runtime is not None
    trace_id = new_trace_id()
    payload = browser_payload(trace_id, span_overrides={"span_id": bytes(8)})
    assert post(payload.SerializeToString()).status_code == 400
    assert runtime.force_flush(10)
    assert _session_for(trace_id) is None
    assert not TraceStep.objects.filter(correlation_id=uuid.UUID(int=trace_id)).exists()


# --- over real HTTP: a gunicorn server forwards browser spans to the collector and records them -------


@pytest.mark.slow
@pytest.mark.mysql
@pytest.mark.django_db(transaction=True)
def test_gunicorn_forwards_browser_spans_to_the_exporter_and_records(otlp_receiver):
    import urllib.request

    from django.db import connection

    from tests.servers import gunicorn, subprocess_env

    env = subprocess_env({
        "DJANGO_SETTINGS_MODULE": "tests.settings_export",
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_receiver.http_base_endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "E2E_MYSQL_DATABASE": connection.settings_dict["NAME"],
    })
    trace_id = new_trace_id()
    fetch_span_id = random.getrandbits(63) | 1
    with gunicorn(env) as server:
        status, _, _ = server.get("/ping/", {"traceparent": f"00-{trace_id:032x}-{fetch_span_id:016x}-01"})
        assert status == 200, server.logs()
        body = gzip.compress(browser_payload(trace_id, fetch_span_id=fetch_span_id).SerializeToString())
        request = urllib.request.Request(server.base_url + URL, data=body, method="POST", headers={
            "Content-Type": PB, "Content-Encoding": "gzip", "Origin": ORIGIN, "X-E2E-Ingest-Key": KEY})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200
            assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
            ExportTraceServiceResponse.FromString(response.read())

        trace_hex = f"{trace_id:032x}"
        otlp_receiver.wait_for(
            lambda spans: sum(1 for s in spans if s.trace_id == trace_hex) >= 3, timeout=15)
        received = otlp_receiver.spans_for_trace(trace_hex)
        browser = [s for s in received if s.attributes.get("e2e.layer") == "frontend"]
        assert {s.name for s in browser} == {"documentLoad", "HTTP POST"}
        assert all(s.resource.get("service.name") == "shop-web" for s in browser)
        server_span = next(s for s in received if s.kind == 2)
        assert server_span.parent_span_id == f"{fetch_span_id:016x}"
        # the ingest request itself is traced too, tagged so it can be told apart
        assert any(s.attributes.get("e2e.internal") == "ingest" for s in otlp_receiver.spans)

        deadline = time.monotonic() + 15
        layers: list[str] = []
        while time.monotonic() < deadline:
            layers = list(TraceStep.objects.filter(correlation_id=uuid.UUID(int=trace_id))
                          .values_list("layer", flat=True))
            if layers.count("frontend") == 2 and "api" in layers:
                break
            time.sleep(0.2)
        assert layers.count("frontend") == 2 and "api" in layers, (layers, server.logs())


# --- what one request may store is bounded (the ingest key ships in browser JS, it is no secret) ---------


def _exception_spans(trace_id: int, count: int, per_span: int, error_prefix: str) -> ExportTraceServiceRequest:
    now_ns = time.time_ns()
    made_up = []
    for index in range(count):
        made_up.append(trace_pb2.Span(
            trace_id=trace_id.to_bytes(16, "big"), span_id=(index + 1).to_bytes(8, "big"), name=f"s{index}",
            start_time_unix_nano=now_ns - NS, end_time_unix_nano=now_ns,
            events=[trace_pb2.Span.Event(time_unix_nano=now_ns, name="exception", attributes=[
                kv("exception.type", f"{error_prefix}{index}x{k}"), kv("exception.message", "made up")])
                for k in range(per_span)]))
    return ExportTraceServiceRequest(resource_spans=[trace_pb2.ResourceSpans(
        resource=Resource(attributes=[kv("service.name", "shop-web")]),
        scope_spans=[trace_pb2.ScopeSpans(spans=made_up)])])


def _exceptions(exported: list[Any]) -> list[str]:
    return [e.attributes["exception.type"] for s in exported for e in s.events if e.name == "exception"]


def test_exception_events_are_capped_per_request_and_reported(spans):
    trace_id = new_trace_id()
    response = post(_exception_spans(trace_id, count=30, per_span=2, error_prefix="Fake").SerializeToString())
    assert response.status_code == 200, response.content
    partial = ExportTraceServiceResponse.FromString(response.content).partial_success
    assert partial.rejected_spans == 0
    assert "40 exception event(s) over the limit of 20 per request were dropped" in partial.error_message
    exported = frontend_spans(spans, trace_id)
    assert len(exported) == 30  # every span is kept, only the surplus exception events go
    assert _exceptions(exported) == [f"Fake{i}x{k}" for i in range(10) for k in range(2)]

    other = new_trace_id()
    with e2e_settings(INGEST_MAX_EXCEPTIONS=0):
        response = post(to_otlp_json(_exception_spans(other, count=2, per_span=1, error_prefix="F")),
                        content_type="application/json")
    assert "2 exception event(s) over the limit of 0" in json.loads(response.content)["partialSuccess"]["errorMessage"]
    assert _exceptions(frontend_spans(spans, other)) == []


@pytest.mark.mysql
@pytest.mark.django_db(transaction=True)
def test_one_request_cannot_open_more_error_groups_than_the_cap():
    runtime = get_runtime()
    assert runtime is not None
    prefix = f"Flood{uuid.uuid4().hex[:8]}_"
    payload = _exception_spans(new_trace_id(), count=100, per_span=8, error_prefix=prefix)  # 800 made-up types
    assert post(payload.SerializeToString()).status_code == 200
    assert runtime.force_flush(10)
    groups = ErrorLog.objects.filter(error_type__startswith=prefix, resolved=False)
    assert groups.count() == 20


def test_browser_span_cap_is_512_by_default(spans):
    trace_id = new_trace_id()
    too_many = browser_payload(trace_id, extra_spans=511).SerializeToString()  # 513 spans
    body = _assert_rejected(post(too_many), 400, spans, trace_id)
    assert body["error"] == "too many spans in one request: 513 (max 512)"
    assert post(browser_payload(trace_id, extra_spans=510).SerializeToString()).status_code == 200
    assert len(frontend_spans(spans, trace_id)) == 512
    with e2e_settings(INGEST_MAX_SPANS=1000):
        assert post(too_many).status_code == 200


def test_resource_attributes_are_short_and_few_but_service_name_stays(spans):
    trace_id = new_trace_id()
    payload = browser_payload(trace_id)
    resource = payload.resource_spans[0].resource
    del resource.attributes[:]
    resource.attributes.extend([kv(f"r{i}", "v" * 300) for i in range(40)] + [kv("service.name", "shop-web")])
    response = post(payload.SerializeToString())
    assert response.status_code == 200, response.content
    message = ExportTraceServiceResponse.FromString(response.content).partial_success.error_message
    assert "9 resource attribute(s) over the limit of 32 were dropped" in message
    assert "attribute value(s) longer than the limit were truncated" in message
    attributes = dict(frontend_spans(spans, trace_id)[0].resource.attributes)
    assert len(attributes) == 32
    assert attributes["service.name"] == "shop-web"
    assert list(attributes)[1:] == [f"r{i}" for i in range(31)]
    assert {len(value) for key, value in attributes.items() if key != "service.name"} == {128}


# --- decode memory: gzip ratio, decompressed size, early span count ----------------------------------------


def _empty_spans_json(count: int) -> bytes:
    return json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [{}] * count}]}]}).encode()


def test_gzip_ratio_bomb_is_refused_with_a_clear_error(spans):
    trace_id = new_trace_id()
    raw = _empty_spans_json(1_000_000)  # ~4 MB of JSON
    bomb = gzip.compress(raw, 9)
    assert len(bomb) < 8 * 1024 and len(raw) > 3_900_000
    body = _assert_rejected(post(bomb, content_type="application/json", **{"Content-Encoding": "gzip"}),
                            413, spans, trace_id)
    assert "compression ratio above 50:1 is refused" in body["error"]
    # A tiny but very repetitive batch (under 64 KiB decompressed) is still fine.
    small = browser_payload(trace_id, span_overrides={
        "attributes": [kv(f"a{i}", "x" * 4000) for i in range(15)]}).SerializeToString()
    assert 50 * len(gzip.compress(small)) < len(small) < 64 * 1024
    assert post(gzip.compress(small), **{"Content-Encoding": "gzip"}).status_code == 200


def test_decompressed_size_cap_defaults_to_one_mib(spans):
    trace_id = new_trace_id()
    rng = random.Random(7)
    noise = "".join(rng.choice("acgt") for _ in range(1_100_000))  # ~4:1, well under the ratio cap
    payload = browser_payload(trace_id, span_overrides={"name": noise})
    body = gzip.compress(to_otlp_json(payload))
    assert len(body) < 512 * 1024
    error = _assert_rejected(post(body, content_type="application/json", **{"Content-Encoding": "gzip"}),
                             413, spans, trace_id)["error"]
    assert error == "decompressed body exceeds the limit of 1048576 bytes"


def test_json_spans_are_counted_before_any_protobuf_is_built():
    # 600 spans that protobuf parsing would refuse: the count must answer first.
    body = json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [{"name": 5}] * 600}]}]}).encode()
    with pytest.raises(OTLPValidationError, match=r"too many spans in one request: 600 \(max 512\)"):
        decode_json(body, max_spans=512)
    with pytest.raises(OTLPValidationError, match="does not match the OTLP trace JSON schema"):
        decode_json(body, max_spans=600)
    response = post(body, content_type="application/json")
    assert response.status_code == 400
    assert json.loads(response.content)["error"] == "too many spans in one request: 600 (max 512)"


# --- rate-limit key behind reverse proxies -----------------------------------------------------------------


@pytest.mark.parametrize(("forwarded", "trusted", "expected"), [
    ("203.0.113.7", 0, "10.0.0.1"),  # default: X-Forwarded-For is ignored
    ("203.0.113.7", 1, "203.0.113.7"),
    ("6.6.6.6, 203.0.113.7", 1, "203.0.113.7"),  # the left entry is whatever the client sent
    ("6.6.6.6, 203.0.113.7, 10.1.1.1", 2, "203.0.113.7"),
    (" 2001:DB8::1 ", 1, "2001:db8::1"),
    ("203.0.113.7", 2, "10.0.0.1"),  # fewer entries than proxies
    ("not-an-ip", 1, "10.0.0.1"),
    ("6.6.6.6, 203.0.113.7:8080", 1, "10.0.0.1"),
    ("", 1, "10.0.0.1"),
    (None, 1, "10.0.0.1"),
])
def test_client_address(forwarded, trusted, expected):
    headers = {"X-Forwarded-For": forwarded} if forwarded is not None else {}
    request = RequestFactory().post(URL, REMOTE_ADDR="10.0.0.1", headers=headers)
    assert client_address(request, trusted) == expected


def test_rate_limit_per_forwarded_client_behind_a_proxy(spans):
    body = browser_payload(new_trace_id()).SerializeToString()

    def status(forwarded: str) -> int:
        return post(body, **{"X-Forwarded-For": forwarded}).status_code

    with e2e_settings(INGEST_RATE_LIMIT=1, INGEST_RATE_BURST=1, INGEST_TRUSTED_PROXIES=1):
        assert status("198.51.100.1") == 200
        assert status("198.51.100.2") == 200  # another browser behind the same proxy: own bucket
        assert status("1.2.3.4, 198.51.100.1") == 429  # spoofed left entry does not buy a new bucket
        assert status("garbage") == 200  # falls back to REMOTE_ADDR (the proxy): its own bucket
        assert status("also garbage") == 429
    reset_rate_limits()
    with e2e_settings(INGEST_RATE_LIMIT=1, INGEST_RATE_BURST=1):  # no trusted proxy: all share REMOTE_ADDR
        assert status("198.51.100.1") == 200
        assert status("198.51.100.2") == 429
