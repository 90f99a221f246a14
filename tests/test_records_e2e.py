"""Done-means of the workflow records, end to end: Django test client → live runtime → MariaDB."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest
from django.test import Client

from e2e_otel.bootstrap import get_runtime
from e2e_otel.models import ErrorLog, PerformanceSnapshot, TraceStep, WorkflowSession
from e2e_otel.processors import WorkflowSpanProcessor
from e2e_otel.sanitize import Sanitizer
from e2e_otel.store import RecordWriter
from tests.testapp.models import Item

pytestmark = [pytest.mark.mysql, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def records() -> WorkflowSpanProcessor:
    runtime = get_runtime()
    assert runtime is not None
    processor = runtime.processor(WorkflowSpanProcessor)
    assert isinstance(processor, WorkflowSpanProcessor)
    return processor


def flush(processor: WorkflowSpanProcessor) -> None:
    """Every span ended so far derived (derive thread), then written (``processor``'s writer)."""
    runtime = get_runtime()
    assert runtime is not None and runtime.derived.queue.flush(10)
    assert processor.force_flush(10_000)


def session(cid: str) -> WorkflowSession:
    return WorkflowSession.objects.get(correlation_id=uuid.UUID(cid))


def test_reused_correlation_id_gives_one_session_with_ordered_steps(records: WorkflowSpanProcessor) -> None:
    item = Item.objects.create(name="lamp", price=3)
    cid = str(uuid.uuid4())
    client = Client()
    for path in ("/items/", f"/items/{item.pk}/", "/items/"):
        response = client.get(path, HTTP_X_CORRELATION_ID=cid)
        assert response.status_code == 200 and response["X-Correlation-ID"] == cid
    flush(records)
    assert WorkflowSession.objects.filter(correlation_id=uuid.UUID(cid)).count() == 1
    found = session(cid)
    assert found.workflow_type == "GET /items/" and found.status == "completed"
    steps = list(found.steps.order_by("start_time", "id"))
    assert [s.layer for s in steps] == ["api", "database", "api", "database", "api", "database"]
    assert [s.component for s in steps if s.layer == "api"] == ["/items/", "/items/<int:pk>/", "/items/"]
    assert {s.component for s in steps if s.layer == "database"} == {"testapp_item"}
    assert str(item.pk) not in "".join(s.component + s.operation for s in steps)
    for api, db in zip(steps[::2], steps[1::2], strict=True):
        assert db.parent_span_id == api.span_id
        assert api.start_time <= db.start_time and db.end_time <= api.end_time
        assert 0 < db.duration_ms <= api.duration_ms
        assert api.duration_ms == pytest.approx((api.end_time - api.start_time).total_seconds() * 1000, abs=0.01)
    assert found.step_count == 6 and found.start_time == steps[0].start_time
    assert found.end_time == steps[-2].end_time  # the last request's server span ends last
    assert found.duration_ms == pytest.approx((found.end_time - found.start_time).total_seconds() * 1000)


def test_failing_view_fails_the_session_and_groups_errors(records: WorkflowSpanProcessor) -> None:
    client = Client(raise_request_exception=False)
    cids = [str(uuid.uuid4()) for _ in range(2)]
    for cid in cids:
        assert client.get("/fail/", HTTP_X_CORRELATION_ID=cid).status_code == 500
    flush(records)
    assert [session(cid).status for cid in cids] == ["failed", "failed"]
    errors = ErrorLog.objects.filter(error_type__endswith="PaymentDeclined")
    assert errors.count() == 1
    error = errors.get()
    assert error.occurrences == 2 and error.correlation_id == uuid.UUID(cids[-1])
    assert error.layer == "api" and error.component == "/fail/" and "views.py" in error.stack_trace


def test_workflow_type_from_browser_baggage(records: WorkflowSpanProcessor) -> None:
    cid = str(uuid.uuid4())
    Client().get("/ping/", HTTP_X_CORRELATION_ID=cid, HTTP_BAGGAGE="e2e.workflow=product-fetch")
    flush(records)
    found = session(cid)
    assert (found.workflow_type, found.workflow_type_source) == ("product-fetch", "baggage")


def test_unsampled_traces_recorded_only_when_they_fail(records: WorkflowSpanProcessor) -> None:
    client = Client(raise_request_exception=False)
    ok_trace, failed_trace = uuid.uuid4().hex, uuid.uuid4().hex
    assert client.get("/ping/", HTTP_TRACEPARENT=f"00-{ok_trace}-00f067aa0ba902b7-00").status_code == 200
    assert client.get("/fail/", HTTP_TRACEPARENT=f"00-{failed_trace}-00f067aa0ba902b7-00").status_code == 500
    flush(records)
    assert not WorkflowSession.objects.filter(correlation_id=uuid.UUID(ok_trace)).exists()
    assert WorkflowSession.objects.get(correlation_id=uuid.UUID(failed_trace)).status == "failed"


def test_no_secret_is_stored(records: WorkflowSpanProcessor) -> None:
    from django.contrib.auth.models import User

    User.objects.create_user("alice", password="correct-horse")
    client = Client(raise_request_exception=False)
    cid = str(uuid.uuid4())
    response = client.post("/login/", {"username": "alice", "password": "hunter2"},
                           HTTP_AUTHORIZATION="Bearer tok-secret-123", HTTP_X_CORRELATION_ID=cid,
                           HTTP_COOKIE="sessionid=cookie-secret-456")
    assert response.status_code == 401
    assert client.get("/raw-sql/", HTTP_X_CORRELATION_ID=cid).status_code == 200
    flush(records)
    steps = TraceStep.objects.filter(correlation_id=uuid.UUID(cid))
    raw = [s for s in steps if "testapp_item" in s.metadata.get("db.statement", "")]
    assert raw and "<> ?" in raw[0].metadata["db.statement"]  # the literal was there and is gone
    dump = json.dumps([list(model.objects.values()) for model in (WorkflowSession, TraceStep, ErrorLog,
                                                                    PerformanceSnapshot)], default=str)
    for secret in ("hunter2", "tok-secret-123", "cookie-secret-456", "correct-horse"):
        assert secret not in dump


def test_writer_sql_is_never_traced(records: WorkflowSpanProcessor, spans: Any) -> None:
    cid = str(uuid.uuid4())
    Client().get("/items/", HTTP_X_CORRELATION_ID=cid)
    flush(records)
    statements = [str(s.attributes.get("db.statement", "")) for s in spans.get_finished_spans()
                  if s.attributes and "db.system" in s.attributes]
    # The writer did write (this query is traced, hence after the capture was read).
    assert session(cid).steps.filter(layer="database", component="testapp_item").count() == 1
    assert any("testapp_item" in sql for sql in statements)  # the view's query is traced...
    assert not [sql for sql in statements if "debugging_" in sql]  # ...the writer's never


@pytest.mark.django_db(transaction=True, databases=["default", "unreachable"])
def test_requests_stay_fast_while_the_record_database_is_down() -> None:
    runtime = get_runtime()
    assert runtime is not None
    from e2e_otel.conf import resolve

    config = resolve({"ENVIRONMENT": "testing", "RECORD_QUEUE_SIZE": 5, "RECORD_FLUSH_INTERVAL": 0.02}, environ={})
    writer = RecordWriter(config, Sanitizer(), alias="unreachable")
    processor = WorkflowSpanProcessor.from_config(config, writer)
    runtime.derived.add(processor)
    client = Client()
    try:
        durations = []
        for _ in range(15):
            started = time.perf_counter()
            assert client.get("/ping/").status_code == 200
            durations.append(time.perf_counter() - started)
        assert runtime.derived.queue.flush(5)  # every step offered to the writer
    finally:
        runtime.derived.remove(processor)
        writer.shutdown(2)
    assert max(durations) < 0.5
    stats = processor.stats()
    dropped = stats["dropped"]["queue_full"] + stats["dropped"]["db_error"]
    assert dropped >= 5 and dropped + stats["queue_depth"] >= 15  # at most 5 pending + 5 queued kept
    assert stats["written"]["step"] == 0 and "OperationalError" in (stats["last_error"] or "")


def test_browser_spans_fed_to_the_runtime_join_the_session(records: WorkflowSpanProcessor) -> None:
    """What the ingestion endpoint does with a browser's spans (``runtime.ingest_spans``)."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope
    from opentelemetry.trace import SpanContext, SpanKind, TraceFlags

    trace_id, browser_span_id = uuid.uuid4().int, 0x1F2E3D4C5B6A7988
    started = time.time_ns()
    response = Client().get("/ping/", HTTP_TRACEPARENT=f"00-{trace_id:032x}-{browser_span_id:016x}-01",
                            HTTP_BAGGAGE="e2e.workflow=product-fetch")
    assert response.status_code == 200
    browser = ReadableSpan(
        name="HTTP GET",
        context=SpanContext(trace_id, browser_span_id, is_remote=False, trace_flags=TraceFlags(1)),
        parent=None, kind=SpanKind.CLIENT,
        resource=Resource.create({"service.name": "shop-web", "telemetry.sdk.language": "webjs"}),
        attributes={"http.method": "GET", "http.url": "http://localhost:3000/ping/?user=42"},
        instrumentation_scope=InstrumentationScope("@opentelemetry/instrumentation-fetch"),
        start_time=started - 1_000_000, end_time=time.time_ns(),
    )
    runtime = get_runtime()
    assert runtime is not None
    runtime.ingest_spans([browser])
    flush(records)
    found = WorkflowSession.objects.get(correlation_id=uuid.UUID(int=trace_id))
    steps = list(found.steps.order_by("start_time"))
    assert [(s.layer, s.component) for s in steps] == [("frontend", "/ping/"), ("api", "/ping/")]
    assert steps[1].parent_span_id == steps[0].span_id
    assert found.workflow_type == "product-fetch" and found.status == "completed"
