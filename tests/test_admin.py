"""Admin pages for the six models, the workflow waterfall and the resolve action."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import Client, override_settings
from django.utils import timezone

from e2e_otel.models import ErrorLog, PerformanceSnapshot, PerformanceThreshold, TraceStep, WorkflowSession
from tests.test_api import quiet_records  # noqa: F401  (fixture)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("quiet_records")]


@pytest.fixture
def admin_client_() -> Client:
    user = get_user_model().objects.create_superuser("root", "root@example.com", "pw-not-secret")
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def session_with_steps() -> WorkflowSession:
    start = timezone.now() - timedelta(seconds=1)
    session = WorkflowSession.objects.create(
        correlation_id=uuid.UUID("0123456789abcdef0123456789abcdef"), workflow_type="checkout",
        status="failed", start_time=start, end_time=start + timedelta(milliseconds=100), duration_ms=100,
        step_count=3)
    rows = [("0000000000000001", "", "frontend", 0, 100, "ok"),
            ("0000000000000002", "0000000000000001", "api", 20, 60, "error"),
            ("0000000000000003", "0000000000000002", "database", 40, 10, "ok")]
    for span_id, parent, layer, offset, duration, status in rows:
        TraceStep.objects.create(
            workflow_session=session, correlation_id=session.correlation_id, span_id=span_id,
            parent_span_id=parent, layer=layer, component=f"{layer}-component", operation="op",
            start_time=start + timedelta(milliseconds=offset),
            end_time=start + timedelta(milliseconds=offset + duration), duration_ms=duration, status=status)
    return session


@pytest.mark.parametrize("model", ["workflowsession", "tracestep", "errorlog", "performancesnapshot",
                                   "debugconfiguration", "performancethreshold"])
def test_changelists_render(admin_client_, session_with_steps, model):
    ErrorLog.objects.create(layer="api", error_type="ValueError", fingerprint="f1")
    PerformanceSnapshot.objects.create(layer="api", metric_name="response_time", metric_value=1.0)
    response = admin_client_.get(f"/admin/e2e_otel/{model}/")
    assert response.status_code == 200


def test_waterfall_bars(admin_client_, session_with_steps):
    response = admin_client_.get(f"/admin/e2e_otel/workflowsession/{session_with_steps.pk}/change/")
    assert response.status_code == 200
    html = response.content.decode()
    assert 'id="e2e-waterfall"' in html
    bars = re.findall(r'class="e2e-bar[^"]*" style="left: ([\d.]+)%; width: ([\d.]+)%; background: (#[0-9a-f]+)',
                      html)
    assert [(float(left), float(width)) for left, width, _ in bars] == [(0.0, 100.0), (20.0, 60.0), (40.0, 10.0)]
    assert len({colour for _, _, colour in bars}) == 3  # one colour per layer
    assert "e2e-error" in html  # the failing api step is outlined
    for label in ("Frontend", "API", "Database"):
        assert label in html  # legend
    assert "e2e-trace-link" not in html


def test_trace_link_when_template_set(admin_client_, session_with_steps):
    values = {**settings.E2E_OTEL, "TRACE_URL_TEMPLATE": "http://jaeger:16686/trace/{trace_id}"}
    with override_settings(E2E_OTEL=values):
        response = admin_client_.get(f"/admin/e2e_otel/workflowsession/{session_with_steps.pk}/change/")
    assert 'href="http://jaeger:16686/trace/0123456789abcdef0123456789abcdef"' in response.content.decode()


def test_search_by_correlation_id(admin_client_, session_with_steps):
    WorkflowSession.objects.create(correlation_id=uuid.uuid4(), workflow_type="other")
    for term in ("01234567-89ab-cdef-0123-456789abcdef", "0123456789ABCDEF0123456789ABCDEF"):
        response = admin_client_.get("/admin/e2e_otel/workflowsession/", {"q": term})
        assert response.status_code == 200
        assert response.context["cl"].result_count == 1
    steps = admin_client_.get("/admin/e2e_otel/tracestep/", {"q": "01234567-89ab-cdef-0123-456789abcdef"})
    assert steps.context["cl"].result_count == 3


def test_span_derived_rows_are_read_only(admin_client_, session_with_steps):
    assert admin_client_.get("/admin/e2e_otel/workflowsession/add/").status_code == 403
    url = f"/admin/e2e_otel/workflowsession/{session_with_steps.pk}/change/"
    admin_client_.post(url, {"workflow_type": "changed"})
    session_with_steps.refresh_from_db()
    assert session_with_steps.workflow_type == "checkout"


def test_mark_resolved_action(admin_client_):
    errors = [ErrorLog.objects.create(layer="api", error_type="E", fingerprint=f"f{i}") for i in range(2)]
    response = admin_client_.post("/admin/e2e_otel/errorlog/", {
        "action": "mark_resolved", "_selected_action": [e.pk for e in errors]}, follow=True)
    assert response.status_code == 200
    for error in errors:
        error.refresh_from_db()
        assert error.resolved and error.resolved_by == "root" and error.resolved_at


def test_threshold_admin_validates_direction(admin_client_):
    data = {"metric_name": "query_time", "layer": "database", "component": "", "warning_threshold": 500,
            "critical_threshold": 100, "direction": "above", "unit": "ms", "description": "", "enabled": "on"}
    response = admin_client_.post("/admin/e2e_otel/performancethreshold/add/", data)
    assert response.status_code == 200  # form redisplayed with the error
    assert "critical must be beyond warning" in response.content.decode()
    assert not PerformanceThreshold.objects.exists()
    data["critical_threshold"] = 900
    response = admin_client_.post("/admin/e2e_otel/performancethreshold/add/", data)
    assert response.status_code == 302
    assert PerformanceThreshold.objects.get().critical_threshold == 900


def test_plain_registrations_are_taken_over_and_host_admins_kept(caplog: pytest.LogCaptureFixture) -> None:
    """A host app's register-everything loop ran first (``tests/test_startup.py`` runs the real case)."""
    from django.contrib import admin

    from e2e_otel.admin import MODEL_ADMINS, WorkflowSessionAdmin, register_admins

    class HostTraceStepAdmin(admin.ModelAdmin):
        pass

    site = admin.AdminSite(name="host")
    site.register(WorkflowSession)  # what `for model in apps.get_models(): site.register(model)` does
    site.register(TraceStep, HostTraceStepAdmin)
    with caplog.at_level("INFO", logger="e2e_otel.admin"):
        register_admins(site)
    assert type(site._registry[WorkflowSession]) is WorkflowSessionAdmin
    assert type(site._registry[TraceStep]) is HostTraceStepAdmin
    assert set(site._registry) == {model for model, _ in MODEL_ADMINS}
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "e2e-otel: replaced the plain admin registration of WorkflowSession with e2e-otel's admin",
        "e2e-otel: TraceStep (tests.test_admin.test_plain_registrations_are_taken_over_and_host_admins_kept."
        "<locals>.HostTraceStepAdmin) already registered in the admin by the project; that registration is kept "
        "and e2e-otel's admin pages are not used",
    ]


def test_a_second_registration_changes_nothing_and_says_nothing(caplog: pytest.LogCaptureFixture) -> None:
    from django.contrib import admin

    from e2e_otel.admin import register_admins

    site = admin.AdminSite(name="twice")
    register_admins(site)
    before = dict(site._registry)
    with caplog.at_level("INFO", logger="e2e_otel.admin"):
        register_admins(site)
    assert caplog.records == []
    assert {m: type(a) for m, a in site._registry.items()} == {m: type(a) for m, a in before.items()}
