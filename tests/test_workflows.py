"""The seeds' API (WorkflowTracer, workflow(), ErrorLogger, PerformanceMonitor): spans first."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import e2e_otel
from e2e_otel.conf import resolve
from e2e_otel.models import ErrorLog, WorkflowSession
from e2e_otel.processors import WorkflowSpanProcessor
from e2e_otel.propagation import CorrelationIdGenerator
from e2e_otel.sanitize import Sanitizer
from e2e_otel.spans_to_records import step_from_span
from e2e_otel.store import RecordWriter
from e2e_otel.workflows import ErrorLogger, PerformanceMonitor, WorkflowTracer, workflow

CID = "4bf92f35-77b3-4da6-a3ce-929d0e0e4736"


@pytest.fixture
def local() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    provider = TracerProvider(id_generator=CorrelationIdGenerator())
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


def by_name(exporter: InMemorySpanExporter) -> dict[str, Any]:
    return {span.name: span for span in exporter.get_finished_spans()}


def test_public_names_are_exported_lazily() -> None:
    assert e2e_otel.WorkflowTracer is WorkflowTracer and e2e_otel.workflow is workflow
    assert e2e_otel.ErrorLogger is ErrorLogger and e2e_otel.PerformanceMonitor is PerformanceMonitor


def test_static_and_instance_forms_work(local: Any) -> None:
    provider, exporter = local
    static = WorkflowTracer.start_workflow("nightly-import")  # global provider: the live runtime
    WorkflowTracer.complete_workflow(static.correlation_id)
    instance = WorkflowTracer(tracer_provider=provider)
    handle = instance.start_workflow("checkout", correlation_id=CID)
    assert handle.correlation_id == CID and handle.workflow_type == "checkout"
    instance.complete_workflow(handle)
    assert "workflow checkout" in by_name(exporter)
    assert uuid.UUID(static.correlation_id) != uuid.UUID(CID)


def test_workflow_outside_a_request_is_a_root_kept_open_until_completed(local: Any) -> None:
    provider, exporter = local
    tracer = WorkflowTracer(tracer_provider=provider)
    handle = tracer.start_workflow("checkout", correlation_id=CID, user="alice", metadata={"cart_items": 3})
    step = tracer.add_trace_step(handle.correlation_id, "external", "payment-gateway", "charge",
                                 metadata={"amount_cents": 1200})
    assert exporter.get_finished_spans() == ()  # nothing ends before it is completed
    tracer.complete_trace_step(step, {"approved": True})
    tracer.fail_workflow(CID, "card declined", metadata={"reason": "insufficient funds"})
    spans = by_name(exporter)
    root, child = spans["workflow checkout"], spans["payment-gateway charge"]
    assert f"{root.context.trace_id:032x}" == CID.replace("-", "")
    assert root.parent is None and child.parent.span_id == root.context.span_id
    root_step, child_step = step_from_span(root), step_from_span(child)
    assert root_step is not None and child_step is not None
    assert root_step.hints.explicit_type == "checkout" and root_step.hints.user_id == "alice"
    assert root_step.hints.status == "failed" and root_step.hints.status_message == "card declined"
    assert root_step.hints.metadata == {"cart_items": 3, "reason": "insufficient funds"}
    assert (child_step.layer, child_step.component, child_step.operation) == ("external", "payment-gateway", "charge")
    assert child_step.attributes == {"amount_cents": 1200, "approved": True}
    assert child_step.hints.explicit_type == "checkout"  # typed before the root ends


def test_start_workflow_inside_a_request_tags_the_current_trace(local: Any) -> None:
    provider, exporter = local
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("GET cart/", kind=SpanKind.SERVER,
                                      attributes={"http.method": "GET", "http.route": "cart/"}) as server:
        handle = WorkflowTracer(tracer_provider=provider).start_workflow("cart-update")
        WorkflowTracer(tracer_provider=provider).complete_workflow(handle.correlation_id)
    assert handle.correlation_id == str(uuid.UUID(int=server.get_span_context().trace_id))
    step = step_from_span(by_name(exporter)["GET cart/"])
    assert step is not None and step.hints.explicit_type == "cart-update" and step.hints.status == "completed"
    assert len(exporter.get_finished_spans()) == 1  # no extra spans inside a request


def test_foreign_provider_gets_the_trace_id_through_a_remote_parent() -> None:
    provider = TracerProvider()  # random id generator
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    handle = WorkflowTracer(tracer_provider=provider).start_workflow("import", correlation_id=CID)
    WorkflowTracer(tracer_provider=provider).complete_workflow(handle)
    (span,) = exporter.get_finished_spans()
    assert f"{span.context.trace_id:032x}" == CID.replace("-", "") and span.parent.is_remote


def test_workflow_context_manager_and_decorators(local: Any) -> None:
    provider, exporter = local

    @workflow("sync-job", tracer_provider=provider)
    def sync_job(x: int) -> int:
        return trace.get_current_span().get_span_context().trace_id + x - x

    @workflow("async-job", tracer_provider=provider)
    async def async_job() -> int:
        await asyncio.sleep(0)
        return trace.get_current_span().get_span_context().trace_id

    with workflow("block", tracer_provider=provider) as handle:
        inner = trace.get_current_span().get_span_context().trace_id
    assert handle.correlation_id == str(uuid.UUID(int=inner))
    assert sync_job(1) == by_name(exporter)["workflow sync-job"].context.trace_id
    assert asyncio.run(async_job()) == by_name(exporter)["workflow async-job"].context.trace_id
    with pytest.raises(KeyError), workflow("broken", tracer_provider=provider):
        raise KeyError("missing")
    broken = by_name(exporter)["workflow broken"]
    assert broken.status.status_code is StatusCode.ERROR
    step = step_from_span(broken)
    assert step is not None and step.errors[0].error_type == "KeyError" and step.hints.explicit_type == "broken"


def test_error_logger_and_performance_monitor(local: Any) -> None:
    provider, exporter = local
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("GET pay/", kind=SpanKind.SERVER,
                                      attributes={"http.method": "GET", "http.route": "pay/"}):
        ErrorLogger(tracer_provider=provider).log_error(
            "PaymentDeclined", "card declined", layer="external", component="stripe", severity="warning")
        try:
            raise TimeoutError("gateway timed out after 30s")
        except TimeoutError as exc:
            ErrorLogger(tracer_provider=provider).log_exception(exc, layer="external", component="stripe")
        PerformanceMonitor(tracer_provider=provider).record_metric("api", "pay", "response_time", 12.5, "ms")
    step = step_from_span(by_name(exporter)["GET pay/"])
    assert step is not None and step.status == "error"
    declined, timeout = step.errors
    assert (declined.error_type, declined.layer, declined.component, declined.severity) == (
        "PaymentDeclined", "external", "stripe", "warning")
    assert (timeout.category, timeout.layer) == ("timeout", "external") and "raise TimeoutError" in timeout.stacktrace
    assert [(m.name, m.value, m.unit) for m in step.metrics] == [("response_time", 12.5, "ms")]
    # Outside any span: a short span of its own.
    ErrorLogger(tracer_provider=provider).log_error("CronFailed", "boom", layer="internal", component="cron")
    assert by_name(exporter)["error CronFailed"].status.status_code is StatusCode.ERROR


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError):
        WorkflowTracer.start_workflow("")
    with pytest.raises(ValueError):
        WorkflowTracer.add_trace_step(CID, "kitchen", "c", "o")
    with pytest.raises(ValueError):
        WorkflowTracer.complete_workflow(CID, status="done")
    with pytest.raises(ValueError):
        WorkflowTracer.start_workflow("x", correlation_id="not-a-uuid")
    with pytest.raises(ValueError):
        ErrorLogger.log_error("E", "m", severity="fatal")


@pytest.mark.mysql
@pytest.mark.django_db(transaction=True)
def test_explicit_status_reaches_the_records() -> None:
    config = resolve({"ENVIRONMENT": "testing", "RECORD_FLUSH_INTERVAL": 0.02}, environ={})
    writer = RecordWriter(config, Sanitizer())
    processor = WorkflowSpanProcessor.from_config(config, writer)
    provider = TracerProvider(id_generator=CorrelationIdGenerator())
    provider.add_span_processor(processor)
    tracer = WorkflowTracer(tracer_provider=provider)
    try:
        failed = tracer.start_workflow("checkout", user="alice")
        step = tracer.add_trace_step(failed, "database", "orders", "INSERT")
        tracer.complete_trace_step(step)
        tracer.fail_workflow(failed.correlation_id, "declined token=abc123secret")
        recovered = tracer.start_workflow("checkout")
        ErrorLogger(tracer_provider=provider).log_error("Retryable", "first try failed",
                                                        correlation_id=recovered.correlation_id)
        time.sleep(0.01)
        tracer.complete_workflow(recovered.correlation_id)
        assert processor.force_flush(10_000)
    finally:
        writer.shutdown(2)
        provider.shutdown()
    failed_row = WorkflowSession.objects.get(correlation_id=uuid.UUID(failed.correlation_id))
    assert (failed_row.status, failed_row.status_explicit, failed_row.workflow_type) == ("failed", True, "checkout")
    assert failed_row.workflow_type_source == "explicit" and failed_row.user_id == "alice"
    assert "abc123secret" not in str(failed_row.metadata) and "declined" in failed_row.metadata["status_message"]
    assert list(failed_row.steps.values_list("layer", flat=True)) == ["internal", "database"]
    recovered_row = WorkflowSession.objects.get(correlation_id=uuid.UUID(recovered.correlation_id))
    assert recovered_row.error_count == 1 and recovered_row.status == "completed"  # explicit wins
    assert ErrorLog.objects.filter(correlation_id=uuid.UUID(recovered.correlation_id), error_type="Retryable").exists()
