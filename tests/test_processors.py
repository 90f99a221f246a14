"""WorkflowSpanProcessor + RecordWriter against the test database, with a local TracerProvider."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import baggage, context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased, TraceIdRatioBased
from opentelemetry.trace import SpanKind, Status, StatusCode

from e2e_otel import signals
from e2e_otel.conf import resolve
from e2e_otel.models import ErrorLog, PerformanceSnapshot, TraceStep, WorkflowSession
from e2e_otel.processors import WorkflowSpanProcessor, build_record_processor
from e2e_otel.propagation import CorrelationIdGenerator, format_correlation_id
from e2e_otel.sampling import RecordOnlySampler
from e2e_otel.sanitize import Sanitizer
from e2e_otel.spans_to_records import (
    _normalised_frames,
    classify,
    classify_error,
    error_fingerprint,
    is_frontend_span,
    step_from_span,
)
from e2e_otel.store import RecordWriter

pytestmark = [pytest.mark.mysql, pytest.mark.django_db(transaction=True)]


class Harness:
    def __init__(self, *, sample_rate: float = 1.0, **options: Any) -> None:
        self.config = resolve({"ENVIRONMENT": "testing", "RECORD_FLUSH_INTERVAL": 0.02, **options}, environ={})
        self.writer = RecordWriter(self.config, Sanitizer())
        self.processor = WorkflowSpanProcessor.from_config(self.config, self.writer)
        sampler = ALWAYS_ON if sample_rate >= 1 else RecordOnlySampler(ParentBased(TraceIdRatioBased(sample_rate)))
        self.provider = TracerProvider(sampler=sampler, id_generator=CorrelationIdGenerator())
        self.provider.add_span_processor(self.processor)
        self.tracer = self.provider.get_tracer("tests")

    def flush(self) -> None:
        assert self.processor.force_flush(10_000)

    def request(self, method: str = "GET", route: str = "items/", *, fail: bool = False,
                sql: str | None = "SELECT `testapp_item`.`id` FROM `testapp_item` WHERE `id` = 42",
                ctx: Any = None) -> int:
        """A server span with one database child; returns the trace id."""
        with self.tracer.start_as_current_span(
            f"{method} {route}", kind=SpanKind.SERVER, context=ctx,
            attributes={"http.method": method, "http.route": route, "http.status_code": 500 if fail else 200},
        ) as server:
            if sql is not None:
                with self.tracer.start_as_current_span("SELECT", kind=SpanKind.CLIENT,
                                                       attributes={"db.system": "mysql", "db.name": "shop",
                                                                   "db.statement": sql}):
                    time.sleep(0.002)
            if fail:
                try:
                    raise LookupError("order 1234 not found for user 77")
                except LookupError as exc:
                    server.record_exception(exc)
                    server.set_status(Status(StatusCode.ERROR))
            return server.get_span_context().trace_id

    def close(self) -> None:
        self.writer.shutdown(5)
        self.provider.shutdown()


@pytest.fixture
def harness() -> Iterator[Any]:
    made: list[Harness] = []

    def make(**options: Any) -> Harness:
        made.append(Harness(**options))
        return made[-1]

    yield make
    for item in made:
        item.close()


def session_of(trace_id: int) -> WorkflowSession:
    return WorkflowSession.objects.get(correlation_id=uuid.UUID(int=trace_id))


def test_spans_become_one_session_with_ordered_steps(harness: Any) -> None:
    h = harness()
    trace_id = h.request()
    h.flush()
    session = session_of(trace_id)
    assert session.workflow_type == "GET /items/"
    assert session.workflow_type_source == "route"
    assert session.status == "completed" and session.end_time is not None
    steps = list(session.steps.order_by("start_time"))
    assert [(s.layer, s.component, s.operation) for s in steps] == [
        ("api", "/items/", "GET"), ("database", "testapp_item", "SELECT")]
    assert steps[1].parent_span_id == steps[0].span_id == session.root_span_id
    assert steps[1].metadata["db.statement"].endswith("WHERE `id` = ?")
    for step in steps:
        expected = (step.end_time - step.start_time).total_seconds() * 1000
        assert step.duration_ms == pytest.approx(expected, abs=0.01)
    assert steps[1].duration_ms >= 2
    assert session.step_count == 2 and session.error_count == 0
    stats = h.processor.stats()
    assert stats["written"]["step"] == 2 and stats["written"]["session"] == 1


def test_on_start_copies_workflow_baggage_and_inherits_the_internal_mark(harness: Any) -> None:
    """Both lookups read the explicit parent context when given, else the current one; the mark
    passes down whole subtrees, also from a parent that already ended."""
    from opentelemetry import trace

    from e2e_otel.correlation import begin_internal_request, end_internal_request, internal_requests_in_flight
    from e2e_otel.spans_to_records import ATTR_INTERNAL, ATTR_WORKFLOW_BAGGAGE

    tracer = harness().tracer
    begin_internal_request()  # what CorrelationMiddleware.process_view does when it marks a server span
    try:
        internal = tracer.start_span("GET metrics", kind=SpanKind.SERVER, attributes={ATTR_INTERNAL: "metrics"})
        plain = tracer.start_span("GET items/", kind=SpanKind.SERVER)
        with trace.use_span(internal):
            child = tracer.start_span("SELECT")
            with trace.use_span(child):
                grandchild = tracer.start_span("SELECT")
            explicit = tracer.start_span("SELECT", context=trace.set_span_in_context(plain))
        internal.end()
        late = tracer.start_span("SELECT", context=trace.set_span_in_context(internal))
    finally:
        end_internal_request()
    assert [s.attributes.get(ATTR_INTERNAL) for s in (child, grandchild, late)] == ["metrics"] * 3
    assert ATTR_INTERNAL not in explicit.attributes and ATTR_INTERNAL not in plain.attributes
    assert not internal_requests_in_flight()  # app requests then skip the parent lookup altogether

    token = context.attach(baggage.set_baggage("e2e.workflow", "x" * 150))
    try:
        current = tracer.start_span("current")
        other = tracer.start_span("explicit", context=baggage.set_baggage("e2e.workflow", "other", context.Context()))
        empty = tracer.start_span("no baggage", context=context.Context())
    finally:
        context.detach(token)
    assert ATTR_WORKFLOW_BAGGAGE not in current.attributes  # over 100 characters: not a workflow name
    assert other.attributes[ATTR_WORKFLOW_BAGGAGE] == "other"
    assert ATTR_WORKFLOW_BAGGAGE not in empty.attributes


def test_workflow_type_from_baggage_and_rules(harness: Any) -> None:
    h = harness(WORKFLOWS={"checkout": ["POST /api/v1/checkout/*"]})
    by_rule = h.request("POST", "api/v1/checkout/<int:cart>/")
    by_route = h.request("POST", "api/v1/cart/")
    token = context.attach(baggage.set_baggage("e2e.workflow", "product-fetch"))
    try:
        by_baggage = h.request("POST", "api/v1/checkout/<int:cart>/")
    finally:
        context.detach(token)
    h.flush()
    assert (session_of(by_rule).workflow_type, session_of(by_rule).workflow_type_source) == ("checkout", "rule")
    assert session_of(by_route).workflow_type == "POST /api/v1/cart/"
    assert (session_of(by_baggage).workflow_type, session_of(by_baggage).workflow_type_source) == (
        "product-fetch", "baggage")


def test_errors_group_by_fingerprint_and_fail_the_session(harness: Any) -> None:
    h = harness()
    received: list[tuple[str, Any]] = []

    def on_error(sender: Any, error: ErrorLog, created: bool, **kwargs: Any) -> None:
        received.append(("error", created))

    def on_closed(sender: Any, session: WorkflowSession, reason: str, **kwargs: Any) -> None:
        received.append(("closed", (session.status, reason)))

    signals.error_recorded.connect(on_error)
    signals.workflow_closed.connect(on_closed)
    try:
        first = h.request("GET", "orders/<int:pk>/", fail=True)
        h.flush()
        second = h.request("GET", "orders/<int:pk>/", fail=True)
        h.flush()
    finally:
        signals.error_recorded.disconnect(on_error)
        signals.workflow_closed.disconnect(on_closed)
    assert session_of(first).status == "failed" and session_of(second).status == "failed"
    assert session_of(first).error_count == 1
    errors = list(ErrorLog.objects.all())
    assert len(errors) == 1
    error = errors[0]
    assert error.occurrences == 2
    assert error.error_type == "LookupError" and error.layer == "api" and error.component == "/orders/<int:pk>/"
    assert error.correlation_id == uuid.UUID(int=second)
    assert "raise LookupError" in error.stack_trace and error.category == "unknown"
    assert ("error", True) in received and ("error", False) in received
    assert ("closed", ("failed", "root_ended")) in received


def test_unsampled_traces_kept_only_when_failed_or_slow(harness: Any) -> None:
    h = harness(sample_rate=0.0, SLOW_SPAN_MS=30)
    fast_ok = h.request()
    failed = h.request(fail=True)
    with h.tracer.start_as_current_span("GET slow/", kind=SpanKind.SERVER,
                                        attributes={"http.method": "GET", "http.route": "slow/"}) as span:
        time.sleep(0.05)
        slow = span.get_span_context().trace_id
    assert not span.get_span_context().trace_flags.sampled
    h.flush()
    ids = {uuid.UUID(int=t) for t in (fast_ok, failed, slow)}
    stored = set(WorkflowSession.objects.filter(correlation_id__in=ids).values_list("correlation_id", flat=True))
    assert stored == {uuid.UUID(int=failed), uuid.UUID(int=slow)}
    assert session_of(failed).step_count == 2  # the held database span came along
    assert h.processor.stats()["held_traces"] == 0


def test_unsampled_hold_is_bounded(harness: Any) -> None:
    h = harness(sample_rate=0.0)
    h.processor._max_traces = 2  # small bound to exercise eviction
    roots = [h.tracer.start_span(f"job {i}") for i in range(3)]
    for root in roots:
        parent = __import__("opentelemetry").trace.set_span_in_context(root)
        with h.tracer.start_as_current_span("child", context=parent):
            pass
    assert h.processor.stats()["held_traces"] == 2
    assert h.processor.stats()["dropped"]["unsampled_overflow"] == 1
    for root in roots:
        root.end()


def test_spans_ending_after_their_root_are_decided_at_once(harness: Any) -> None:
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, set_span_in_context

    h = harness(sample_rate=0.0)

    def streaming(fail: bool) -> tuple[int, Any]:
        """A request whose streaming work (and its child) ends after the server span."""
        root = h.tracer.start_span("GET stream/", kind=SpanKind.SERVER,
                                   attributes={"http.method": "GET", "http.route": "stream/"})
        late = h.tracer.start_span("stream body", context=set_span_in_context(root))
        with h.tracer.start_as_current_span("SELECT", kind=SpanKind.CLIENT, context=set_span_in_context(root),
                                            attributes={"db.system": "mysql", "db.statement": "SELECT 1"}):
            pass
        if fail:
            root.set_status(Status(StatusCode.ERROR))
        root.end()
        h.tracer.start_span("render chunk", context=set_span_in_context(late)).end()
        return root.get_span_context().trace_id, late

    kept, kept_late = streaming(fail=True)
    dropped, dropped_late = streaming(fail=False)
    assert h.processor.stats()["held_traces"] == 2  # the chunks' parents are still open
    kept_late.end()
    dropped_late.end()
    assert h.processor.stats()["held_traces"] == 0  # nothing waits for a root that already ended
    # Requests reusing one correlation id share the trace but are decided one by one.
    reused = uuid.uuid4().int
    remote = set_span_in_context(NonRecordingSpan(SpanContext(reused, 0xABC, is_remote=True,
                                                              trace_flags=TraceFlags(0))))
    h.request(ctx=remote)
    h.request(ctx=remote, fail=True)
    h.flush()
    assert session_of(kept).step_count == 4
    assert not WorkflowSession.objects.filter(correlation_id=uuid.UUID(int=dropped)).exists()
    assert session_of(reused).step_count == 2 and session_of(reused).status == "failed"
    assert h.processor.stats()["held_traces"] == 0


def test_orphan_holds_expire_instead_of_evicting_live_traces(harness: Any) -> None:
    from opentelemetry.trace import set_span_in_context

    h = harness(sample_rate=0.0)
    h.processor._ttl = 0.2  # seconds; 60 in production
    h.processor._max_traces = 3
    orphans = [h.tracer.start_span(f"never ends {i}") for i in range(3)]
    for orphan in orphans:  # e.g. a root ended in another process: only its child is held here
        h.tracer.start_span("child", context=set_span_in_context(orphan)).end()
    assert h.processor.stats()["held_traces"] == 3
    time.sleep(0.3)
    live = h.tracer.start_span("GET live/", kind=SpanKind.SERVER,
                               attributes={"http.method": "GET", "http.route": "live/"})
    h.tracer.start_span("work", context=set_span_in_context(live)).end()
    stats = h.processor.stats()
    assert stats["held_traces"] == 1 and stats["dropped"]["unsampled_overflow"] == 3
    others = [h.tracer.start_span(f"fresh {i}") for i in range(2)]
    for other in others:
        h.tracer.start_span("child", context=set_span_in_context(other)).end()
    live.set_status(Status(StatusCode.ERROR))
    live.end()  # not evicted by the orphans: recorded with its child
    h.flush()
    assert session_of(live.get_span_context().trace_id).step_count == 2
    assert h.processor.stats()["held_traces"] == 2
    for span in [*orphans, *others]:
        span.end()


def test_step_cap_counts_drops(harness: Any) -> None:
    h = harness(MAX_STEPS_PER_WORKFLOW=3)
    with h.tracer.start_as_current_span("GET batch/", kind=SpanKind.SERVER,
                                        attributes={"http.method": "GET", "http.route": "batch/"}) as root:
        for i in range(4):
            with h.tracer.start_as_current_span(f"work {i}"):
                pass
    h.flush()
    session = session_of(root.get_span_context().trace_id)
    assert session.step_count == 3 and session.steps.count() == 3
    assert session.dropped_step_count == 2
    assert h.processor.stats()["dropped"]["step_cap"] == 2


def test_idle_workflow_closed_by_sweep(harness: Any) -> None:
    h = harness(WORKFLOW_IDLE_TIMEOUT=1)
    closed: list[str] = []

    def on_closed(sender: Any, session: WorkflowSession, reason: str, **kwargs: Any) -> None:
        closed.append(reason)

    signals.workflow_closed.connect(on_closed)
    root = h.tracer.start_span("long job")  # never ends: only the idle timeout can close it
    try:
        from opentelemetry import trace

        with h.tracer.start_as_current_span("step", context=trace.set_span_in_context(root)):
            pass
        h.flush()
        session = session_of(root.get_span_context().trace_id)
        assert session.status == "in_progress"
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and "idle_timeout" not in closed:
            time.sleep(0.1)
    finally:
        signals.workflow_closed.disconnect(on_closed)
    session.refresh_from_db()
    assert session.status == "completed" and session.end_time == session.last_activity
    assert "idle_timeout" in closed


def test_metric_events_become_snapshots(harness: Any) -> None:
    from e2e_otel.workflows import PerformanceMonitor

    h = harness()
    with h.tracer.start_as_current_span("GET report/", kind=SpanKind.SERVER,
                                        attributes={"http.method": "GET", "http.route": "report/"}) as root:
        PerformanceMonitor(tracer_provider=h.provider).record_metric(
            "frontend", "checkout-page", "render_time", 321.5, "ms", metadata={"api_token": "tok-1"})
    h.flush()
    snapshot = PerformanceSnapshot.objects.get(correlation_id=uuid.UUID(int=root.get_span_context().trace_id))
    assert (snapshot.layer, snapshot.component, snapshot.metric_name, snapshot.metric_value, snapshot.unit) == (
        "frontend", "checkout-page", "render_time", 321.5, "ms")
    assert snapshot.metadata == {"api_token": "[REDACTED]"}


def test_build_record_processor_honours_records_enabled() -> None:
    from types import SimpleNamespace

    off = SimpleNamespace(config=resolve({"RECORDS_ENABLED": False}, environ={}), sanitizer=Sanitizer())
    assert build_record_processor(off) is None  # type: ignore[arg-type]
    on = SimpleNamespace(config=resolve({"RECORDS_ENABLED": True}, environ={}), sanitizer=Sanitizer())
    processor = build_record_processor(on)  # type: ignore[arg-type]
    assert isinstance(processor, WorkflowSpanProcessor)
    processor.shutdown()


def test_correlation_ids_are_trace_ids(harness: Any) -> None:
    h = harness()
    trace_id = h.request()
    h.flush()
    assert str(session_of(trace_id).correlation_id) == format_correlation_id(trace_id)
    assert TraceStep.objects.filter(correlation_id=uuid.UUID(int=trace_id)).count() == 2


# --- pure mapping (no database) ---------------------------------------------------------------------


def _ended(kind: SpanKind = SpanKind.INTERNAL, *, resource: Resource | None = None, scope: str = "tests",
           **attributes: Any) -> Any:
    provider = TracerProvider(resource=resource or Resource.create({}))
    span = provider.get_tracer(scope).start_span("span", kind=kind, attributes=attributes)
    span.end()
    return span


@pytest.mark.django_db(transaction=False)
def test_layer_component_operation_rules() -> None:
    assert classify(_ended(SpanKind.SERVER, **{"http.method": "GET", "http.route": "items/<int:pk>/"})) == (
        "api", "/items/<int:pk>/", "GET")
    assert classify(_ended(SpanKind.SERVER, **{"http.method": "GET"})) == ("api", "<unmatched>", "GET")
    assert classify(_ended(SpanKind.CLIENT, **{"db.system": "mysql", "db.name": "shop",
                                               "db.statement": "UPDATE `shop_cart` SET qty = 3 WHERE id = 9"})) == (
        "database", "shop_cart", "UPDATE")
    assert classify(_ended(SpanKind.CLIENT, **{"db.system": "redis", "db.statement": "GET cart:9"}))[0] == "cache"
    assert classify(_ended(SpanKind.CLIENT, **{"http.method": "POST", "server.address": "api.stripe.com",
                                               "http.url": "https://api.stripe.com/v1/charges/ch_123"})) == (
        "external", "api.stripe.com", "POST")
    assert classify(_ended(**{"e2e.layer": "cache", "e2e.component": "redis", "db.system": "mysql"}))[:2] == (
        "cache", "redis")
    browser = Resource.create({"telemetry.sdk.language": "webjs"})
    fetch = _ended(SpanKind.CLIENT, resource=browser,
                   **{"http.method": "GET", "http.url": "https://shop.example/api/v1/items/42?token=abc"})
    assert is_frontend_span(fetch)
    assert classify(fetch) == ("frontend", "/api/v1/items/:id", "GET")
    assert is_frontend_span(_ended(scope="@opentelemetry/instrumentation-document-load"))
    assert classify(_ended())[0] == "internal" and not is_frontend_span(_ended())


@pytest.mark.django_db(transaction=False)
def test_classify_remembers_only_the_last_ended_span(monkeypatch: pytest.MonkeyPatch) -> None:
    from e2e_otel import spans_to_records

    computed: list[str] = []
    real = spans_to_records._classify

    def counting(span: Any, attributes: Any) -> tuple[str, str, str]:
        computed.append(span.name)
        return real(span, attributes)

    monkeypatch.setattr(spans_to_records, "_classify", counting)
    query = _ended(SpanKind.CLIENT, **{"db.system": "mysql", "db.statement": "SELECT a FROM `shop_cart` WHERE id = %s"})
    request = _ended(SpanKind.SERVER, **{"http.method": "GET", "http.route": "cart/"})
    twin = _ended(SpanKind.CLIENT, **{"db.system": "mysql", "db.statement": "SELECT a FROM `shop_order` WHERE id = %s"})

    step = step_from_span(query)  # the record processor classifies first; the evaluator asks again
    assert step is not None and classify(query) == ("database", "shop_cart", "SELECT") == (
        step.layer, step.component, step.operation)
    assert len(computed) == 1
    # Another span object is never answered from the memo, nor is the first one after it was replaced.
    assert classify(request) == ("api", "/cart/", "GET")
    assert classify(twin) == ("database", "shop_order", "SELECT")
    assert classify(query) == ("database", "shop_cart", "SELECT")
    assert len(computed) == 4
    assert spans_to_records._last_classified[0] is query  # one entry: only the last span is held

    # A span still running can change: it is classified afresh every time.
    live = TracerProvider().get_tracer("tests").start_span("live", kind=SpanKind.CLIENT)
    assert classify(live)[0] == "internal"
    live.set_attribute("db.system", "mysql")
    assert classify(live)[0] == "database"
    live.end()


@pytest.mark.django_db(transaction=False)
def test_resource_facts_follow_each_span_resource() -> None:
    shop, web = Resource.create({"service.name": "shop"}), Resource.create({"service.name": "web",
                                                                             "telemetry.sdk.language": "webjs"})
    for resource, service, layer in [(shop, "shop", "internal"), (web, "web", "frontend"), (shop, "shop", "internal")]:
        step = step_from_span(_ended(resource=resource))
        assert step is not None and (step.service, step.layer) == (service, layer)


@pytest.mark.django_db(transaction=False)
def test_error_fingerprint_ignores_line_numbers_message_and_ids() -> None:
    a = ('Traceback:\n  File "/srv/app/views.py", line 10, in checkout\n    pay()\n'
         '  File "/srv/app/pay.py", line 3, in pay\n')
    b = a.replace("line 10", "line 12").replace("line 3", "line 4")
    assert error_fingerprint("KeyError", "api", "/cart/", "GET", a) == error_fingerprint(
        "KeyError", "api", "/cart/", "GET", b)
    assert error_fingerprint("KeyError", "api", "/cart/", "GET", a) != error_fingerprint(
        "KeyError", "api", "/cart/", "POST", a)
    assert error_fingerprint("KeyError", "api", "/items/41", "GET", "") == error_fingerprint(
        "KeyError", "api", "/items/42", "GET", "")
    other = a.replace("in pay", "in refund")
    assert error_fingerprint("KeyError", "api", "/cart/", "GET", a) != error_fingerprint(
        "KeyError", "api", "/cart/", "GET", other)
    assert classify_error("django.db.utils.OperationalError") == ("critical", "database")
    assert classify_error("rest_framework.exceptions.NotAuthenticated") == ("warning", "auth")
    assert classify_error("django.core.exceptions.ValidationError") == ("warning", "validation")
    assert classify_error("requests.exceptions.ConnectionError") == ("error", "network")
    assert classify_error("requests.exceptions.ReadTimeout") == ("error", "timeout")
    assert classify_error("PaymentDeclined", "card declined") == ("error", "unknown")
    assert step_from_span(_ended()) is not None


@pytest.mark.django_db(transaction=True)
def test_debugging_api_and_metrics_traffic_is_not_recorded_as_workflows() -> None:
    from django.test import Client

    from e2e_otel.bootstrap import get_runtime
    from e2e_otel.models import TraceStep, WorkflowSession

    runtime = get_runtime()
    assert runtime is not None
    client = Client()
    api = client.get("/api/v1/debugging/workflow-sessions/", HTTP_AUTHORIZATION="Bearer test-api-key")
    scrape = client.get("/metrics")
    app = client.get("/items/")
    assert (api.status_code, scrape.status_code, app.status_code) == (200, 200, 200)
    assert runtime.force_flush(10)
    recorded = set(WorkflowSession.objects.values_list("correlation_id", flat=True))
    assert str(next(iter(recorded))) == app["X-Correlation-ID"] and len(recorded) == 1
    assert TraceStep.objects.filter(correlation_id=api["X-Correlation-ID"]).count() == 0


@pytest.mark.django_db(transaction=False)
def test_fingerprint_of_hostile_stack_trace_is_linear_and_real_paths_unchanged() -> None:
    # A browser controls exception.stacktrace (public ingestion endpoint): 4 KB paths made only of
    # separators used to cost quadratic regex time per frame (~0.1 s each).
    hostile = [f'  File "{sep * 2048}", line 1, in f\n' for sep in ("//", "\\a", "/lib/python3.")]
    many = "Traceback (most recent call last):\n" + hostile[0] * 100
    started = time.perf_counter()
    error_fingerprint("Error", "frontend", "/x", "GET", many)
    for index in range(10):
        error_fingerprint("Error", "frontend", "/x", "GET", hostile[index % 3])
    assert time.perf_counter() - started < 0.5

    real = "".join(f'  File "{path}", line {n}, in fn{n}\n' for n, path in enumerate((
        "/usr/lib/python3.11/json/decoder.py",
        "/srv/venv/lib/python3.11/site-packages/django/db/models/query.py",
        "C:\\Python311\\Lib\\site-packages\\django\\core\\handlers\\base.py",
        "/usr/lib/python3/dist-packages/requests/api.py",
        "/opt/app/lib/python3.12/site-packages/vendor/site-packages/x.py",
        "/app/shop/views.py",
    )))
    assert _normalised_frames(real) == [
        "django/db/models/query.py:fn1", "django\\core\\handlers\\base.py:fn2", "requests/api.py:fn3",
        "x.py:fn4", "/app/shop/views.py:fn5",
    ]
    assert _normalised_frames(real.splitlines()[0]) == ["json/decoder.py:fn0"]
    js = "TypeError: x\n    at handleClick (/static/app.3f2a.js:10:5)\n    at HTMLButtonElement.<anonymous> (https://shop.example/app.js:2:1)"
    assert _normalised_frames(js) == ["handleClick:app.#f#a.js", "HTMLButtonElement.<anonymous>:https"]


@pytest.mark.django_db(transaction=False)
def test_raw_text_is_cut_at_capture_so_queued_steps_stay_small() -> None:
    from e2e_otel.sanitize import MAX_SQL_LENGTH, scrub_sql

    statement = "SELECT `id` FROM `shop_item` WHERE `id` IN (" + ", ".join(["42"] * 40_000) + ")"
    frames = "".join(f'  File "/srv/app/mod{n}.py", line {n}, in fn{n}\n' for n in range(2000))
    stack = "Traceback (most recent call last):\n" + frames + "KeyError: 'boom'\n"
    provider = TracerProvider()
    span = provider.get_tracer("tests").start_span("SELECT", kind=SpanKind.CLIENT, attributes={
        "db.system": "mysql", "db.statement": statement})
    span.add_event("exception", {"exception.type": "KeyError", "exception.message": "x" * 200_000,
                                 "exception.stacktrace": stack})
    span.end()
    step = step_from_span(span)
    assert step is not None and len(stack) > 80_000 and len(statement) > 100_000
    assert len(step.attributes["db.statement"]) == MAX_SQL_LENGTH + 1
    assert scrub_sql(step.attributes["db.statement"]) == scrub_sql(statement)  # stored text unchanged
    assert step.component == "shop_item" and step.operation == "SELECT"
    (error,) = step.errors
    assert len(error.message) == 5 * 1024
    assert len(error.stacktrace) == 20_000 and error.stacktrace.endswith("in fn1999\nKeyError: 'boom'\n")
    assert error.fingerprint == error_fingerprint("KeyError", "database", "shop_item", "SELECT", stack)
