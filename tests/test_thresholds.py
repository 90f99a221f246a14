"""ThresholdEvaluator / ThresholdMonitor: real spans from a local TracerProvider, a private registry."""

from __future__ import annotations

import os
import time

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind, Status, StatusCode
from prometheus_client import CollectorRegistry

from e2e_otel.evaluator import PENDING_BREACHES, ThresholdEvaluator, classify
from e2e_otel.metrics import OTHER, E2EMetrics
from e2e_otel.models import PerformanceSnapshot, PerformanceThreshold, WorkflowSession
from e2e_otel.monitor import ThresholdMonitor
from e2e_otel.signals import threshold_breached, workflow_closed
from e2e_otel.thresholds import Rule, RuleSet, load_rules, to_base_unit
from e2e_otel.windows import SlidingWindow
from tests.forking import check_in_child


@pytest.fixture
def setup():
    """A private registry + metrics, an evaluator on a local provider, and a span helper."""
    registry = CollectorRegistry()
    metrics = E2EMetrics(registry, max_labels=50)
    evaluator = ThresholdEvaluator(metrics)
    provider = TracerProvider()
    provider.add_span_processor(evaluator)
    tracer = provider.get_tracer("tests")

    def span(name: str, seconds: float, *, kind: SpanKind = SpanKind.INTERNAL, attributes=None,
             error: Exception | None = None, status_error: bool = False) -> None:
        start = time.time_ns()
        s = tracer.start_span(name, kind=kind, attributes=attributes or {}, start_time=start)
        if error is not None:
            s.record_exception(error)
        if error is not None or status_error:
            s.set_status(Status(StatusCode.ERROR))
        s.end(end_time=start + int(seconds * 1e9))

    def value(name: str, **labels: str) -> float:
        return registry.get_sample_value(name, labels) or 0.0

    yield evaluator, span, value, registry
    provider.shutdown()


def _db(table: str) -> dict[str, object]:
    return {"db.system": "mysql", "db.statement": f"SELECT id FROM {table} WHERE id = %s"}


def test_units_and_rule_direction() -> None:
    assert to_base_unit(250, "ms") == 0.25
    assert to_base_unit(80, "percent") == 0.8
    assert to_base_unit(3, "s") == 3
    above = Rule("api", "response_time", "", 0.5, 2.0, "above")
    assert [above.severity(v) for v in (0.4, 0.5, 0.6, 2.5)] == [None, None, "warning", "critical"]
    below = Rule("cache", "hit_rate", "", 0.8, 0.6, "below")
    assert [below.severity(v) for v in (0.9, 0.7, 0.5)] == [None, "warning", "critical"]


def test_defaults_rule_set_in_base_units() -> None:
    rules = RuleSet.defaults()
    assert rules.lookup("database", "query_time") == Rule("database", "query_time", "", 0.1, 0.5, "above")
    assert rules.lookup("cache", "hit_rate").direction == "below"
    assert rules.lookup("api", "error_rate").critical == pytest.approx(0.10)


def test_step_metrics_and_duration_breaches(setup) -> None:
    evaluator, span, value, _ = setup
    span("GET items/<int:pk>/", 0.05, kind=SpanKind.SERVER,
         attributes={"http.method": "GET", "http.route": "items/<int:pk>/", "http.status_code": 200})
    span("SELECT", 0.03, kind=SpanKind.CLIENT, attributes=_db("shop_order"))
    span("SELECT", 0.3, kind=SpanKind.CLIENT, attributes=_db("shop_order"))   # > 100 ms warning
    span("SELECT", 0.7, kind=SpanKind.CLIENT, attributes=_db("shop_product"))  # > 500 ms critical
    assert value("e2e_otel_steps_total", layer="api", component="/items/<int:pk>/", status="ok") == 1
    assert value("e2e_otel_steps_total", layer="database", component="shop_order", status="ok") == 2
    assert value("e2e_otel_step_duration_seconds_count", layer="database", component="shop_order") == 2
    assert value("e2e_otel_step_duration_seconds_bucket", layer="database", component="shop_order",
                 le="0.05") == 1
    assert value("e2e_otel_step_duration_seconds_sum", layer="database",
                 component="shop_order") == pytest.approx(0.33)
    assert value("e2e_otel_threshold_breaches_total", layer="database", metric="query_time",
                 severity="warning") == 1
    assert value("e2e_otel_threshold_breaches_total", layer="database", metric="query_time",
                 severity="critical") == 1
    assert value("e2e_otel_threshold_breaches_total", layer="api", metric="response_time",
                 severity="warning") == 0
    pending = list(evaluator.pending)
    assert [(b.component, b.severity) for b in pending] == [("shop_order", "warning"), ("shop_product", "critical")]
    assert all(b.correlation_id and len(b.correlation_id) == 36 for b in pending)


def test_component_rule_wins_over_layer_rule(setup) -> None:
    evaluator, span, value, _ = setup
    evaluator.rules = RuleSet([
        Rule("database", "query_time", "", 0.1, 0.5),
        Rule("database", "query_time", "shop_report", 1.0, 3.0),
    ], source="test")
    span("SELECT", 0.6, kind=SpanKind.CLIENT, attributes=_db("shop_report"))  # under its own rule
    span("SELECT", 0.6, kind=SpanKind.CLIENT, attributes=_db("shop_order"))   # layer rule: critical
    assert value("e2e_otel_threshold_breaches_total", layer="database", metric="query_time",
                 severity="critical") == 1
    assert value("e2e_otel_threshold_breaches_total", layer="database", metric="query_time",
                 severity="warning") == 0


def test_errors_by_type_and_error_status(setup) -> None:
    _, span, value, _ = setup
    span("GET fail/", 0.01, kind=SpanKind.SERVER, attributes={"http.method": "GET", "http.route": "fail/"},
         error=KeyError("x"))
    span("work", 0.01, error=ValueError("bad"))
    span("GET broken/", 0.01, kind=SpanKind.SERVER,
         attributes={"http.method": "GET", "http.route": "broken/", "http.status_code": 503})
    assert value("e2e_otel_errors_total", layer="api", error_type="KeyError") == 1
    assert value("e2e_otel_errors_total", layer="internal", error_type="ValueError") == 1
    assert value("e2e_otel_errors_total", layer="api", error_type="503") == 1
    assert value("e2e_otel_steps_total", layer="api", component="/broken/", status="error") == 1


def test_error_ratio_window_and_its_rule(setup) -> None:
    evaluator, span, value, _ = setup
    for i in range(20):
        span("GET x/", 0.001, kind=SpanKind.SERVER,
             attributes={"http.method": "GET", "http.route": "x/", "http.status_code": 500 if i % 5 == 0 else 200})
    monitor = ThresholdMonitor(evaluator, write_snapshots=False, refresh_interval=3600)
    monitor._last_refresh = time.monotonic()  # keep the defaults, no DB
    breaches = monitor.tick()
    assert value("e2e_otel_api_error_ratio") == pytest.approx(0.2)
    assert value("e2e_otel_threshold_breaches_total", layer="api", metric="error_rate",
                 severity="critical") == 1  # 20 % > 10 %
    assert any(b.metric == "error_rate" and b.severity == "critical" for b in breaches)


def test_error_ratio_needs_enough_requests(setup) -> None:
    evaluator, span, value, _ = setup
    span("GET x/", 0.001, kind=SpanKind.SERVER,
         attributes={"http.method": "GET", "http.route": "x/", "http.status_code": 500})
    monitor = ThresholdMonitor(evaluator, write_snapshots=False, refresh_interval=3600)
    monitor._last_refresh = time.monotonic()
    monitor.tick()
    assert value("e2e_otel_api_error_ratio") == 1.0
    assert value("e2e_otel_threshold_breaches_total", layer="api", metric="error_rate", severity="critical") == 0


def test_cache_hit_ratio_is_a_falling_threshold(setup) -> None:
    evaluator, span, value, _ = setup
    monitor = ThresholdMonitor(evaluator, write_snapshots=False, refresh_interval=3600)
    monitor._last_refresh = time.monotonic()
    monitor.tick()
    assert value("e2e_otel_cache_hit_ratio") == 1.0  # idle: nothing missed
    for i in range(10):
        span("cache.get", 0.001, attributes={"e2e.cache.hit": i < 7, "e2e.component": "sessions"})
    monitor.tick()
    assert value("e2e_otel_cache_hit_ratio") == pytest.approx(0.7)
    assert value("e2e_otel_steps_total", layer="cache", component="sessions", status="ok") == 10
    assert value("e2e_otel_threshold_breaches_total", layer="cache", metric="hit_rate", severity="warning") == 1
    for _ in range(10):
        span("cache.get", 0.001, attributes={"e2e.cache.hit": False, "e2e.component": "sessions"})
    monitor.tick()
    assert value("e2e_otel_cache_hit_ratio") == pytest.approx(0.35)
    assert value("e2e_otel_threshold_breaches_total", layer="cache", metric="hit_rate", severity="critical") == 1


def test_sliding_window_forgets_old_seconds() -> None:
    now = [1000.0]
    window = SlidingWindow(seconds=60, clock=lambda: now[0])
    window.add(True)
    window.add(False)
    now[0] += 30
    window.add(False)
    assert window.totals() == (3, 1)
    now[0] += 31  # the first second is now older than 60 s
    assert window.totals() == (1, 0)
    now[0] += 120
    assert window.totals() == (0, 0)


def test_component_and_error_type_caps(setup) -> None:
    _evaluator, span, value, registry = setup  # max_labels=50
    for n in range(300):
        span(f"GET r{n}/", 0.001, kind=SpanKind.SERVER, attributes={"http.method": "GET", "http.route": f"r{n}/"},
             error=type(f"Err{n}", (Exception,), {})("x"))
    components = {s.labels["component"] for m in registry.collect() if m.name == "e2e_otel_steps"
                  for s in m.samples if s.name == "e2e_otel_steps_total"}
    error_types = {s.labels["error_type"] for m in registry.collect() if m.name == "e2e_otel_errors"
                   for s in m.samples if s.name == "e2e_otel_errors_total"}
    assert len(components) == 51 and OTHER in components
    assert len(error_types) == 51 and OTHER in error_types
    assert value("e2e_otel_steps_total", layer="api", component=OTHER, status="error") == 250


def test_unknown_layer_attribute_is_not_a_label_value(setup) -> None:
    _, span, value, _ = setup
    span("weird", 0.001, attributes={"e2e.layer": "made-up-layer", "e2e.component": "c"})
    assert value("e2e_otel_steps_total", layer="internal", component="c", status="ok") == 1


def test_unmatched_route_never_uses_the_raw_path(setup) -> None:
    _, span, value, _ = setup
    span("GET", 0.001, kind=SpanKind.SERVER, attributes={"http.target": "/nope/123", "http.status_code": 404})
    assert value("e2e_otel_steps_total", layer="api", component="<unmatched>", status="ok") == 1


def test_classify_prefers_explicit_attributes() -> None:
    tracer = TracerProvider().get_tracer("t")
    with tracer.start_as_current_span("x", attributes={"e2e.layer": "frontend", "e2e.component": "cart"}) as s:
        pass
    assert classify(s) == ("frontend", "cart")


def test_workflow_closed_signal_counts_workflows(setup) -> None:
    evaluator, _, value, _ = setup
    workflow_closed.connect(evaluator.on_workflow_closed)
    try:
        for status, duration in (("completed", 1200.0), ("failed", 300.0), ("in_progress", None)):
            session = WorkflowSession(workflow_type="checkout", status=status, duration_ms=duration)
            workflow_closed.send(sender=WorkflowSession, session=session, reason="root_ended")
    finally:
        workflow_closed.disconnect(evaluator.on_workflow_closed)
    assert value("e2e_otel_workflows_total", workflow_type="checkout", status="completed") == 1
    assert value("e2e_otel_workflows_total", workflow_type="checkout", status="failed") == 1
    assert value("e2e_otel_workflow_duration_seconds_count", workflow_type="checkout") == 2
    assert value("e2e_otel_workflow_duration_seconds_sum", workflow_type="checkout") == pytest.approx(1.5)


def test_workflow_without_a_duration_adds_no_duration_series(setup) -> None:
    evaluator, _, value, registry = setup
    evaluator.on_workflow_closed(session=WorkflowSession(workflow_type="refund", status="completed"))
    evaluator.on_workflow_closed(session=WorkflowSession(workflow_type="refund", status="completed"))
    assert value("e2e_otel_workflows_total", workflow_type="refund", status="completed") == 2
    assert registry.get_sample_value("e2e_otel_workflow_duration_seconds_count", {"workflow_type": "refund"}) is None


@pytest.mark.django_db
def test_rules_load_from_table_with_unit_conversion() -> None:
    assert load_rules().source == "defaults"  # empty table
    PerformanceThreshold.objects.create(metric_name="query_time", layer="database", warning_threshold=20,
                                        critical_threshold=80, unit="ms")
    PerformanceThreshold.objects.create(metric_name="query_time", layer="database", component="shop_report",
                                        warning_threshold=2, critical_threshold=5, unit="s")
    PerformanceThreshold.objects.create(metric_name="response_time", layer="api", warning_threshold=1,
                                        critical_threshold=2, unit="ms", enabled=False)
    rules = load_rules()
    # 7 defaults, the database one overridden, one component rule added, api response_time switched off
    assert rules.source == "database" and len(rules) == 7
    assert rules.lookup("frontend", "render_time").warning == 0.2  # untouched layers keep their defaults
    assert rules.lookup("database", "query_time", "shop_order") == Rule("database", "query_time", "", 0.02, 0.08)
    assert rules.lookup("database", "query_time", "shop_report").warning == 2
    assert rules.lookup("api", "response_time") is None


@pytest.mark.django_db
def test_monitor_refresh_exports_threshold_gauges(setup) -> None:
    evaluator, _, value, _ = setup
    PerformanceThreshold.objects.create(metric_name="query_time", layer="database", warning_threshold=20,
                                        critical_threshold=80, unit="ms")
    monitor = ThresholdMonitor(evaluator, write_snapshots=False)
    monitor.refresh_rules()
    assert value("e2e_otel_threshold_value", layer="database", metric="query_time", severity="warning") == 0.02
    assert value("e2e_otel_threshold_value", layer="database", metric="query_time", severity="critical") == 0.08
    PerformanceThreshold.objects.all().delete()
    monitor.refresh_rules()  # back to the defaults
    assert value("e2e_otel_threshold_value", layer="database", metric="query_time", severity="warning") == 0.1
    assert value("e2e_otel_threshold_value", layer="system", metric="memory_usage", severity="critical") == 0.95


@pytest.mark.django_db
def test_system_breach_counts_signals_and_writes_one_snapshot(setup) -> None:
    evaluator, _, value, _ = setup
    PerformanceThreshold.objects.create(metric_name="memory_usage", layer="system", warning_threshold=0,
                                        critical_threshold=0.0001, unit="percent")
    received: list[dict] = []

    def receiver(sender, **kwargs):  # type: ignore[no-untyped-def]
        received.append(kwargs)

    threshold_breached.connect(receiver)
    try:
        monitor = ThresholdMonitor(evaluator)
        monitor.tick(now=1000.0)
        monitor.tick(now=1010.0)  # still in breach: counted again, no second snapshot within 60 s
    finally:
        threshold_breached.disconnect(receiver)
    assert 0 < value("e2e_otel_system_memory_usage_ratio") <= 1
    assert value("e2e_otel_threshold_breaches_total", layer="system", metric="memory_usage",
                 severity="critical") == 2
    memory = [r for r in received if r["metric"] == "memory_usage"]
    assert len(memory) == 2 and memory[0]["severity"] == "critical" and memory[0]["layer"] == "system"
    snapshots = list(PerformanceSnapshot.objects.filter(metric_name="memory_usage"))
    assert len(snapshots) == 1
    assert snapshots[0].threshold_status == "critical" and snapshots[0].layer == "system"
    assert snapshots[0].metric_value == pytest.approx(value("e2e_otel_system_memory_usage_ratio"), abs=0.05)


def test_on_end_never_raises(setup) -> None:
    evaluator, _, _, _ = setup

    class Broken:
        start_time = 1
        end_time = 2

        @property
        def attributes(self):  # type: ignore[no-untyped-def]
            raise RuntimeError("boom")

    evaluator.on_end(Broken())  # type: ignore[arg-type]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_monitor_thread_restarts_in_forked_child(setup) -> None:
    evaluator, _, _, _ = setup
    monitor = ThresholdMonitor(evaluator, write_snapshots=False, refresh_interval=3600, sample_interval=0.05)
    monitor._last_refresh = time.monotonic()
    monitor.start()
    try:  # in the child the monitor must be running again, on a new thread
        assert check_in_child(lambda: monitor._thread is not None and monitor._thread.is_alive()
                              and len(evaluator.pending) == 0)
    finally:
        monitor.stop()


# --- label poisoning, internal traffic, classification, breach overflow, fork -----------------------


def test_frontend_junk_cannot_push_api_routes_into_other() -> None:
    """300 browser spans with made-up names and exception types (one ingest POST can carry them)
    fill only the frontend budget; a real API route and its exception keep their own labels."""
    registry = CollectorRegistry()
    metrics = E2EMetrics(registry, max_labels=200)
    provider = TracerProvider()
    provider.add_span_processor(ThresholdEvaluator(metrics))
    tracer = provider.get_tracer("@opentelemetry/instrumentation-document-load")
    for n in range(300):
        with tracer.start_as_current_span(f"junk-{n}-" + "x" * 150, attributes={"e2e.layer": "frontend"}) as s:
            s.record_exception(type(f"Junk{n}Error" + "y" * 150, (Exception,), {})("x"))
            s.set_status(Status(StatusCode.ERROR))
    api = TracerProvider()
    api.add_span_processor(ThresholdEvaluator(metrics))
    with api.get_tracer("django").start_as_current_span(
            "GET orders/<int:pk>/", kind=SpanKind.SERVER,
            attributes={"http.method": "GET", "http.route": "orders/<int:pk>/"}) as s:
        s.record_exception(type("PaymentDeclined", (Exception,), {})("card"))
        s.set_status(Status(StatusCode.ERROR))
    value = registry.get_sample_value
    assert value("e2e_otel_steps_total", {"layer": "api", "component": "/orders/<int:pk>/", "status": "error"}) == 1

    def labels(family: str, sample: str, label: str, layer: str) -> set[str]:
        return {s.labels[label] for m in registry.collect() if m.name == family for s in m.samples
                if s.name == sample and s.labels["layer"] == layer}

    frontend = labels("e2e_otel_steps", "e2e_otel_steps_total", "component", "frontend")
    assert len(frontend) == 51 and OTHER in frontend  # min(50, 200) names + other
    assert max(len(c) for c in frontend) == 100  # long names are cut, not admitted whole
    assert value("e2e_otel_steps_total", {"layer": "frontend", "component": OTHER, "status": "error"}) == 250
    (api_error,) = labels("e2e_otel_errors", "e2e_otel_errors_total", "error_type", "api")
    assert api_error.endswith("PaymentDeclined")
    frontend_errors = labels("e2e_otel_errors", "e2e_otel_errors_total", "error_type", "frontend")
    assert len(frontend_errors) == 51 and max(len(e) for e in frontend_errors) == 100
    provider.shutdown()
    api.shutdown()


def test_internal_traffic_counts_as_steps_but_not_in_error_ratio_or_breaches(setup) -> None:
    evaluator, span, value, _ = setup
    internal = {"http.method": "GET", "http.route": "metrics", "e2e.internal": "metrics"}
    for _ in range(20):
        span("GET metrics", 0.001, kind=SpanKind.SERVER, attributes={**internal, "http.status_code": 500})
    span("GET metrics", 3.0, kind=SpanKind.SERVER, attributes={**internal, "http.status_code": 200})  # > 2 s
    assert value("e2e_otel_steps_total", layer="api", component="/metrics", status="error") == 20
    assert value("e2e_otel_steps_total", layer="api", component="/metrics", status="ok") == 1
    assert value("e2e_otel_threshold_breaches_total", layer="api", metric="response_time", severity="critical") == 0
    assert len(evaluator.pending) == 0
    monitor = ThresholdMonitor(evaluator, write_snapshots=False, refresh_interval=3600)
    monitor._last_refresh = time.monotonic()
    monitor.tick()
    assert value("e2e_otel_api_error_ratio") == 0.0
    assert value("e2e_otel_threshold_breaches_total", layer="api", metric="error_rate", severity="critical") == 0
    # the same slow request from the app itself does breach
    span("GET orders/", 3.0, kind=SpanKind.SERVER, attributes={"http.method": "GET", "http.route": "orders/"})
    assert value("e2e_otel_threshold_breaches_total", layer="api", metric="response_time", severity="critical") == 1


def test_each_span_is_classified_once(setup, monkeypatch) -> None:
    from e2e_otel import spans_to_records

    calls: list[str] = []
    real = spans_to_records.classify

    def counting(span):  # type: ignore[no-untyped-def]
        calls.append(span.name)
        return real(span)

    monkeypatch.setattr(spans_to_records, "classify", counting)
    _, span, value, _ = setup
    span("GET a/", 0.001, kind=SpanKind.SERVER, attributes={"http.method": "GET", "http.route": "a/"})
    span("SELECT", 0.2, kind=SpanKind.CLIENT, attributes=_db("shop_order"), error=ValueError("x"))
    assert calls == ["GET a/", "SELECT"]
    assert value("e2e_otel_steps_total", layer="database", component="shop_order", status="error") == 1


def test_breach_queue_overflow_is_counted(setup) -> None:
    evaluator, span, value, _ = setup
    evaluator.rules = RuleSet([Rule("database", "query_time", "", 0.0, 10.0)], source="test")
    for n in range(PENDING_BREACHES + 5):
        span("SELECT", 0.001 + n * 1e-6, kind=SpanKind.CLIENT, attributes=_db("shop_order"))
    assert value("e2e_otel_threshold_breaches_total", layer="database", metric="query_time",
                 severity="warning") == PENDING_BREACHES + 5
    assert value("e2e_otel_breach_signals_dropped_total") == 5
    drained = evaluator.drain_pending()
    assert len(drained) == PENDING_BREACHES and len(evaluator.pending) == 0
    assert drained[0].value == pytest.approx(0.001 + 5e-6)  # the 5 oldest were the ones dropped


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_locks_held_at_fork_are_fresh_in_the_child(setup) -> None:
    """A lock another thread holds while gunicorn forks would deadlock the child's first new label,
    stats sync or breach."""
    import threading

    evaluator, _, _, _ = setup
    metrics = evaluator.metrics
    cap = metrics._components["api"]
    held = [cap._lock, metrics._stats_lock, evaluator._pending_lock]
    for lock in held:
        lock.acquire()
    def child_is_not_deadlocked() -> bool:
        def work() -> None:
            metrics.component_label("api", "/brand-new/")
            metrics.sync_record_stats([])
            evaluator.drain_pending()

        worker = threading.Thread(target=work, daemon=True)
        worker.start()
        worker.join(5)
        return not worker.is_alive()

    try:
        ok = check_in_child(child_is_not_deadlocked)
    finally:
        for lock in held:
            lock.release()
    assert ok
