"""The /metrics endpoint of the live runtime: contract names, key protection, cardinality, promtool."""

from __future__ import annotations

import shutil
import subprocess
import threading

import pytest
from django.test import Client, override_settings
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.parser import text_string_to_metric_families

from e2e_otel.bootstrap import get_runtime
from e2e_otel.conf import get_config
from e2e_otel.evaluator import ThresholdEvaluator
from e2e_otel.metrics import UNMATCHED, ChildCache, CountingSpanExporter, E2EMetrics, component_pairs, series_bound

CONTRACT = {
    "e2e_otel_step_duration_seconds": "histogram",
    "e2e_otel_steps": "counter",
    "e2e_otel_workflows": "counter",
    "e2e_otel_workflow_duration_seconds": "histogram",
    "e2e_otel_threshold_breaches": "counter",
    "e2e_otel_threshold_value": "gauge",
    "e2e_otel_errors": "counter",
    "e2e_otel_api_error_ratio": "gauge",
    "e2e_otel_cache_hit_ratio": "gauge",
    "e2e_otel_system_memory_usage_ratio": "gauge",
    "e2e_otel_system_cpu_usage_ratio": "gauge",
    "e2e_otel_record_queue_depth": "gauge",
    "e2e_otel_records_dropped": "counter",
    "e2e_otel_derive_queue_depth": "gauge",
    "e2e_otel_derive_dropped_spans": "counter",
    "e2e_otel_records_written": "counter",
    "e2e_otel_exporter_up": "gauge",
    "e2e_otel_exported_spans": "counter",
    "e2e_otel_slow_queries": "counter",
    "e2e_otel_n_plus_one": "counter",
    "e2e_otel_build_info": "gauge",
}


def scrape(client: Client, **headers: str) -> str:
    """/metrics after the derive thread has handled every span ended so far."""
    runtime = get_runtime()
    assert runtime is None or runtime.derived.queue.flush(10)
    response = client.get("/metrics", **headers)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    return response.content.decode()


def samples(text: str, name: str) -> list:
    return [s for family in text_string_to_metric_families(text) for s in family.samples if s.name == name]


def e2e_sample_count(text: str) -> int:
    return sum(len(f.samples) for f in text_string_to_metric_families(text) if f.name.startswith("e2e_otel_"))


def test_scrape_has_every_contract_family_with_its_type() -> None:
    families = {f.name: f.type for f in text_string_to_metric_families(scrape(Client()))}
    missing = {name: kind for name, kind in CONTRACT.items() if families.get(name) != kind}
    assert not missing
    text = scrape(Client())
    cfg = get_config()
    (info,) = samples(text, "e2e_otel_build_info")
    assert info.labels["service"] == cfg.SERVICE_NAME and info.labels["environment"] == cfg.ENVIRONMENT
    assert info.value == 1
    assert {(s.labels["metric"], s.labels["severity"]) for s in samples(text, "e2e_otel_threshold_value")} >= {
        ("response_time", "warning"), ("query_time", "critical"), ("hit_rate", "warning")}


@pytest.mark.django_db
def test_requests_become_step_and_error_metrics() -> None:
    client = Client(raise_request_exception=False)
    before = scrape(client)

    def steps(text: str, component: str, status: str) -> float:
        return sum(s.value for s in samples(text, "e2e_otel_steps_total")
                   if s.labels == {"layer": "api", "component": component, "status": status})

    for _ in range(3):
        assert client.get("/ping/").status_code == 200
        assert client.get("/fail/").status_code == 500
    after = scrape(client)
    assert steps(after, "/ping/", "ok") - steps(before, "/ping/", "ok") == 3
    assert steps(after, "/fail/", "error") - steps(before, "/fail/", "error") == 3
    errors = {s.labels["error_type"]: s.value for s in samples(after, "e2e_otel_errors_total")
              if s.labels["layer"] == "api"}
    assert any(name.endswith("PaymentDeclined") for name in errors)


def test_metrics_key_is_required_when_set() -> None:
    with override_settings(E2E_OTEL={**get_config_dict(), "METRICS_KEY": "s3cret"}):
        client = Client()
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics").headers["WWW-Authenticate"].startswith("Bearer")
        assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
        assert "e2e_otel_build_info" in scrape(client, HTTP_AUTHORIZATION="Bearer s3cret")
    assert Client().get("/metrics").status_code == 200


def get_config_dict() -> dict:
    from django.conf import settings

    return dict(settings.E2E_OTEL)


def test_openmetrics_when_asked() -> None:
    response = Client().get("/metrics", HTTP_ACCEPT="application/openmetrics-text; version=1.0.0")
    assert response["Content-Type"].startswith("application/openmetrics-text")
    assert response.content.rstrip().endswith(b"# EOF")


@pytest.mark.django_db
def test_ten_thousand_raw_urls_stay_under_the_documented_series_bound() -> None:
    client = Client(raise_request_exception=False)
    client.get("/items/1/")
    client.get("/nope/1")
    first = scrape(client)
    for n in range(5000):
        client.get(f"/items/{n + 2}/")
        client.get(f"/nope/{n + 2}/x")
    text = scrape(client)
    bound = series_bound(get_config().METRICS_MAX_COMPONENTS)
    assert e2e_sample_count(text) <= bound
    # Raw paths never became label values: no new api components appeared, only the counts grew.
    api_components = {s.labels["component"] for s in samples(text, "e2e_otel_steps_total")
                      if s.labels["layer"] == "api"}
    assert api_components == {s.labels["component"] for s in samples(first, "e2e_otel_steps_total")
                              if s.labels["layer"] == "api"}
    assert {"/items/<int:pk>/", UNMATCHED} <= api_components
    workflow_types = {s.labels["workflow_type"] for s in samples(text, "e2e_otel_workflows_total")}
    assert all("<" in t or t.endswith(("/metrics", "/")) for t in workflow_types), workflow_types
    assert "/nope/" not in text and "/items/4999/" not in text
    count = sum(s.value for s in samples(text, "e2e_otel_steps_total")
                if s.labels["layer"] == "api" and s.labels["component"] == UNMATCHED)
    assert count >= 5001


def test_component_cap_bounds_series_for_many_route_templates() -> None:
    """10,000 distinct *templates* (a misbehaving app) still fit the formula for a small cap."""
    registry = CollectorRegistry()
    metrics = E2EMetrics(registry, max_labels=20)
    provider = TracerProvider()
    provider.add_span_processor(ThresholdEvaluator(metrics))
    tracer = provider.get_tracer("tests")
    for n in range(10_000):
        with tracer.start_as_current_span("GET", kind=2, attributes={"http.method": "GET",
                                                                     "http.route": f"t{n}/"}):
            pass
    from prometheus_client import generate_latest

    text = generate_latest(registry).decode()
    assert e2e_sample_count(text) <= series_bound(20)
    assert len({s.labels["component"] for s in samples(text, "e2e_otel_steps_total")}) == 21
    # the per-span child caches hold exactly the capped series, well inside their limits
    assert len(metrics.step_duration_children) == 21 <= metrics.step_duration_children.limit == component_pairs(20)
    assert len(metrics.steps_children) == 21 <= metrics.steps_children.limit


def test_child_cache_beyond_its_limit_serves_uncached_children() -> None:
    registry = CollectorRegistry()
    family = Counter("cached", "A counter behind a two-entry child cache.", ["layer", "component"],
                     registry=registry)
    cache = ChildCache(family, 2)
    for component in ("a", "b", "c", "c"):
        cache["api", component].inc()
    assert sorted(cache) == [("api", "a"), ("api", "b")]
    assert cache["api", "a"] is family.labels("api", "a")
    assert cache["api", "c"] is family.labels("api", "c")  # not kept, still the family's one child
    assert registry.get_sample_value("cached_total", {"layer": "api", "component": "c"}) == 2


def test_child_cache_under_concurrent_first_use_counts_every_increment() -> None:
    """Threads racing to create the same children must each count once, whoever stored the child."""
    registry = CollectorRegistry()
    family = Counter("raced", "A counter created from many threads at once.", ["component"], registry=registry)
    cache = ChildCache(family, 1000)
    start = threading.Barrier(8)

    def work() -> None:
        start.wait()
        for n in range(2000):
            cache[(f"c{n % 50}",)].inc()

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(cache) == 50
    assert sum(registry.get_sample_value("raced_total", {"component": f"c{n}"}) for n in range(50)) == 8 * 2000


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
@pytest.mark.django_db
def test_promtool_accepts_a_real_scrape() -> None:
    client = Client(raise_request_exception=False)
    client.get("/ping/")
    client.get("/items/3/")
    client.get("/fail/")
    result = subprocess.run(["promtool", "check", "metrics"], input=scrape(client).encode(),
                            capture_output=True, timeout=30, check=False)
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
    assert result.stdout.decode().strip() == "" and result.stderr.decode().strip() == ""


class _StatsSource:
    """Something in runtime.derived with the record processor's ``stats()`` shape."""

    def __init__(self) -> None:
        self.numbers = {"queue_depth": 7, "queue_capacity": 100, "dropped": {"queue_full": 3, "db_error": 0},
                        "written": {"step": 10, "session": 2}}

    def stats(self) -> dict:
        return self.numbers

    def on_start(self, span, parent_context=None) -> None:  # type: ignore[no-untyped-def]
        pass

    def on_end(self, span) -> None:  # type: ignore[no-untyped-def]
        pass

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


def test_record_stats_are_read_at_scrape_time() -> None:
    runtime = get_runtime()
    source = _StatsSource()

    def value(text: str, name: str, **labels: str) -> float:
        return sum(s.value for s in samples(text, name) if all(s.labels.get(k) == v for k, v in labels.items()))

    before = scrape(Client())
    runtime.derived.add(source)
    try:
        first = scrape(Client())
        source.numbers = {**source.numbers, "queue_depth": 0, "dropped": {"queue_full": 5, "db_error": 1}}
        second = scrape(Client())
    finally:
        runtime.derived.remove(source)
    base = value(before, "e2e_otel_records_dropped_total", reason="queue_full")
    assert value(first, "e2e_otel_records_dropped_total", reason="queue_full") - base == 3
    assert value(second, "e2e_otel_records_dropped_total", reason="queue_full") - base == 5  # a delta, not 3+5
    assert value(second, "e2e_otel_records_dropped_total", reason="db_error") >= 1
    assert value(first, "e2e_otel_records_written_total", kind="step") >= 10
    (depth,) = [s.value for s in samples(first, "e2e_otel_record_queue_depth")]
    assert depth >= 7  # summed with the real record processor's queue


def test_exporter_health_with_a_real_otlp_receiver(otlp_receiver) -> None:
    registry = CollectorRegistry()
    metrics = E2EMetrics(registry)
    exporter = CountingSpanExporter(OTLPSpanExporter(endpoint=otlp_receiver.http_endpoint, timeout=5), metrics)
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("tests")
    with tracer.start_as_current_span("ok"):
        pass
    assert registry.get_sample_value("e2e_otel_exported_spans_total", {"result": "success"}) == 1
    assert registry.get_sample_value("e2e_otel_exporter_up") == 1
    otlp_receiver.set_failure(400)  # a non-retryable rejection
    with tracer.start_as_current_span("rejected"):
        pass
    assert registry.get_sample_value("e2e_otel_exported_spans_total", {"result": "failure"}) == 1
    assert registry.get_sample_value("e2e_otel_exporter_up") == 0
    provider.shutdown()


@pytest.mark.django_db
def test_one_ingest_post_of_junk_browser_spans_cannot_take_api_labels() -> None:
    """A page posts 300 browser spans with made-up names to the real ingest endpoint; they fill only the
    frontend budget (min(50, C)) and a real API route still gets its own ``component`` label."""
    import os
    import time

    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
    from opentelemetry.proto.resource.v1.resource_pb2 import Resource
    from opentelemetry.proto.trace.v1 import trace_pb2

    from e2e_otel.ingest import reset_rate_limits

    now = time.time_ns()
    trace_id = os.urandom(16)
    junk = [trace_pb2.Span(trace_id=trace_id, span_id=(n + 1).to_bytes(8, "big"), name=f"junk-{n}-" + "x" * 150,
                           kind=trace_pb2.Span.SPAN_KIND_INTERNAL, start_time_unix_nano=now - 1_000_000,
                           end_time_unix_nano=now) for n in range(300)]
    request = ExportTraceServiceRequest(resource_spans=[trace_pb2.ResourceSpans(
        resource=Resource(attributes=[KeyValue(key="telemetry.sdk.language", value=AnyValue(string_value="webjs"))]),
        scope_spans=[trace_pb2.ScopeSpans(scope=InstrumentationScope(name="@opentelemetry/instrumentation-fetch"),
                                          spans=junk)])])
    reset_rate_limits()
    client = Client(raise_request_exception=False)
    response = client.post("/api/v1/debugging/otlp/v1/traces", data=request.SerializeToString(),
                           content_type="application/x-protobuf",
                           headers={"X-E2E-Ingest-Key": "test-ingest-key", "Origin": "http://localhost:3000"})
    assert response.status_code == 200, response.content
    assert client.get("/pid/").status_code == 200
    text = scrape(client)
    frontend = {s.labels["component"] for s in samples(text, "e2e_otel_steps_total") if s.labels["layer"] == "frontend"}
    assert len(frontend) <= min(50, get_config().METRICS_MAX_COMPONENTS) + 1 and "other" in frontend
    assert all(len(c) <= 100 for c in frontend)
    assert any(s.labels == {"layer": "api", "component": "/pid/", "status": "ok"} and s.value >= 1
               for s in samples(text, "e2e_otel_steps_total"))
