"""QueryAnalyzer: N+1 and slow-query findings from real spans (local provider, real ORM on the test DB)."""

from __future__ import annotations

import pytest
from django.test import Client
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from e2e_otel.bootstrap import get_runtime
from e2e_otel.queries import QueryAnalyzer, advice_for
from tests.testapp.models import Item


def _analyzer(**kwargs: object) -> tuple[QueryAnalyzer, trace.Tracer]:
    analyzer = QueryAnalyzer(slow_query_ms=kwargs.pop("slow_query_ms", 50),  # type: ignore[arg-type]
                             n_plus_one_threshold=kwargs.pop("n_plus_one_threshold", 5), **kwargs)  # type: ignore[arg-type]
    provider = TracerProvider()
    provider.add_span_processor(analyzer)
    return analyzer, provider.get_tracer("test")


def _db_span(tracer: trace.Tracer, statement: str, duration_ms: float = 1.0) -> None:
    span = tracer.start_span("SELECT", attributes={"db.system": "mysql", "db.statement": statement},
                             start_time=1_000_000_000)
    span.end(end_time=1_000_000_000 + int(duration_ms * 1e6))


def test_repeated_statement_in_one_trace_is_an_n_plus_one_finding() -> None:
    analyzer, tracer = _analyzer()
    with tracer.start_as_current_span("GET /products/", attributes={"http.route": "products/"}):
        _db_span(tracer, "SELECT `shop_product`.`id` FROM `shop_product`")
        for _ in range(6):
            _db_span(tracer, "SELECT `shop_category`.`name` FROM `shop_category` WHERE `shop_category`.`id` = %s")
    findings = analyzer.findings()
    assert [f.kind for f in findings] == ["n_plus_one"]
    finding = findings[0]
    assert finding.count == 6
    assert finding.table == "shop_category"
    assert finding.route == "products/"
    assert "select_related" in finding.advice


def test_below_threshold_and_distinct_traces_are_not_findings() -> None:
    analyzer, tracer = _analyzer()
    for _ in range(3):  # 3 traces x 4 repeats: never 5 in one trace
        with tracer.start_as_current_span("GET /x/"):
            for _ in range(4):
                _db_span(tracer, "SELECT 1 FROM t WHERE id = %s")
    assert analyzer.findings() == []


def test_slow_query_finding_is_scrubbed_and_advised() -> None:
    analyzer, tracer = _analyzer(slow_query_ms=50)
    with tracer.start_as_current_span("GET /search/"):
        _db_span(tracer, "SELECT * FROM shop_product WHERE name LIKE '%secret-term%'", duration_ms=80)
        _db_span(tracer, "SELECT id FROM shop_product WHERE id = %s", duration_ms=10)
    (finding,) = analyzer.findings()
    assert finding.kind == "slow_query"
    assert finding.max_ms == pytest.approx(80, rel=0.01)
    assert "secret-term" not in finding.statement
    assert "leading-wildcard" in finding.advice


def test_state_is_bounded() -> None:
    analyzer, tracer = _analyzer(max_traces=10)
    root = tracer.start_span("root")
    ctx = trace.set_span_in_context(root)
    for i in range(50):  # 50 open traces with DB spans, never finished
        other = tracer.start_span(f"r{i}")
        with trace.use_span(other, end_on_exit=False):
            _db_span(tracer, "SELECT 1")
    del ctx
    assert len(analyzer._traces) <= 10
    assert analyzer.evicted_traces >= 40


def test_advice_without_special_shape_suggests_explain() -> None:
    assert "EXPLAIN" in advice_for("slow_query", "SELECT", "t", "SELECT a FROM t WHERE b = ?")


@pytest.mark.django_db(transaction=True)
def test_live_runtime_detects_orm_n_plus_one() -> None:
    runtime = get_runtime()
    assert runtime is not None
    analyzer = runtime.processor(QueryAnalyzer)
    assert isinstance(analyzer, QueryAnalyzer)
    Item.objects.bulk_create([Item(name=f"i{i}") for i in range(7)])
    before = len(analyzer.findings("n_plus_one"))
    client = Client()
    for pk in Item.objects.values_list("pk", flat=True)[:1]:
        response = client.get(f"/items/{pk}/")
        assert response.status_code == 200
    assert runtime.force_flush(10)  # spans are analysed on the derive thread
    assert len(analyzer.findings("n_plus_one")) == before  # one query: no finding
    response = client.get("/items-n-plus-one/")
    assert response.status_code == 200
    assert runtime.force_flush(10)
    findings = analyzer.findings("n_plus_one")
    assert len(findings) == before + 1
    assert findings[0].table == "testapp_item"
    assert findings[0].correlation_id == response["X-Correlation-ID"]


@pytest.mark.django_db(transaction=True)
def test_findings_endpoint_requires_auth_and_lists_findings() -> None:
    Item.objects.bulk_create([Item(name=f"i{i}") for i in range(6)])
    client = Client()
    response = client.get("/items-n-plus-one/")
    correlation_id = response["X-Correlation-ID"]
    runtime = get_runtime()
    assert runtime is not None and runtime.force_flush(10)  # spans are analysed on the derive thread
    assert client.get("/api/v1/debugging/query-findings/").status_code in (401, 403)
    auth = {"HTTP_AUTHORIZATION": "Bearer test-api-key"}
    body = client.get("/api/v1/debugging/query-findings/", {"kind": "n_plus_one",
                                                             "correlation_id": correlation_id}, **auth).json()
    assert body["count"] == 1
    assert body["results"][0]["table"] == "testapp_item"
    assert "prefetch_related" in body["results"][0]["advice"]
    assert client.get("/api/v1/debugging/query-findings/", {"kind": "bogus"}, **auth).status_code == 400


def test_findings_per_trace_are_capped_worst_first() -> None:
    from e2e_otel.queries import MAX_FINDINGS_PER_TRACE

    analyzer, tracer = _analyzer(slow_query_ms=1)
    with tracer.start_as_current_span("GET /report/"):
        for table in range(20):
            for _ in range(5):
                _db_span(tracer, f"SELECT a FROM t{table} WHERE id = %s", duration_ms=0.5 + table)
    kinds = [f.kind for f in analyzer.findings()]
    assert kinds.count("n_plus_one") == MAX_FINDINGS_PER_TRACE
    assert kinds.count("slow_query") == MAX_FINDINGS_PER_TRACE
    worst = [f for f in analyzer.findings("n_plus_one")]
    assert {f.table for f in worst} == {f"t{n}" for n in range(15, 20)}


def test_internal_traces_are_not_analysed() -> None:
    analyzer, tracer = _analyzer()
    with tracer.start_as_current_span("GET /api/v1/debugging/x/", attributes={"e2e.internal": "api"}):
        for _ in range(6):
            _db_span(tracer, "SELECT 1 FROM t WHERE id = %s")
    assert analyzer.findings() == [] and analyzer._traces == {}


def test_a_failing_listener_does_not_cost_the_others() -> None:
    analyzer, tracer = _analyzer()
    seen: list[object] = []

    def broken(finding: object) -> None:
        raise RuntimeError("listener bug")

    analyzer.listeners[:] = [broken, seen.append]
    with tracer.start_as_current_span("GET /x/"):
        for _ in range(6):
            _db_span(tracer, "SELECT 1 FROM t WHERE id = %s")
    assert len(seen) == 1 and seen[0] is analyzer.findings()[0]


@pytest.mark.django_db(transaction=True)
def test_live_findings_are_stored_with_a_stable_fingerprint() -> None:
    from e2e_otel.findings_store import finding_fingerprint
    from e2e_otel.models import QueryFinding

    Item.objects.bulk_create([Item(name=f"i{i}") for i in range(6)])
    client = Client()
    ids = [client.get("/items-n-plus-one/")["X-Correlation-ID"] for _ in range(2)]
    runtime = get_runtime()
    assert runtime is not None and runtime.force_flush(10)
    rows = list(QueryFinding.objects.filter(correlation_id__in=ids))
    assert sorted(str(r.correlation_id) for r in rows) == sorted(ids)
    assert {r.fingerprint for r in rows} == {finding_fingerprint("n_plus_one", rows[0].statement, rows[0].route)}
    assert all("%s" in r.statement and r.table == "testapp_item" for r in rows)
