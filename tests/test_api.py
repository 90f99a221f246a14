"""The debugging REST API: auth matrix, filters, actions, validation and the schema."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone
from rest_framework.test import APIClient

from e2e_otel.models import (
    DebugConfiguration,
    ErrorLog,
    PerformanceSnapshot,
    PerformanceThreshold,
    TraceStep,
    WorkflowSession,
)

BASE = "/api/v1/debugging/"
API_KEY = "test-api-key"

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("quiet_records")]


@pytest.fixture
def live_records():
    """Opt out of ``quiet_records``: the record processor stays attached for this test."""


@pytest.fixture
def quiet_records(request):
    """These tests exercise the API on rows they create themselves: hide rows earlier tests left
    behind (deleted inside this test's rolled-back transaction). The record processor itself is
    detached for non-transactional tests by ``tests/conftest.py``."""
    if "live_records" not in request.fixturenames:
        for model in (TraceStep, WorkflowSession, ErrorLog, PerformanceSnapshot):
            model.objects.all().delete()
    yield


@pytest.fixture
def staff() -> APIClient:
    user = get_user_model().objects.create_user("staffer", password="pw-not-secret", is_staff=True)
    client = APIClient()
    client.force_login(user)
    return client


@pytest.fixture
def keyed() -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {API_KEY}")
    return client


def make_session(workflow_type: str = "checkout", status: str = "completed", age: timedelta = timedelta(0),
                 steps: int = 0, **extra: Any) -> WorkflowSession:
    start = timezone.now() - age
    session = WorkflowSession.objects.create(
        correlation_id=uuid.uuid4(), workflow_type=workflow_type, status=status, start_time=start,
        last_activity=start, duration_ms=100.0 + steps, step_count=steps, **extra)
    layers = ["frontend", "api", "database"]
    for index in reversed(range(steps)):  # inserted out of order on purpose
        TraceStep.objects.create(
            workflow_session=session, correlation_id=session.correlation_id, span_id=f"{index + 1:016x}",
            layer=layers[index % 3], component=f"c{index}", operation="op",
            start_time=start + timedelta(milliseconds=10 * index),
            end_time=start + timedelta(milliseconds=10 * index + 5), duration_ms=5.0)
    return session


def make_error(**extra: Any) -> ErrorLog:
    values = {"layer": "api", "component": "checkout", "error_type": "ValueError", "fingerprint": uuid.uuid4().hex,
              "severity": "error", "error_message": "boom"}
    values.update(extra)
    return ErrorLog.objects.create(**values)


# --- access ------------------------------------------------------------------------------------------------

ENDPOINTS = ["workflow-sessions/", "trace-steps/", "performance-snapshots/", "performance-snapshots/alerts/",
             "error-logs/", "error-logs/summary/", "system-health/", "debug-configurations/",
             "performance-thresholds/", "workflow-sessions/stats/", "schema/"]


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_access_matrix(endpoint, staff, keyed):
    url = BASE + endpoint
    assert APIClient().get(url).status_code == 401
    normal = APIClient()
    normal.force_login(get_user_model().objects.create_user("plain", password="pw-not-secret"))
    assert normal.get(url).status_code == 403
    wrong = APIClient()
    wrong.credentials(HTTP_AUTHORIZATION="Bearer not-the-key")
    assert wrong.get(url).status_code == 401
    assert staff.get(url).status_code == 200
    assert keyed.get(url).status_code == 200


def test_anonymous_gets_www_authenticate():
    response = APIClient().get(BASE + "workflow-sessions/")
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_anonymous_cannot_write():
    response = APIClient().post(BASE + "workflow-sessions/", {"workflow_type": "x"}, format="json")
    assert response.status_code == 401
    assert not WorkflowSession.objects.exists()


# --- workflow sessions ------------------------------------------------------------------------------------


def test_list_filters_and_ordering(keyed):
    recent = make_session("checkout", "completed")
    failed = make_session("login", "failed", age=timedelta(hours=2))
    old = make_session("checkout", "in_progress", age=timedelta(days=3))
    url = BASE + "workflow-sessions/"

    ids = [row["id"] for row in keyed.get(url).json()["results"]]
    assert ids == [recent.id, failed.id, old.id]
    assert [r["id"] for r in keyed.get(url, {"status": "failed"}).json()["results"]] == [failed.id]
    assert {r["id"] for r in keyed.get(url, {"workflow_type": "checkout"}).json()["results"]} == {recent.id, old.id}
    since = (timezone.now() - timedelta(days=1)).isoformat()
    assert {r["id"] for r in keyed.get(url, {"since": since}).json()["results"]} == {recent.id, failed.id}
    until = (timezone.now() - timedelta(hours=1)).isoformat()
    assert {r["id"] for r in keyed.get(url, {"until": until}).json()["results"]} == {failed.id, old.id}
    by_cid = keyed.get(url, {"correlation_id": old.correlation_id.hex}).json()["results"]
    assert [r["id"] for r in by_cid] == [old.id]
    ordered = keyed.get(url, {"ordering": "start_time"}).json()["results"]
    assert [r["id"] for r in ordered] == [old.id, failed.id, recent.id]


@pytest.mark.parametrize(("params", "field"), [
    ({"status": "bogus"}, "status"),
    ({"since": "yesterday-ish"}, "since"),
    ({"correlation_id": "not-a-uuid"}, "correlation_id"),
])
def test_bad_filter_is_400_with_field(keyed, params, field):
    response = keyed.get(BASE + "workflow-sessions/", params)
    assert response.status_code == 400
    assert field in response.json()


def test_pagination_is_bounded(keyed):
    for _ in range(3):
        make_session()
    page = keyed.get(BASE + "workflow-sessions/", {"limit": 2}).json()
    assert page["count"] == 3 and len(page["results"]) == 2 and page["next"]
    huge = keyed.get(BASE + "workflow-sessions/", {"limit": 100000}).json()
    assert len(huge["results"]) == 3  # capped at max_limit, no error


def test_retrieve_by_id_and_correlation_id_with_ordered_steps(keyed):
    session = make_session(steps=4)
    for lookup in (str(session.id), str(session.correlation_id), session.correlation_id.hex):
        response = keyed.get(f"{BASE}workflow-sessions/{lookup}/")
        assert response.status_code == 200, lookup
        body = response.json()
        assert body["id"] == session.id
        assert body["trace_id"] == session.correlation_id.hex
        starts = [step["start_time"] for step in body["steps"]]
        assert len(starts) == 4 and starts == sorted(starts)
        assert [s["layer"] for s in body["steps"]] == ["frontend", "api", "database", "frontend"]
    assert keyed.get(f"{BASE}workflow-sessions/{uuid.uuid4()}/").status_code == 404


def test_create_masks_secrets_and_validates(keyed):
    cid = uuid.uuid4()
    response = keyed.post(BASE + "workflow-sessions/", {
        "workflow_type": "checkout", "correlation_id": str(cid), "user_id": "u1",
        "metadata": {"cart": 3, "password": "hunter2"}}, format="json")
    assert response.status_code == 201, response.content
    session = WorkflowSession.objects.get(correlation_id=cid)
    assert session.workflow_type == "checkout" and session.status == "in_progress"
    assert session.workflow_type_source == "explicit"
    assert session.metadata["cart"] == 3
    assert "hunter2" not in str(session.metadata)

    again = keyed.post(BASE + "workflow-sessions/", {"workflow_type": "x", "correlation_id": str(cid)},
                       format="json")
    assert again.status_code == 400 and "correlation_id" in again.json()
    missing = keyed.post(BASE + "workflow-sessions/", {"metadata": []}, format="json")
    assert missing.status_code == 400
    assert {"workflow_type", "metadata"} <= set(missing.json())


def test_complete(keyed):
    session = make_session(status="in_progress", age=timedelta(seconds=2))
    response = keyed.post(f"{BASE}workflow-sessions/{session.correlation_id}/complete/",
                          {"status": "failed", "error_message": "card declined token=abc123"}, format="json")
    assert response.status_code == 200, response.content
    session.refresh_from_db()
    assert session.status == "failed" and session.status_explicit and session.end_time
    assert session.duration_ms >= 2000
    assert "abc123" not in session.metadata["error_message"]
    bad = keyed.post(f"{BASE}workflow-sessions/{session.id}/complete/", {"status": "done"}, format="json")
    assert bad.status_code == 400 and "status" in bad.json()


def test_stats(keyed):
    make_session("checkout", "completed")
    make_session("checkout", "failed")
    make_session("login", "completed")
    body = keyed.get(BASE + "workflow-sessions/stats/").json()
    assert body["total"] == 3
    assert body["by_status"] == {"in_progress": 0, "completed": 2, "failed": 1}
    assert body["failure_rate"] == pytest.approx(1 / 3)
    checkout = next(row for row in body["by_workflow_type"] if row["workflow_type"] == "checkout")
    assert checkout["count"] == 2 and checkout["failed"] == 1
    only_login = keyed.get(BASE + "workflow-sessions/stats/", {"workflow_type": "login"}).json()
    assert only_login["total"] == 1


def test_trace_steps_filter(keyed):
    session = make_session(steps=3)
    rows = keyed.get(BASE + "trace-steps/", {"layer": "database"}).json()["results"]
    assert [r["component"] for r in rows] == ["c2"]
    rows = keyed.get(BASE + "trace-steps/", {"correlation_id": str(session.correlation_id)}).json()["results"]
    assert len(rows) == 3
    assert keyed.post(BASE + "trace-steps/", {}, format="json").status_code == 405


# --- snapshots, errors, health -------------------------------------------------------------------------------


def test_snapshots_create_and_alerts(keyed):
    ok = keyed.post(BASE + "performance-snapshots/", {"layer": "api", "component": "checkout",
                                                     "metric_name": "response_time", "metric_value": 120},
                    format="json")
    assert ok.status_code == 201, ok.content
    crit = keyed.post(BASE + "performance-snapshots/", {"layer": "api", "metric_name": "response_time",
                                                       "metric_value": 2500, "threshold_status": "critical"},
                      format="json")
    assert crit.status_code == 201
    bad = keyed.post(BASE + "performance-snapshots/", {"layer": "nowhere", "metric_value": "x"}, format="json")
    assert bad.status_code == 400 and {"layer", "metric_value", "metric_name"} <= set(bad.json())
    alerts = keyed.get(BASE + "performance-snapshots/alerts/").json()["results"]
    assert [a["metric_value"] for a in alerts] == [2500]
    assert PerformanceSnapshot.objects.count() == 2


def test_resolve_by_key_and_by_staff(keyed, staff):
    first, second = make_error(), make_error(error_type="KeyError")
    response = keyed.post(f"{BASE}error-logs/{first.id}/resolve/", {"resolution_notes": "fixed in 1.2"},
                          format="json")
    assert response.status_code == 200
    first.refresh_from_db()
    assert first.resolved and first.resolved_at and first.resolved_by == "api-key"
    assert first.resolution_notes == "fixed in 1.2"
    assert staff.post(f"{BASE}error-logs/{second.id}/resolve/", {}, format="json").status_code == 200
    second.refresh_from_db()
    assert second.resolved_by == "staffer"
    rows = keyed.get(BASE + "error-logs/", {"resolved": "false"}).json()["results"]
    assert rows == []
    assert keyed.get(BASE + "error-logs/", {"resolved": "maybe"}).status_code == 400


def test_error_summary_unresolved_first(keyed):
    make_error(resolved=True, occurrences=9)
    make_error(occurrences=2)
    make_error(occurrences=3)
    make_error(layer="database", error_type="OperationalError", severity="critical")
    body = keyed.get(BASE + "error-logs/summary/").json()
    assert body["total_groups"] == 4 and body["unresolved_groups"] == 3
    assert body["by_layer"] == {"api": 3, "database": 1}
    assert body["by_severity"] == {"critical": 1, "error": 3}
    groups = body["groups"]
    assert [g["resolved"] for g in groups] == [False, False, True]
    assert groups[0]["error_type"] == "ValueError" and groups[0]["groups"] == 2
    assert groups[0]["occurrences"] == 5


@pytest.mark.django_db(transaction=True)  # the health probe counts on its own connection
def test_system_health(keyed):
    from e2e_otel.dbhealth.probe import probe_for

    probe_for("default").invalidate()
    PerformanceSnapshot.objects.create(layer="api", metric_name="response_time", metric_value=3000,
                                       threshold_status="critical")
    make_error()
    body = keyed.get(BASE + "system-health/").json()
    assert body["database"]["reachable"] is True
    assert body["counts"]["unresolved_errors"] == 1
    assert body["exporter"]["traces_exporter"] == "none"
    assert body["exporter"]["configured"] is False
    assert body["status"] == "degraded"
    assert body["thresholds_in_breach"][0]["metric_name"] == "response_time"
    assert "available" in body["record_writer"]


# --- configuration + thresholds ----------------------------------------------------------------------------


def test_debug_configuration_crud(keyed):
    created = keyed.post(BASE + "debug-configurations/", {"name": "feature_x", "config_data": {"a": 1}},
                         format="json")
    assert created.status_code == 201
    pk = created.json()["id"]
    assert keyed.patch(f"{BASE}debug-configurations/{pk}/", {"enabled": False}, format="json").status_code == 200
    assert DebugConfiguration.objects.get(pk=pk).enabled is False
    assert keyed.post(BASE + "debug-configurations/", {"name": "feature_x"}, format="json").status_code == 400
    assert keyed.post(BASE + "debug-configurations/", {"name": "y", "config_data": [1]},
                      format="json").status_code == 400
    assert keyed.delete(f"{BASE}debug-configurations/{pk}/").status_code == 204
    assert not DebugConfiguration.objects.exists()


def test_threshold_validation(keyed):
    url = BASE + "performance-thresholds/"
    good = keyed.post(url, {"metric_name": "response_time", "layer": "api", "warning_threshold": 500,
                            "critical_threshold": 2000}, format="json")
    assert good.status_code == 201, good.content
    backwards = keyed.post(url, {"metric_name": "query_time", "layer": "database", "warning_threshold": 500,
                                 "critical_threshold": 100}, format="json")
    assert backwards.status_code == 400 and "critical_threshold" in backwards.json()
    below_ok = keyed.post(url, {"metric_name": "hit_rate", "layer": "cache", "direction": "below",
                                "warning_threshold": 80, "critical_threshold": 60}, format="json")
    assert below_ok.status_code == 201, below_ok.content
    below_bad = keyed.post(url, {"metric_name": "hit_rate", "layer": "cache", "component": "redis",
                                 "direction": "below", "warning_threshold": 60, "critical_threshold": 80},
                           format="json")
    assert below_bad.status_code == 400
    duplicate = keyed.post(url, {"metric_name": "response_time", "layer": "api", "warning_threshold": 1,
                                 "critical_threshold": 2}, format="json")
    assert duplicate.status_code == 400
    pk = good.json()["id"]
    flip = keyed.patch(f"{url}{pk}/", {"critical_threshold": 100}, format="json")
    assert flip.status_code == 400
    assert PerformanceThreshold.objects.get(pk=pk).critical_threshold == 2000
    assert keyed.patch(f"{url}{pk}/", {"critical_threshold": 3000}, format="json").status_code == 200
    assert keyed.get(url, {"layer": "cache"}).json()["count"] == 1


def test_openapi_schema(keyed):
    response = keyed.get(BASE + "schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    schema = response.json()
    assert schema["openapi"].startswith("3.")
    paths = schema["paths"]
    for path in ("/api/v1/debugging/workflow-sessions/", "/api/v1/debugging/workflow-sessions/{id}/complete/",
                 "/api/v1/debugging/error-logs/{id}/resolve/", "/api/v1/debugging/system-health/",
                 "/api/v1/debugging/performance-thresholds/{id}/"):
        assert path in paths, sorted(paths)
    params = {p["name"] for p in paths["/api/v1/debugging/workflow-sessions/"]["get"]["parameters"]}
    assert {"status", "since", "until", "correlation_id", "limit", "offset", "ordering"} <= params


@pytest.mark.mysql
@pytest.mark.django_db(transaction=True)
def test_created_workflow_goes_through_workflow_tracer(keyed, live_records):
    """The API's create/complete produce WorkflowTracer spans; the writer merges them into the row."""
    from e2e_otel.bootstrap import get_runtime

    cid = uuid.uuid4()
    created = keyed.post(BASE + "workflow-sessions/", {"workflow_type": "import", "correlation_id": str(cid)},
                         format="json")
    assert created.status_code == 201
    done = keyed.post(f"{BASE}workflow-sessions/{cid}/complete/", {"status": "failed", "error_message": "bad row"},
                      format="json")
    assert done.status_code == 200
    runtime = get_runtime()
    assert runtime is not None and runtime.force_flush(10)
    session = WorkflowSession.objects.get(correlation_id=cid)
    assert session.status == "failed" and session.status_explicit
    assert session.workflow_type == "import"
    assert session.step_count >= 1  # the workflow root span became a step of the same session
    writer = keyed.get(BASE + "system-health/").json()["record_writer"]
    assert writer["available"] is True
    assert isinstance(writer["stats"], dict) and writer["stats"]


@pytest.mark.django_db
def test_creating_an_existing_correlation_id_is_refused_with_a_field_error(keyed):
    cid = str(uuid.uuid4())
    first = keyed.post(BASE + "workflow-sessions/", {"workflow_type": "import", "correlation_id": cid}, format="json")
    again = keyed.post(BASE + "workflow-sessions/", {"workflow_type": "import", "correlation_id": cid}, format="json")
    assert (first.status_code, again.status_code) == (201, 400)
    assert "correlation_id" in again.json()


# --- hostile query input: 400 with the field named, never a 500 -------------------------------------------

HOSTILE_VALUES = [
    "99999999999999999999999", "9223372036854775808", "-1", "0", "-99999999999999999999999", "1e309", "NaN",
    "abc", "x" * 5000, "a\x00b", "\x00", "é" * 200, "' OR 1=1 --", "%", "2024-13-45", "2024-02-30T25:61:00",
    "9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+01:00", "not-a-uuid", "f" * 33,
    "ffffffff-ffff-ffff-ffff-fffffffffffff", "1000000d", "99999999999w",
]


def _list_views() -> list[tuple[str, dict[str, Any]]]:
    from e2e_otel.api import views

    viewsets = {"workflow-sessions/": views.WorkflowSessionViewSet, "trace-steps/": views.TraceStepViewSet,
                "performance-snapshots/": views.PerformanceSnapshotViewSet, "error-logs/": views.ErrorLogViewSet,
                "debug-configurations/": views.DebugConfigurationViewSet,
                "performance-thresholds/": views.PerformanceThresholdViewSet}
    actions = {"workflow-sessions/": ["stats/"], "performance-snapshots/": ["alerts/"], "error-logs/": ["summary/"]}
    found = []
    for prefix, viewset in viewsets.items():
        for url in [prefix, *(prefix + a for a in actions.get(prefix, []))]:
            found.append((url, dict(viewset.filter_params)))
    return found


FUZZ_TARGETS = [(url, sorted([*params, "ordering", "limit", "offset"])) for url, params in _list_views()] + [
    ("reports/", ["since", "top", "format"]),
    ("query-findings/", ["kind", "correlation_id", "table", "limit"]),
    ("system-health/", ["since"]),
    ("endpoints/", ["format"]),
]


@pytest.mark.parametrize(("url", "names"), FUZZ_TARGETS, ids=[t[0] for t in FUZZ_TARGETS])
def test_hostile_query_values_never_500(keyed, url, names):
    make_session(steps=1)
    make_error()
    failures = []
    for name in names:
        for value in HOSTILE_VALUES:
            try:
                code = keyed.get(BASE + url, {name: value}).status_code
            except Exception as exc:  # the test client re-raises the 500 as the exception
                code = f"{type(exc).__name__}: {str(exc)[:80]}"
            if code not in (200, 400, 404, 406):
                failures.append((name, value[:40], code))
    assert not failures


@pytest.mark.parametrize("value", ["99999999999999999999999", "9223372036854775808", "0", "-5", "12abc"])
def test_integer_filter_out_of_range_is_400_with_field(keyed, value):
    response = keyed.get(BASE + "trace-steps/", {"workflow_session": value})
    assert response.status_code == 400
    assert "workflow_session" in response.json()


def test_integer_filter_accepts_the_largest_bigint(keyed):
    session = make_session(steps=2)
    assert len(keyed.get(BASE + "trace-steps/", {"workflow_session": str(session.id)}).json()["results"]) == 2
    largest = keyed.get(BASE + "trace-steps/", {"workflow_session": str(2**63 - 1)})
    assert largest.status_code == 200 and largest.json()["results"] == []


def test_new_filters_are_indexed():
    """STYLE: every API filter and ordering column leads an index (or is the leading column of one)."""
    from django.db import connection

    from e2e_otel.api import views

    def leading_columns(model) -> set[str]:
        with connection.cursor() as cursor:
            constraints = connection.introspection.get_constraints(cursor, model._meta.db_table)
        return {c["columns"][0] for c in constraints.values() if c["columns"] and (c["index"] or c["unique"]
                                                                                    or c["primary_key"])}

    small = {views.DebugConfigurationViewSet, views.PerformanceThresholdViewSet}  # a few dozen rows at most
    for viewset in (views.WorkflowSessionViewSet, views.TraceStepViewSet, views.PerformanceSnapshotViewSet,
                    views.ErrorLogViewSet, *small):
        model = viewset.queryset.model
        indexed = leading_columns(model)
        for param in viewset.filter_params.values():
            column = model._meta.get_field(param.lookup.split("__")[0]).column
            assert column in indexed, (model.__name__, column)
        if viewset in small:
            continue
        for name in viewset.ordering_fields:
            column = model._meta.get_field(name).column
            composite = {tuple(i.fields) for i in model._meta.indexes}
            assert column in indexed or any(fields[-1] == name for fields in composite), (model.__name__, name)


@pytest.mark.parametrize("prefix", ["workflow-sessions/", "trace-steps/", "performance-snapshots/", "error-logs/",
                                    "debug-configurations/", "performance-thresholds/"])
def test_hostile_detail_lookups_are_404(keyed, prefix):
    failures = []
    for value in ["99999999999999999999999", "9223372036854775808", "0", "-1", "abc", "f" * 40, "1e309",
                  "ffffffff-ffff-ffff-ffff-ffffffffffff", "%00", "x" * 300]:
        try:
            code = keyed.get(f"{BASE}{prefix}{value}/").status_code
        except Exception as exc:  # a re-raised view exception is the 500
            code = f"{type(exc).__name__}: {str(exc)[:80]}"
        if code != 404:
            failures.append((value[:40], code))
    assert not failures
