"""Property test on real MariaDB: whatever values reach the public span API, the record writer keeps
going (the next ordinary workflow is recorded) and its counters match the rows in the database.

Hypothesis throws arbitrary floats (NaN, ±infinity) and unicode (lone surrogates, NUL, huge strings)
at ``WorkflowTracer``, ``PerformanceMonitor.record_metric``, ``ErrorLogger.log_error`` and at raw
span attributes and events, through a private TracerProvider → WorkflowSpanProcessor → RecordWriter.
"""

from __future__ import annotations

import math
import os
import uuid
from typing import Any

import pytest
from django.db.models import Sum
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.id_generator import IdGenerator

from e2e_otel.models import ErrorLog, PerformanceSnapshot, TraceStep, WorkflowSession
from e2e_otel.processors import WorkflowSpanProcessor
from e2e_otel.sanitize import Sanitizer
from e2e_otel.store import RecordWriter
from e2e_otel.workflows import ErrorLogger, PerformanceMonitor, WorkflowTracer
from tests.test_store import config

pytestmark = [pytest.mark.mysql, pytest.mark.django_db(transaction=True)]

CHARS = st.characters(categories=["Cs", "Cc", "Cf", "L", "M", "N", "P", "S", "Z"])
TEXT = (st.text(CHARS, max_size=60) | st.just("\ud800") | st.just("a\x00b")
        | st.builds(lambda c, n: c * n, CHARS, st.integers(10_000, 200_000)))
NAME = TEXT.filter(bool)
FLOATS = st.floats() | st.sampled_from([math.nan, math.inf, -math.inf, -0.0, 1e308])
ATTRIBUTE = TEXT | FLOATS | st.integers(-(2**63), 2**63 - 1) | st.booleans() | st.lists(FLOATS, max_size=5) \
    | st.lists(TEXT, max_size=5)
METADATA = st.dictionaries(TEXT, st.recursive(TEXT | FLOATS, lambda inner: st.lists(inner, max_size=3)
                                              | st.dictionaries(TEXT, inner, max_size=3), max_leaves=10), max_size=4)
ATTRIBUTES = st.dictionaries(TEXT, ATTRIBUTE, max_size=6)


class _UrandomIds(IdGenerator):
    """Ids from os.urandom: hypothesis seeds ``random`` per example, which would repeat the SDK's ids."""

    def generate_span_id(self) -> int:
        return int.from_bytes(os.urandom(8), "big") or 1

    def generate_trace_id(self) -> int:
        return int.from_bytes(os.urandom(16), "big") or 1


def counts(traces: list[uuid.UUID]) -> dict[str, int]:
    """Rows of these traces (the suite's live runtime writes monitor snapshots of its own meanwhile;
    nothing else writes errors during the test)."""
    return {"session": WorkflowSession.objects.filter(correlation_id__in=traces).count(),
            "step": TraceStep.objects.filter(correlation_id__in=traces).count(),
            "snapshot": PerformanceSnapshot.objects.filter(correlation_id__in=traces).count(),
            "error": ErrorLog.objects.aggregate(n=Sum("occurrences"))["n"] or 0}


def test_hostile_values_never_stop_the_writer_and_counts_match_rows() -> None:
    writer = RecordWriter(config(RECORD_FLUSH_INTERVAL=0.01), Sanitizer())
    provider = TracerProvider(id_generator=_UrandomIds())
    errors_before = counts([])["error"]
    traces: list[uuid.UUID] = []
    provider.add_span_processor(WorkflowSpanProcessor(writer, slow_span_ms=1000))
    tracer, monitor, errors = (api(tracer_provider=provider)
                               for api in (WorkflowTracer, PerformanceMonitor, ErrorLogger))
    raw = provider.get_tracer("hostile")
    non_finite = [0]

    @settings(max_examples=40, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(workflow_type=NAME, component=TEXT, operation=TEXT, message=TEXT, value=FLOATS, metadata=METADATA,
           attributes=ATTRIBUTES, event=ATTRIBUTES, fail=st.booleans())
    def run(workflow_type: str, component: str, operation: str, message: str, value: float,
            metadata: dict[str, Any], attributes: dict[str, Any], event: dict[str, Any], fail: bool) -> None:
        cid = uuid.uuid4()
        tracer.start_workflow(workflow_type, correlation_id=cid, user=message, metadata=metadata)
        step = tracer.add_trace_step(cid, "api", component, operation, metadata=metadata)
        monitor.record_metric("frontend", component, message or "m", value, unit=message, correlation_id=cid,
                              metadata=metadata)
        errors.log_error(message or "E", message, component=component, metadata=metadata, stack_trace=message,
                         correlation_id=cid)
        span = raw.start_span(message or "span", attributes=attributes)
        span.add_event("exception", {**event, "exception.type": message, "exception.message": message})
        span.add_event("e2e.metric", {**event, "e2e.metric.name": "x", "e2e.metric.value": value})
        span.end()
        traces.extend((cid, uuid.UUID(int=span.get_span_context().trace_id)))
        non_finite[0] += 2 * (not math.isfinite(value))  # record_metric's and the raw event's
        tracer.complete_trace_step(step, metadata=metadata, status="error" if fail else "ok")
        if fail:
            tracer.fail_workflow(cid, message, metadata=metadata)
        else:
            tracer.complete_workflow(cid, metadata=metadata)

        ordinary = uuid.uuid4()  # the next ordinary workflow is recorded in full
        traces.append(ordinary)
        tracer.start_workflow("ordinary", correlation_id=ordinary)
        tracer.complete_trace_step(tracer.add_trace_step(ordinary, "api", "/ok/", "GET"))
        tracer.complete_workflow(ordinary)
        assert writer.force_flush(10)

        session = WorkflowSession.objects.get(correlation_id=ordinary)
        assert session.status == "completed" and session.step_count == 2
        assert WorkflowSession.objects.get(correlation_id=cid).status == ("failed" if fail else "completed")
        stats = writer.stats()
        stored = counts(traces)
        for kind in ("step", "snapshot"):  # what is counted as written is in the database, and only that
            assert stats["written"][kind] == stored[kind], kind
        assert stats["written"]["error"] == stored["error"] - errors_before
        assert stored["session"] == len(traces)  # every trace has its session
        assert stats["dropped"]["invalid_value"] == non_finite[0]
        assert not any(n for reason, n in stats["dropped"].items() if reason != "invalid_value"), stats["dropped"]

    try:
        run()
    finally:
        writer.shutdown(5)
        provider.shutdown()
