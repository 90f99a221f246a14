"""Query findings in the database: FindingWriter on the record writer thread, the API, reports, pruning."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.core.management import call_command
from django.db import connections
from django.test import Client, override_settings
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from e2e_otel.conf import resolve
from e2e_otel.findings_store import FindingWriter, finding_fingerprint
from e2e_otel.models import QueryFinding as FindingRow
from e2e_otel.queries import FindingData
from e2e_otel.reports import build_report
from e2e_otel.sanitize import Sanitizer
from e2e_otel.store import RecordWriter

AUTH = {"HTTP_AUTHORIZATION": "Bearer test-api-key"}
URL = "/api/v1/debugging/query-findings/"


@pytest.fixture(autouse=True)
def no_live_findings(request: pytest.FixtureRequest) -> None:
    """The live runtime's writer commits findings of earlier tests' requests outside any test
    transaction: let it finish, and start from an empty table."""
    from e2e_otel.bootstrap import get_runtime

    runtime = get_runtime()
    if runtime is not None:
        runtime.force_flush(10)
    if "django_db_setup" in request.fixturenames:
        FindingRow.objects.all().delete()


def finding(**fields: Any) -> FindingData:
    base = FindingData(
        kind="n_plus_one", correlation_id=str(uuid.uuid4()), route="orders/<int:pk>/", table="shop_item",
        operation="SELECT", statement="SELECT `shop_item`.`id` FROM `shop_item` WHERE `shop_item`.`order_id` = %s",
        fingerprint="", count=7, total_ms=3.5, max_ms=0.9, advice="use prefetch_related()",
    )
    return replace(base, **fields)


@pytest.fixture
def writer() -> Iterator[tuple[RecordWriter, FindingWriter]]:
    config = resolve({"ENVIRONMENT": "testing", "RECORD_FLUSH_INTERVAL": 0.02}, environ={})
    records = RecordWriter(config, Sanitizer())
    findings = FindingWriter(Sanitizer(), alias=records.alias)
    records.add_batch_job(findings)
    yield records, findings
    records.shutdown(2)


def test_submit_never_blocks_and_counts_what_it_drops() -> None:
    findings = FindingWriter(Sanitizer(), alias="default", capacity=3)
    started = time.perf_counter()
    assert [findings.submit(finding()) for _ in range(5)] == [True, True, True, False, False]
    assert time.perf_counter() - started < 0.05
    assert findings.stats() == {"queue_depth": 3, "dropped": {"queue_full": 2, "db_error": 0},
                                "written": {"finding": 0}}


def test_fingerprint_is_kind_shape_and_route() -> None:
    a = finding_fingerprint("n_plus_one", "SELECT a FROM t WHERE id = %s", "items/")
    assert a == finding_fingerprint("n_plus_one", "SELECT  a\nFROM t WHERE id = %s;", "items/")
    assert len(a) == 64 and int(a, 16) >= 0
    assert a != finding_fingerprint("slow_query", "SELECT a FROM t WHERE id = %s", "items/")
    assert a != finding_fingerprint("n_plus_one", "SELECT a FROM t WHERE id = %s", "orders/")


@pytest.mark.django_db(transaction=True)
def test_findings_are_written_by_the_record_writer_and_counted_after_commit(writer: Any) -> None:
    records, findings = writer
    sent = [finding(route="login/?token=s3cr3t-token-value", total_ms=float(n)) for n in range(3)]
    for item in sent:
        assert findings.submit(item)
    assert records.force_flush(10)
    rows = list(FindingRow.objects.order_by("total_ms"))
    assert [str(r.correlation_id) for r in rows] == [f.correlation_id for f in sent]
    assert all("s3cr3t-token-value" not in r.route for r in rows)  # scrubbed again before it is stored
    assert rows[0].fingerprint == finding_fingerprint("n_plus_one", rows[0].statement, rows[0].route)
    assert len({r.fingerprint for r in rows}) == 1  # one problem, three occurrences
    assert findings.stats()["written"] == {"finding": 3} and findings.stats()["queue_depth"] == 0


@pytest.mark.mysql
@pytest.mark.django_db(transaction=True)
def test_refused_findings_drop_alone_and_are_logged_once(writer: Any, caplog: pytest.LogCaptureFixture) -> None:
    records, findings = writer
    good = [finding(), finding()]
    findings.submit(good[0])
    findings.submit(finding(count=-1))  # an unsigned column: strict MySQL refuses the row
    findings.submit(finding(count=-2))
    findings.submit(good[1])
    with caplog.at_level("WARNING", logger="e2e_otel.findings_store"):
        assert records.force_flush(10)
    assert sorted(str(c) for c in FindingRow.objects.values_list("correlation_id", flat=True)) == \
        sorted(f.correlation_id for f in good)
    assert findings.stats()["dropped"]["db_error"] == 2 and findings.stats()["written"] == {"finding": 2}
    assert [r.getMessage()[:46] for r in caplog.records] == ["e2e-otel: 2 query finding(s) refused by the da"]


@pytest.mark.mysql
@pytest.mark.django_db(transaction=True, databases=["default", "unreachable"])
def test_an_outage_keeps_the_batch_and_writes_it_on_recovery() -> None:
    config = resolve({"ENVIRONMENT": "testing", "RECORD_FLUSH_INTERVAL": 0.02}, environ={})
    records = RecordWriter(config, Sanitizer(), alias="unreachable")
    findings = FindingWriter(Sanitizer(), alias="unreachable")
    records.add_batch_job(findings)
    try:
        sent = [finding() for _ in range(3)]
        for item in sent:
            findings.submit(item)
        assert not records.force_flush(0.5)
        assert "OperationalError" in (records.stats()["last_error"] or "")
        assert findings.stats()["written"] == {"finding": 0} and findings.stats()["queue_depth"] == 3
        settings_ = connections.settings["unreachable"]
        saved = dict(settings_)
        default = connections["default"].settings_dict
        settings_.update(PORT=default["PORT"], NAME=default["NAME"], HOST=default["HOST"])
        try:
            assert records.force_flush(10)
        finally:
            settings_.clear()
            settings_.update(saved)
    finally:
        records.shutdown(2)
    assert FindingRow.objects.count() == 3
    assert findings.stats() == {"queue_depth": 0, "dropped": {"queue_full": 0, "db_error": 0},
                                "written": {"finding": 3}}


def _row(**fields: Any) -> FindingRow:
    values = {"kind": "n_plus_one", "fingerprint": "f" * 64, "correlation_id": uuid.uuid4(), "route": "items/",
              "table": "shop_item", "operation": "SELECT", "statement": "SELECT 1", "count": 6, "total_ms": 2.0,
              "max_ms": 1.0, "advice": "prefetch", **fields}
    return FindingRow.objects.create(**values)


@pytest.mark.django_db
def test_api_serves_what_any_process_stored_in_the_old_shape() -> None:
    """Rows written by other workers (here: inserted directly) are what every worker answers."""
    mine = _row(table="shop_order")
    _row(kind="slow_query", count=1)
    _row()
    client = Client()
    body = client.get(URL, **AUTH).json()
    assert body["enabled"] is True and body["count"] == 3
    assert set(body["results"][0]) == set(finding().as_dict())  # the response shape of the in-memory days
    only = client.get(URL, {"table": "shop_order", "correlation_id": mine.correlation_id.hex}, **AUTH).json()
    assert only["count"] == 1 and only["results"][0]["correlation_id"] == str(mine.correlation_id)
    assert client.get(URL, {"kind": "slow_query"}, **AUTH).json()["count"] == 1
    limited = client.get(URL, {"limit": "2"}, **AUTH).json()
    assert limited["count"] == 3 and len(limited["results"]) == 2
    assert client.get(URL, {"correlation_id": "nope"}, **AUTH).status_code == 400
    assert client.get(URL, {"table": "x" * 191}, **AUTH).status_code == 400
    with override_settings(E2E_OTEL={**django_settings.E2E_OTEL, "RECORDS_ENABLED": False}):
        assert client.get(URL, **AUTH).json()["enabled"] is False  # nothing new is stored


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(params=st.dictionaries(st.sampled_from(["kind", "correlation_id", "table", "limit"]),
                              st.text(max_size=300)))
@pytest.mark.django_db
def test_api_answers_hostile_filters_with_200_or_400(params: dict[str, str]) -> None:
    response = Client().get(URL, params, **AUTH)
    assert response.status_code in (200, 400), (params, response.content[:300])


@pytest.mark.django_db
def test_report_and_command_read_the_table() -> None:
    recent = _row(count=9)
    old = _row()
    FindingRow.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=2))
    report = build_report(since=timedelta(hours=1))
    assert [f["correlation_id"] for f in report.query_findings or ()] == [str(recent.correlation_id)]
    out = StringIO()
    call_command("debugging_report", "--since", "1h", "--format", "json", stdout=out)
    assert str(recent.correlation_id) in out.getvalue() and str(old.correlation_id) not in out.getvalue()


@pytest.mark.django_db
def test_prune_removes_findings_past_retention() -> None:
    keep = _row()
    expired = _row()
    FindingRow.objects.filter(pk=expired.pk).update(created_at=timezone.now() - timedelta(days=30))
    out = StringIO()
    call_command("prune_debugging_records", "--retention-days", "14", stdout=out)
    assert "deleted 1 query_findings" in out.getvalue()
    assert list(FindingRow.objects.values_list("pk", flat=True)) == [keep.pk]
