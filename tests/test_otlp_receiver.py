"""Tests for e2e_otel.testing.otlp_receiver using the real OTLP SDK exporters."""

from __future__ import annotations

import gzip
import json
import os
import sys
import time
import urllib.error
import urllib.request

import pytest

# The project may not be installed in the venv; make the repo root importable.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as GrpcSpanExporter,
)
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpSpanExporter,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode, format_span_id, format_trace_id

from e2e_otel.testing import pytest_plugin
from e2e_otel.testing.otlp_receiver import OTLPReceiver, ReceivedSpan, parse_otlp_json

otlp_receiver = pytest_plugin.otlp_receiver  # re-export the fixture for this module

# OTLP wire enum values (differ from the Python API enums).
OTLP_KIND_INTERNAL = 1
OTLP_KIND_SERVER = 2
OTLP_KIND_CLIENT = 3
OTLP_STATUS_ERROR = 2


# --------------------------------------------------------------------------- #
# helpers
# --------------------------------------------------------------------------- #


def _provider(exporter: SpanExporter, service: str) -> TracerProvider:
    provider = TracerProvider(resource=Resource.create({"service.name": service}), shutdown_on_exit=False)
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=60_000))
    return provider


def _emit_sample_trace(provider: TracerProvider) -> dict[str, object]:
    """Create parent/child/error spans; return their local span contexts."""
    tracer = provider.get_tracer("e2e-otel-tests", "1.2.3")
    with tracer.start_as_current_span("GET /orders", kind=SpanKind.SERVER) as parent:
        parent.set_attribute("http.request.method", "GET")
        parent.set_attribute("http.response.status_code", 200)
        parent.set_attribute("ratio", 0.5)
        parent.set_attribute("cached", True)
        parent.set_attribute("tags", ["a", "b"])
        parent.set_attribute("ids", [1, 2, 3])
        with tracer.start_as_current_span("SELECT orders", kind=SpanKind.CLIENT) as child:
            child.set_attribute("db.system", "mysql")
            child.add_event("rows.fetched", {"count": 7})
        with tracer.start_as_current_span("boom") as failing:
            try:
                raise ValueError("bad order id")
            except ValueError as exc:
                failing.record_exception(exc)
                failing.set_status(Status(StatusCode.ERROR, "bad order id"))
    return {
        "parent": parent.get_span_context(),
        "child": child.get_span_context(),
        "failing": failing.get_span_context(),
    }


def _assert_sample_trace(
    spans: list[ReceivedSpan], ctxs: dict[str, object], transport: str, service: str
) -> None:
    by_name = {s.name: s for s in spans}
    assert set(by_name) == {"GET /orders", "SELECT orders", "boom"}
    parent, child, failing = by_name["GET /orders"], by_name["SELECT orders"], by_name["boom"]
    trace_id = format_trace_id(ctxs["parent"].trace_id)  # type: ignore[attr-defined]

    for span in spans:
        assert span.transport == transport
        assert span.trace_id == trace_id
        assert len(span.trace_id) == 32 and len(span.span_id) == 16
        assert span.resource["service.name"] == service
        assert span.scope_name == "e2e-otel-tests"
        assert span.scope_version == "1.2.3"
        assert 0 < span.start_time_unix_nano <= span.end_time_unix_nano

    assert parent.span_id == format_span_id(ctxs["parent"].span_id)  # type: ignore[attr-defined]
    assert child.span_id == format_span_id(ctxs["child"].span_id)  # type: ignore[attr-defined]
    assert failing.span_id == format_span_id(ctxs["failing"].span_id)  # type: ignore[attr-defined]
    assert parent.is_root and parent.parent_span_id == ""
    assert child.parent_span_id == parent.span_id
    assert failing.parent_span_id == parent.span_id

    assert parent.kind == OTLP_KIND_SERVER and parent.kind_name == "SPAN_KIND_SERVER"
    assert child.kind == OTLP_KIND_CLIENT
    assert failing.kind == OTLP_KIND_INTERNAL
    assert parent.attributes == {
        "http.request.method": "GET",
        "http.response.status_code": 200,
        "ratio": 0.5,
        "cached": True,
        "tags": ["a", "b"],
        "ids": [1, 2, 3],
    }
    assert child.attributes == {"db.system": "mysql"}
    assert child.events == [("rows.fetched", {"count": 7})]

    assert failing.status_code == OTLP_STATUS_ERROR and failing.status_name == "STATUS_CODE_ERROR"
    assert failing.status_message == "bad order id"
    exc_event = failing.event("exception")
    assert exc_event is not None
    assert exc_event["exception.type"] == "ValueError"
    assert exc_event["exception.message"] == "bad order id"
    assert "Traceback" in exc_event["exception.stacktrace"]


def _finished_spans(count: int = 1) -> list[ReadableSpan]:
    memory = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("direct")
    for i in range(count):
        with tracer.start_as_current_span(f"direct-{i}"):
            pass
    provider.shutdown()
    return list(memory.get_finished_spans())


def _post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes, str]:
    req = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.read(), resp.headers.get("Content-Type", "")
    except urllib.error.HTTPError as err:
        return err.code, err.read(), err.headers.get("Content-Type", "")


def _pb_request(name: str = "raw", trace_id: bytes = b"\x01" * 16, span_id: bytes = b"\x02" * 8) -> bytes:
    request = ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                scope_spans=[
                    ScopeSpans(
                        spans=[
                            Span(
                                trace_id=trace_id,
                                span_id=span_id,
                                name=name,
                                kind=Span.SpanKind.SPAN_KIND_PRODUCER,
                                attributes=[KeyValue(key="k", value=AnyValue(string_value="v"))],
                            )
                        ]
                    )
                ]
            )
        ]
    )
    return request.SerializeToString()


# --------------------------------------------------------------------------- #
# lifecycle
# --------------------------------------------------------------------------- #


def test_endpoints_and_quick_stop() -> None:
    receiver = OTLPReceiver()
    with pytest.raises(RuntimeError):
        _ = receiver.grpc_endpoint
    receiver.start()
    try:
        assert receiver.grpc_endpoint == f"http://127.0.0.1:{receiver.grpc_port}"
        assert receiver.http_endpoint == f"http://127.0.0.1:{receiver.http_port}/v1/traces"
        assert receiver.grpc_port != receiver.http_port
        assert receiver.spans == []
    finally:
        started = time.monotonic()
        receiver.stop()
        assert time.monotonic() - started < 1.0
    assert not receiver.running
    receiver.stop()  # idempotent


def test_stop_is_quick_with_open_clients(otlp_receiver: OTLPReceiver) -> None:
    grpc_exporter = GrpcSpanExporter(endpoint=otlp_receiver.grpc_endpoint, insecure=True, timeout=2)
    http_exporter = HttpSpanExporter(endpoint=otlp_receiver.http_endpoint, timeout=2)
    spans = _finished_spans()
    assert grpc_exporter.export(spans) is SpanExportResult.SUCCESS
    assert http_exporter.export(spans) is SpanExportResult.SUCCESS
    started = time.monotonic()
    otlp_receiver.stop()  # keep-alive connections from the exporters are still open
    assert time.monotonic() - started < 1.0
    grpc_exporter.shutdown()
    http_exporter.shutdown()


# --------------------------------------------------------------------------- #
# real SDK exporters
# --------------------------------------------------------------------------- #


def test_grpc_exporter_end_to_end(otlp_receiver: OTLPReceiver) -> None:
    provider = _provider(
        GrpcSpanExporter(
            endpoint=otlp_receiver.grpc_endpoint, insecure=True, timeout=5, headers={"x-api-key": "k1"}
        ),
        "svc-grpc",
    )
    try:
        ctxs = _emit_sample_trace(provider)
        assert provider.force_flush(5_000)
        spans = otlp_receiver.wait_for_spans(count=3, timeout=5)
    finally:
        provider.shutdown()
    _assert_sample_trace(spans, ctxs, "grpc", "svc-grpc")
    requests = otlp_receiver.requests
    assert requests and all(r.transport == "grpc" for r in requests)
    assert requests[0].headers["x-api-key"] == "k1"
    assert sum(r.span_count for r in requests) == 3


@pytest.mark.parametrize("compression", [Compression.NoCompression, Compression.Gzip])
def test_http_exporter_end_to_end(otlp_receiver: OTLPReceiver, compression: Compression) -> None:
    provider = _provider(
        HttpSpanExporter(
            endpoint=otlp_receiver.http_endpoint,
            timeout=5,
            headers={"x-api-key": "k2"},
            compression=compression,
        ),
        "svc-http",
    )
    try:
        ctxs = _emit_sample_trace(provider)
        assert provider.force_flush(5_000)
        spans = otlp_receiver.wait_for_spans(count=3, timeout=5)
    finally:
        provider.shutdown()
    _assert_sample_trace(spans, ctxs, "http", "svc-http")
    request = otlp_receiver.requests[0]
    assert request.transport == "http"
    assert request.content_type == "application/x-protobuf"
    assert request.headers["x-api-key"] == "k2"
    expected_encoding = "gzip" if compression is Compression.Gzip else ""
    assert request.content_encoding == expected_encoding
    trace_id = format_trace_id(ctxs["parent"].trace_id)  # type: ignore[attr-defined]
    assert {s.name for s in otlp_receiver.spans_for_trace(trace_id)} == {
        "GET /orders",
        "SELECT orders",
        "boom",
    }
    assert len(otlp_receiver.spans_for_trace(ctxs["parent"].trace_id)) == 3  # type: ignore[attr-defined]
    assert otlp_receiver.spans_for_trace("0" * 32) == []


def test_env_headers_arrive_on_both_transports(
    otlp_receiver: OTLPReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-tenant=acme,authorization=Bearer%20tok")
    grpc_exporter = GrpcSpanExporter(endpoint=otlp_receiver.grpc_endpoint, insecure=True, timeout=5)
    http_exporter = HttpSpanExporter(endpoint=otlp_receiver.http_endpoint, timeout=5)
    spans = _finished_spans()
    try:
        assert grpc_exporter.export(spans) is SpanExportResult.SUCCESS
        assert http_exporter.export(spans) is SpanExportResult.SUCCESS
    finally:
        grpc_exporter.shutdown()
        http_exporter.shutdown()
    by_transport = {r.transport: r.headers for r in otlp_receiver.requests}
    assert set(by_transport) == {"grpc", "http"}
    for headers in by_transport.values():
        assert headers["x-tenant"] == "acme"
        assert headers["authorization"] == "Bearer tok"
    assert {s.transport for s in otlp_receiver.spans} == {"grpc", "http"}


# --------------------------------------------------------------------------- #
# raw HTTP: JSON and gzip protobuf
# --------------------------------------------------------------------------- #


def test_otlp_json_post_with_hex_ids(otlp_receiver: OTLPReceiver) -> None:
    trace_id = "5b8efff798038103d269b633813fc60c"
    body = {
        "resourceSpans": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "json-svc"}}]},
                "scopeSpans": [
                    {
                        "scope": {"name": "json-scope", "version": "0.1"},
                        "spans": [
                            {
                                "traceId": trace_id,
                                "spanId": "eee19b7ec3c1b174",
                                "parentSpanId": "eee19b7ec3c1b173",
                                "name": "json-span",
                                "kind": 2,
                                "startTimeUnixNano": "1544712660000000000",
                                "endTimeUnixNano": "1544712661000000000",
                                "attributes": [
                                    {"key": "s", "value": {"stringValue": "x"}},
                                    {"key": "i", "value": {"intValue": "42"}},
                                    {"key": "d", "value": {"doubleValue": 1.5}},
                                    {"key": "b", "value": {"boolValue": True}},
                                    {
                                        "key": "arr",
                                        "value": {
                                            "arrayValue": {"values": [{"stringValue": "a"}, {"intValue": 1}]}
                                        },
                                    },
                                    {
                                        "key": "kv",
                                        "value": {
                                            "kvlistValue": {
                                                "values": [{"key": "n", "value": {"stringValue": "m"}}]
                                            }
                                        },
                                    },
                                ],
                                "events": [
                                    {
                                        "timeUnixNano": "1544712660500000000",
                                        "name": "ev",
                                        "attributes": [{"key": "e", "value": {"intValue": "1"}}],
                                    }
                                ],
                                "links": [{"traceId": trace_id, "spanId": "0102030405060708"}],
                                "status": {"code": 2, "message": "nope"},
                                "someFutureField": "ignored",
                            }
                        ],
                    }
                ],
            }
        ]
    }
    status, payload, content_type = _post(
        otlp_receiver.http_endpoint,
        json.dumps(body).encode(),
        {"Content-Type": "application/json", "X-Probe": "1"},
    )
    assert status == 200
    assert content_type == "application/json"
    json.loads(payload)  # valid JSON response

    (span,) = otlp_receiver.wait_for_spans(name="json-span", timeout=2)
    assert span.transport == "http"
    assert span.trace_id == trace_id
    assert span.span_id == "eee19b7ec3c1b174"
    assert span.parent_span_id == "eee19b7ec3c1b173"
    assert span.kind == OTLP_KIND_SERVER
    assert span.attributes == {"s": "x", "i": 42, "d": 1.5, "b": True, "arr": ["a", 1], "kv": {"n": "m"}}
    assert span.resource == {"service.name": "json-svc"}
    assert (span.scope_name, span.scope_version) == ("json-scope", "0.1")
    assert span.events == [("ev", {"e": 1})]
    assert span.links == [(trace_id, "0102030405060708", {})]
    assert (span.status_code, span.status_message) == (OTLP_STATUS_ERROR, "nope")
    assert span.start_time_unix_nano == 1544712660000000000
    assert span.duration_ns == 1_000_000_000
    assert otlp_receiver.requests[0].headers["x-probe"] == "1"


def test_parse_otlp_json_accepts_base64_ids() -> None:
    msg = parse_otlp_json(
        json.dumps(
            {
                "resourceSpans": [
                    {"scopeSpans": [{"spans": [{"traceId": "AQEBAQEBAQEBAQEBAQEBAQ==", "name": "b64"}]}]}
                ]
            }
        )
    )
    assert msg.resource_spans[0].scope_spans[0].spans[0].trace_id == b"\x01" * 16


def test_gzip_protobuf_post(otlp_receiver: OTLPReceiver) -> None:
    status, payload, content_type = _post(
        otlp_receiver.http_endpoint,
        gzip.compress(_pb_request("gz")),
        {"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"},
    )
    assert status == 200
    assert content_type == "application/x-protobuf"
    ExportTraceServiceResponse().ParseFromString(payload)
    (span,) = otlp_receiver.wait_for_spans(name="gz", timeout=2)
    assert span.trace_id == "01" * 16 and span.span_id == "02" * 8
    assert span.kind_name == "SPAN_KIND_PRODUCER"
    assert span.attributes == {"k": "v"}
    assert otlp_receiver.requests[0].content_encoding == "gzip"


def test_http_rejects_bad_requests(otlp_receiver: OTLPReceiver) -> None:
    base = otlp_receiver.http_endpoint.rsplit("/v1/traces", 1)[0]
    assert _post(base + "/v1/metrics", b"", {"Content-Type": "application/x-protobuf"})[0] == 404
    assert _post(otlp_receiver.http_endpoint, b"x", {"Content-Type": "text/plain"})[0] == 415
    assert _post(otlp_receiver.http_endpoint, b"not-json", {"Content-Type": "application/json"})[0] == 400
    assert (
        _post(
            otlp_receiver.http_endpoint,
            b"not-gzip",
            {"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"},
        )[0]
        == 400
    )
    assert otlp_receiver.spans == [] and otlp_receiver.requests == []


# --------------------------------------------------------------------------- #
# waiting, clearing, fault injection
# --------------------------------------------------------------------------- #


def test_wait_for_timeout_message_and_clear(otlp_receiver: OTLPReceiver) -> None:
    _post(otlp_receiver.http_endpoint, _pb_request("only-one"), {"Content-Type": "application/x-protobuf"})
    otlp_receiver.wait_for_spans(count=1, timeout=2)
    started = time.monotonic()
    with pytest.raises(AssertionError) as excinfo:
        otlp_receiver.wait_for_spans(count=2, name="only-one", timeout=0.2)
    assert time.monotonic() - started < 1.0
    message = str(excinfo.value)
    assert "1 span(s)" in message and "only-one" in message
    with pytest.raises(AssertionError):
        otlp_receiver.wait_for(lambda spans: False, timeout=0.1)

    spans = otlp_receiver.wait_for(lambda spans: any(s.name == "only-one" for s in spans), timeout=1)
    assert len(spans) == 1
    otlp_receiver.clear()
    assert otlp_receiver.spans == [] and otlp_receiver.requests == []


@pytest.mark.parametrize("status", [503, 400])
def test_http_failure_injection(otlp_receiver: OTLPReceiver, status: int) -> None:
    exporter = HttpSpanExporter(endpoint=otlp_receiver.http_endpoint, timeout=0.5)
    spans = _finished_spans()
    try:
        otlp_receiver.set_failure(status)
        started = time.monotonic()
        assert exporter.export(spans) is SpanExportResult.FAILURE
        assert time.monotonic() - started < 2.0
        assert otlp_receiver.rejected_count >= 1
        assert otlp_receiver.spans == []

        otlp_receiver.set_failure(None)
        assert exporter.export(spans) is SpanExportResult.SUCCESS
        assert [s.name for s in otlp_receiver.wait_for_spans(timeout=2)] == ["direct-0"]
    finally:
        exporter.shutdown()


def test_grpc_failure_injection(otlp_receiver: OTLPReceiver) -> None:
    exporter = GrpcSpanExporter(endpoint=otlp_receiver.grpc_endpoint, insecure=True, timeout=0.5)
    spans = _finished_spans()
    try:
        otlp_receiver.set_failure(503)
        started = time.monotonic()
        assert exporter.export(spans) is SpanExportResult.FAILURE
        assert time.monotonic() - started < 2.0
        assert otlp_receiver.rejected_count >= 1
        assert otlp_receiver.spans == []

        otlp_receiver.set_failure(None)
        assert exporter.export(spans) is SpanExportResult.SUCCESS
        assert [s.transport for s in otlp_receiver.wait_for_spans(timeout=2)] == ["grpc"]
    finally:
        exporter.shutdown()


def test_fixture_yields_running_receiver(otlp_receiver: OTLPReceiver) -> None:
    assert otlp_receiver.running
    assert repr(otlp_receiver).startswith("<OTLPReceiver grpc=")
