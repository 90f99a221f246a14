"""Issue #10 item 3: a collector that is down costs one warning a minute, not a line per retry.

The real OTLP exporters (gRPC and HTTP) against a closed local port, built the way the runtime
builds them (``build_span_exporter``), plus fakes for the clock and for an exporter that raises.
"""

from __future__ import annotations

import logging
import string
import threading
from collections.abc import Sequence

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from e2e_otel.conf import resolve
from e2e_otel.export_health import ExportHealth, QuietExporter
from e2e_otel.exporters import build_span_exporter, otlp_endpoint_label
from e2e_otel.sanitize import Sanitizer
from tests.servers import closed_port

NOISE = ("StatusCode", "Transient error", "Failed to export", "retrying")


def _spans(count: int = 2) -> list[ReadableSpan]:
    tracer = TracerProvider().get_tracer("t")
    spans = []
    for index in range(count):
        span = tracer.start_span(f"s{index}")
        span.end()
        spans.append(span)  # type: ignore[arg-type]
    return spans


def _lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [f"{r.name} {r.levelname} {r.getMessage()}" for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_unreachable_collector_logs_one_warning_naming_the_endpoint(
        protocol: str, caplog: pytest.LogCaptureFixture) -> None:
    port = closed_port()
    config = resolve({"OTLP_ENDPOINT": f"http://127.0.0.1:{port}", "OTLP_PROTOCOL": protocol,
                      "OTLP_TIMEOUT": 0.5}, {})
    assert config.TRACES_EXPORTER == "otlp"  # an endpoint was named
    exporter = build_span_exporter(config, Sanitizer())
    assert exporter is not None
    caplog.set_level(logging.DEBUG)
    try:
        results = [exporter.export(_spans()) for _ in range(3)]
    finally:
        exporter.shutdown()
    assert results == [SpanExportResult.FAILURE] * 3
    lines = _lines(caplog)
    assert not [line for line in lines if any(word in line for word in NOISE)], lines
    assert len(lines) == 1, lines  # the first failure is reported, the next two wait for the minute
    assert f"127.0.0.1:{port}" in lines[0] and "e2e_otel.export_health" in lines[0]
    if protocol == "grpc":
        assert "UNAVAILABLE: failed to connect" in lines[0]  # the cause, without the exporter's sentence
    assert "Traceback" not in caplog.text


class _Fails(SpanExporter):
    """Logs like the OTLP exporters do (same logger), then fails or raises."""

    def __init__(self, raises: bool = False) -> None:
        self.raises = raises
        self.ok = False
        self.log = logging.getLogger("opentelemetry.exporter.otlp.proto.grpc.exporter")

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self.ok:
            return SpanExportResult.SUCCESS
        self.log.warning("Transient error %s encountered while exporting traces to %s, retrying in %.2fs. "
                         "Error details: %s", grpc.StatusCode.UNAVAILABLE, "c:4317", 1.0, "connection refused")
        if self.raises:
            raise ConnectionError("socket closed")
        self.log.error("Failed to export traces to c:4317, error code: UNAVAILABLE")
        return SpanExportResult.FAILURE

    def shutdown(self) -> None:
        pass


def test_one_warning_per_interval_with_counts_and_one_info_on_recovery(caplog: pytest.LogCaptureFixture) -> None:
    now = [1000.0]
    health = ExportHealth("c:4317", interval=60, clock=lambda: now[0])
    inner = _Fails()
    exporter = QuietExporter(inner, health)
    caplog.set_level(logging.INFO)
    for _ in range(5):
        assert exporter.export(_spans(3)) is SpanExportResult.FAILURE
        now[0] += 10  # 50 s: still inside the first minute
    now[0] += 11
    exporter.export(_spans(3))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2, warnings
    assert "c:4317" in warnings[0] and "1 batch(es), 3 span(s)" in warnings[0]
    assert "5 batch(es), 15 span(s)" in warnings[1]  # the four held back plus this one
    assert "UNAVAILABLE: connection refused" in warnings[1]  # the first cause, not "Failed to export"
    assert health.collector_down and health.failed_spans == 18
    inner.ok = True
    assert exporter.export(_spans(1)) is SpanExportResult.SUCCESS
    assert not health.collector_down
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO and "again" in r.getMessage()]
    assert len(infos) == 1 and "c:4317" in infos[0] and "6 failed batch(es) with 18 span(s)" in infos[0]


def test_an_exporter_that_raises_fails_quietly(caplog: pytest.LogCaptureFixture) -> None:
    exporter = QuietExporter(_Fails(raises=True), ExportHealth("c:4317"))
    caplog.set_level(logging.DEBUG)
    assert exporter.export(_spans()) is SpanExportResult.FAILURE
    assert "Traceback" not in caplog.text
    (line,) = _lines(caplog)
    assert "ConnectionError: socket closed" in line  # the exception is the cause, not the retry text


def test_the_same_loggers_outside_our_export_calls_are_untouched(caplog: pytest.LogCaptureFixture) -> None:
    """Only what is logged inside e2e-otel's export call, on its thread, is kept back."""
    health = ExportHealth("c:4317")
    inner = _Fails()
    exporter = QuietExporter(inner, health)
    caplog.set_level(logging.INFO)
    other = threading.Thread(target=lambda: inner.log.warning("the host app's own exporter failed"))
    other.start()
    other.join()
    inner.log.warning("logged on this thread, outside an export")
    messages = [r.getMessage() for r in caplog.records]
    assert "the host app's own exporter failed" in messages
    assert "logged on this thread, outside an export" in messages
    assert not health.trouble.is_set()
    exporter.export(_spans())
    assert health.trouble.is_set()


def test_shutdown_is_forwarded_once_and_later_exports_fail_at_once() -> None:
    calls = []

    class Inner(_Fails):
        def shutdown(self) -> None:
            calls.append("shutdown")

    exporter = QuietExporter(Inner(), ExportHealth("c:4317"))
    exporter.shutdown()
    exporter.shutdown()  # the batch processor calls it again after the exit sequence did
    assert calls == ["shutdown"]
    assert exporter.export(_spans()) is SpanExportResult.FAILURE


def test_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="interval"):
        ExportHealth("c:4317", interval=0)


@pytest.mark.parametrize(
    ("user", "environ", "label"),
    [
        ({}, {}, "localhost:4317"),
        ({"OTLP_PROTOCOL": "http/protobuf"}, {}, "http://localhost:4318/v1/traces"),
        ({}, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel-collector:4317"}, "http://otel-collector:4317"),
        ({"OTLP_PROTOCOL": "http/protobuf"}, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"},
         "http://c:4318/v1/traces"),
        ({"OTLP_PROTOCOL": "http/protobuf"}, {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/custom"},
         "http://c:4318/custom"),
        ({"OTLP_ENDPOINT": "collector:4317"}, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://ignored:1"},
         "collector:4317"),
        ({"OTLP_ENDPOINT": "https://user:s3cret@c.example:443/?token=abc"}, {}, "https://c.example:443/"),
    ],
)
def test_endpoint_label(user: dict, environ: dict, label: str) -> None:
    assert otlp_endpoint_label(resolve(user, environ), environ) == label


_USERINFO = string.ascii_letters + string.digits + "-._~%!$&'()*+,;="  # RFC 3986 userinfo, without ':'


@given(user=st.text(_USERINFO, min_size=1, max_size=20),
       password=st.text(string.ascii_uppercase + string.digits + "!$*", min_size=6, max_size=20),
       rest=st.text(string.ascii_lowercase + "/?#=&.", max_size=40))
def test_endpoint_label_never_shows_credentials(user: str, password: str, rest: str) -> None:
    """The label goes into log lines: a password in the endpoint URL must never reach them."""
    endpoint = f"http://{user}:{password}@collector:4317/{rest}"
    label = otlp_endpoint_label(resolve({"OTLP_ENDPOINT": endpoint}, {}), {})
    assert password not in label and "@" not in label
    assert label.startswith("http://collector:4317/")


def test_every_retry_reaches_the_health_even_past_grpcs_duplicate_filter() -> None:
    """The gRPC exporter's logger drops a message repeated within 20 s; the exit sequence needs every
    retry (it stops waiting on the first one of its own flush), so our filter runs before that one."""
    import opentelemetry.exporter.otlp.proto.grpc.exporter  # noqa: F401  (adds its DuplicateFilter)

    class RetriesThenSucceeds(_Fails):  # a flapping collector: the retry went through
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            self.log.warning("Transient error %s encountered while exporting traces to %s, retrying in %.2fs. "
                             "Error details: %s", grpc.StatusCode.UNAVAILABLE, "c:4317", 1.0, "reset")
            return SpanExportResult.SUCCESS

    health = ExportHealth("c:4317")
    exporter = QuietExporter(RetriesThenSucceeds(), health)
    for _ in range(2):
        health.trouble.clear()
        assert exporter.export(_spans()) is SpanExportResult.SUCCESS
        assert health.trouble.is_set()  # only the retry line can have set it
    assert health.failed_batches == 0
