"""Debugging reports: contents on known rows, renderers, the command and the API endpoint."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.test import Client
from django.utils import timezone

from e2e_otel.bootstrap import get_runtime
from e2e_otel.models import ErrorLog, PerformanceSnapshot, TraceStep, WorkflowSession
from e2e_otel.report_render import render, render_json, render_markdown, render_text
from e2e_otel.reports import build_report, parse_since, percentile
from tests.testapp.models import Item

URL = "/api/v1/debugging/reports/"
AUTH = {"HTTP_AUTHORIZATION": "Bearer test-api-key"}
SECRETS = ("hunter2", "s3cr3t-token-value", "4111111111111111")

pytestmark = pytest.mark.django_db


def _cid(n: int) -> uuid.UUID:
    return uuid.UUID(int=0xABC000 + n)


@pytest.fixture
def rows() -> dict[str, object]:
    """Known data: 11 checkout sessions (10 finished, 10..100 ms, 3 failed; 1 in progress), 2 searches,
    1 session outside the window; steps on two layers; breaches; error groups (one resolved)."""
    for model in (TraceStep, WorkflowSession, ErrorLog, PerformanceSnapshot):
        model.objects.all().delete()  # rows committed by earlier live-writer tests (rolled back after)
    now = timezone.now()
    sessions = []
    for i in range(10):
        sessions.append(WorkflowSession(correlation_id=_cid(i), workflow_type="checkout",
                                        status="failed" if i in (2, 5, 8) else "completed",
                                        start_time=now - timedelta(minutes=30 + i), duration_ms=10.0 * (i + 1)))
    sessions.append(WorkflowSession(correlation_id=_cid(10), workflow_type="checkout", status="in_progress",
                                    start_time=now - timedelta(minutes=1)))
    sessions += [WorkflowSession(correlation_id=_cid(20 + i), workflow_type="search", status="completed",
                                 start_time=now - timedelta(hours=2), duration_ms=5.0 + i) for i in range(2)]
    sessions.append(WorkflowSession(correlation_id=_cid(99), workflow_type="old", status="failed",
                                    start_time=now - timedelta(days=3), duration_ms=1.0))
    WorkflowSession.objects.bulk_create(sessions)
    by_cid = {s.correlation_id: s for s in WorkflowSession.objects.all()}
    steps = [(0, "api", "/checkout/", "POST", 95.0), (1, "api", "/cart/", "GET", 40.0),
             (2, "api", "/checkout/", "POST", 120.0, "error"), (0, "database", "shop_order", "INSERT", 30.0),
             (3, "database", "shop_item", "SELECT", 7.5), (4, "database", "shop_item", "SELECT", 50.0),
             (99, "api", "/old/", "GET", 9999.0)]
    TraceStep.objects.bulk_create([
        TraceStep(workflow_session=by_cid[_cid(n)], correlation_id=_cid(n), span_id=f"{k:016x}", layer=layer,
                  component=comp, operation=op, duration_ms=ms, status=rest[0] if rest else "ok",
                  start_time=by_cid[_cid(n)].start_time, metadata={"db.statement": "SELECT 'hunter2'",
                                                                     "password": "hunter2"})
        for k, (n, layer, comp, op, ms, *rest) in enumerate(steps)])
    snap = {"layer": "api", "metric_name": "response_time", "component": "/checkout/", "unit": "ms"}
    PerformanceSnapshot.objects.bulk_create(
        [PerformanceSnapshot(**snap, metric_value=v, threshold_status="warning", correlation_id=_cid(i),
                             timestamp=now - timedelta(minutes=10 - i)) for i, v in enumerate((600, 700, 650))]
        + [PerformanceSnapshot(layer="database", metric_name="query_time", component="shop_item", unit="ms",
                               metric_value=2500, threshold_status="critical", correlation_id=_cid(4),
                               timestamp=now - timedelta(minutes=5))]
        + [PerformanceSnapshot(**snap, metric_value=100, threshold_status="ok", timestamp=now),
           PerformanceSnapshot(**snap, metric_value=900, threshold_status="critical",
                               timestamp=now - timedelta(days=2))])
    err = {"layer": "api", "component": "/checkout/", "severity": "error", "category": "unknown"}
    ErrorLog.objects.bulk_create([
        ErrorLog(**err, error_type="PaymentDeclined", fingerprint="a" * 64, occurrences=5, correlation_id=_cid(5),
                 error_message="card 4111111111111111 declined password=hunter2 token=s3cr3t-token-value",
                 last_seen=now - timedelta(minutes=3)),
        ErrorLog(**err, error_type="KeyError", fingerprint="b" * 64, occurrences=2, correlation_id=_cid(8),
                 last_seen=now - timedelta(minutes=1)),
        ErrorLog(**err, error_type="Resolved", fingerprint="c" * 64, occurrences=50, resolved=True, last_seen=now),
        ErrorLog(**err, error_type="Ancient", fingerprint="d" * 64, occurrences=80, last_seen=now - timedelta(days=5)),
    ])
    return {"now": now}


def test_parse_since_and_percentile() -> None:
    assert parse_since("24h") == timedelta(hours=24)
    assert parse_since("90m") == timedelta(minutes=90)
    assert parse_since("1.5d") == timedelta(hours=36)
    for bad in ("", "24", "h", "-1h", "0h", "3y"):
        with pytest.raises(ValueError, match="invalid duration"):
            parse_since(bad)
    assert parse_since("3650d") == timedelta(days=3650)
    for huge in ("3651d", "1000000d", "99999999999w", "9" * 400 + "s", "1" + "0" * 400 + "h"):
        with pytest.raises(ValueError, match="at most 3650 days"):
            parse_since(huge)
    assert percentile([], 50) is None
    assert percentile([3.0], 95) == 3.0
    values = [float(v) for v in range(100, 0, -1)]
    assert (percentile(values, 50), percentile(values, 95), percentile(values, 100)) == (50.0, 95.0, 100.0)


def test_report_contents(rows: dict[str, object]) -> None:
    report = build_report(since=timedelta(hours=24), top=2)
    assert [w.workflow_type for w in report.workflows] == ["checkout", "search"]
    checkout, search = report.workflows
    assert (checkout.total, checkout.completed, checkout.failed, checkout.in_progress) == (11, 7, 3, 1)
    assert checkout.failure_rate == pytest.approx(0.3)
    assert (checkout.p50_ms, checkout.p95_ms, checkout.sampled) == (50.0, 100.0, 10)
    assert (search.total, search.failure_rate, search.p50_ms, search.p95_ms) == (2, 0.0, 5.0, 6.0)
    assert report.totals == {"workflows": 13, "failed": 3, "in_progress": 1}

    assert list(report.slowest_steps) == ["api", "database"]
    api = report.slowest_steps["api"]
    assert [(s.component, s.duration_ms, s.status) for s in api] == [("/checkout/", 120.0, "error"),
                                                                      ("/checkout/", 95.0, "ok")]
    assert api[0].correlation_id == str(_cid(2)) and api[0].workflow_type == "checkout"
    assert [s.duration_ms for s in report.slowest_steps["database"]] == [50.0, 30.0]

    assert [(b.severity, b.layer, b.metric_name, b.count) for b in report.breaches] == [
        ("critical", "database", "query_time", 1), ("warning", "api", "response_time", 3)]
    warning = report.breaches[1]
    assert (warning.min_value, warning.max_value, warning.unit) == (600.0, 700.0, "ms")
    assert warning.latest_correlation_id == str(_cid(2))  # the newest of the three

    assert [(e.error_type, e.occurrences) for e in report.errors] == [("PaymentDeclined", 5), ("KeyError", 2)]
    assert report.errors[0].correlation_ids[0] == str(_cid(5))
    assert str(_cid(2)) in report.errors[0].correlation_ids  # the error step on the same component


def test_window_excludes_older_rows(rows: dict[str, object]) -> None:
    report = build_report(since=timedelta(minutes=45))
    assert [(w.workflow_type, w.total) for w in report.workflows] == [("checkout", 11)]
    assert "search" not in render_text(report)


def test_renderers_agree_and_leak_nothing(rows: dict[str, object]) -> None:
    report = build_report(since=timedelta(hours=24), top=3)
    text, markdown, data = render_text(report), render_markdown(report), json.loads(render_json(report))
    assert data["workflows"][0] == {"workflow_type": "checkout", "total": 11, "completed": 7, "failed": 3,
                                    "in_progress": 1, "failure_rate": 0.3, "p50_ms": 50.0, "p95_ms": 100.0,
                                    "sampled": 10}
    assert data["slowest_steps"]["database"][0]["duration_ms"] == 50.0
    assert data["since"] == report.since.isoformat()
    line = next(line for line in text.splitlines() if line.strip().startswith("checkout"))
    assert line.split() == ["checkout", "11", "7", "3", "1", "30.0%", "50.0", "100.0"]
    assert "| checkout | 11 | 7 | 3 | 1 | 30.0% | 50.0 | 100.0 |" in markdown
    assert "## Unresolved error groups" in markdown and "PaymentDeclined" in text
    for output in (text, markdown, json.dumps(data)):
        for secret in SECRETS:
            assert secret not in output
    with pytest.raises(ValueError, match="unknown report format"):
        render(report, "html")


def test_command_writes_each_format(rows: dict[str, object], tmp_path, capsys) -> None:
    target = tmp_path / "report.json"
    call_command("debugging_report", "--since", "24h", "--format", "json", "--output", str(target))
    assert json.loads(target.read_text())["totals"]["workflows"] == 13
    call_command("debugging_report", "--format", "markdown", "--since", "1h")
    out = capsys.readouterr().out
    assert out.startswith("# e2e-otel debugging report") and "| checkout | 11 |" in out
    with pytest.raises(CommandError, match="invalid duration"):
        call_command("debugging_report", "--since", "yesterday")
    for huge in ("1000000d", "99999999999w"):
        with pytest.raises(CommandError, match="at most 3650 days"):
            call_command("debugging_report", "--since", huge)
    for top in ("0", "51", "9" * 30):
        with pytest.raises(CommandError, match="--top must be between 1 and 50"):
            call_command("debugging_report", "--top", top)


def test_api_auth_formats_and_validation(rows: dict[str, object]) -> None:
    client = Client()
    assert client.get(URL).status_code == 401
    user = get_user_model().objects.create_user("plain", password="pw-plain-123")
    client.force_login(user)
    assert client.get(URL).status_code == 403
    client.logout()
    body = client.get(URL, {"since": "24h", "top": "1"}, **AUTH).json()
    assert body["workflows"][0]["p95_ms"] == 100.0
    assert [len(v) for v in body["slowest_steps"].values()] == [1, 1]
    response = client.get(URL, {"format": "markdown"}, **AUTH)
    assert response.status_code == 200 and response["Content-Type"].startswith("text/markdown")
    assert b"| checkout | 11 |" in response.content
    assert client.get(URL, HTTP_ACCEPT="text/markdown", **AUTH).content.startswith(b"# e2e-otel debugging report")
    assert client.get(URL, {"format": "json"}, **AUTH).json()["totals"]["workflows"] == 13
    assert client.get(URL, {"since": "soon"}, **AUTH).status_code == 400
    assert client.get(URL, {"top": "0"}, **AUTH).status_code == 400
    for huge in ("1000000d", "99999999999w"):
        response = client.get(URL, {"since": huge}, **AUTH)
        assert response.status_code == 400 and "since" in response.json()
    assert client.get(URL, {"top": "9" * 30}, **AUTH).status_code == 400
    for secret in SECRETS:
        assert secret.encode() not in response.content


@pytest.mark.django_db(transaction=True)  # the record writer's rows are read from another connection
def test_live_query_findings_are_reported() -> None:
    """A real N+1 request through the live runtime's QueryAnalyzer shows up in the report, read from
    the table the record writer stores findings in."""
    Item.objects.bulk_create([Item(name=f"i{i}") for i in range(6)])
    response = Client().get("/items-n-plus-one/")
    assert response.status_code == 200
    runtime = get_runtime()
    assert runtime is not None and runtime.force_flush(10)  # derive thread, then the record writer
    report = build_report(since=timedelta(minutes=5))
    assert report.query_findings is not None
    mine = [f for f in report.query_findings if f["correlation_id"] == response["X-Correlation-ID"]]
    assert [(f["kind"], f["table"]) for f in mine] == [("n_plus_one", "testapp_item")]
    narrowed = build_report(since=timedelta(minutes=5), correlation_ids=[response["X-Correlation-ID"]])
    assert narrowed.query_findings == tuple(mine)
    assert build_report(since=timedelta(minutes=5), correlation_ids=[str(uuid.uuid4())]).query_findings == ()
    assert "prefetch_related" in render_text(report)
    old = build_report(since=timezone.now() - timedelta(days=2), now=timezone.now() - timedelta(days=1))
    assert old.query_findings == ()


def test_correlation_ids_narrow_the_report_to_those_workflows(rows: dict[str, object]) -> None:
    """What the demo uses to report on the workflows it drove, whatever else is in the window."""
    PerformanceSnapshot.objects.create(layer="system", metric_name="memory_usage", unit="%", metric_value=97,
                                       threshold_status="critical", timestamp=timezone.now())
    everything = build_report(since=timedelta(hours=24))
    declined = everything.errors[0]
    assert declined.correlation_ids == (str(_cid(5)), str(_cid(2))) and declined.workflow_count == 2

    # uuid and hex forms both name a workflow
    report = build_report(since=timedelta(hours=24), correlation_ids=[str(_cid(0)), _cid(2).hex, str(_cid(4))])
    assert [(w.workflow_type, w.total, w.completed, w.failed) for w in report.workflows] == [("checkout", 3, 2, 1)]
    assert report.totals == {"workflows": 3, "failed": 1, "in_progress": 0}
    assert [(s.correlation_id, s.duration_ms) for s in report.slowest_steps["api"]] == [
        (str(_cid(2)), 120.0), (str(_cid(0)), 95.0)]  # not the 40 ms step of workflow 1
    assert [s.duration_ms for s in report.slowest_steps["database"]] == [50.0, 30.0]  # not 7.5 (workflow 3)
    breaches = {(b.layer, b.metric_name): b for b in report.breaches}
    api = breaches[("api", "response_time")]
    assert (api.count, api.min_value, api.max_value, api.latest_correlation_id) == (2, 600.0, 650.0, str(_cid(2)))
    assert breaches[("database", "query_time")].latest_correlation_id == str(_cid(4))
    assert breaches[("system", "memory_usage")].count == 1  # no correlation id: belongs to no workflow, kept
    # Both open groups are on the component where workflow 2 failed; only its id is listed for them.
    assert [(e.error_type, e.correlation_ids, e.workflow_count) for e in report.errors] == [
        ("PaymentDeclined", (str(_cid(2)),), 1), ("KeyError", (str(_cid(2)),), 1)]

    one = build_report(since=timedelta(hours=24), correlation_ids=[str(_cid(1))])
    assert [(w.total, w.failed) for w in one.workflows] == [(1, 0)]
    assert [s.duration_ms for s in one.slowest_steps["api"]] == [40.0] and "database" not in one.slowest_steps
    assert [(b.metric_name, b.count, b.max_value) for b in one.breaches] == [
        ("memory_usage", 1, 97.0), ("response_time", 1, 700.0)]
    assert one.errors == ()  # workflow 1 had no error
    outside = build_report(since=timedelta(hours=1), correlation_ids=[str(_cid(99))])
    assert outside.workflows == () and outside.slowest_steps == {}  # the filter narrows the window, never widens
    assert build_report(since=timedelta(hours=24), correlation_ids=[]).totals["workflows"] == 0
    with pytest.raises(ValueError, match="invalid correlation id"):
        build_report(since=timedelta(hours=24), correlation_ids=["not-a-trace-id"])
