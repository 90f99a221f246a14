"""setup_debugging_defaults (idempotent, --force) and prune_debugging_records (age, cap, batches)."""

from __future__ import annotations

import uuid
from datetime import timedelta
from io import StringIO

import pytest
from django.conf import settings
from django.core.management import call_command, load_command_class
from django.core.management.base import CommandError
from django.test import override_settings
from django.utils import timezone

from e2e_otel.defaults import DEFAULT_CONFIGURATIONS, DEFAULT_THRESHOLDS
from e2e_otel.models import (
    DebugConfiguration,
    ErrorLog,
    PerformanceSnapshot,
    PerformanceThreshold,
    TraceStep,
    WorkflowSession,
)
from tests.test_api import quiet_records  # noqa: F401  (fixture)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("quiet_records")]


def run(name: str, *args: str) -> str:
    out = StringIO()
    call_command(name, *args, stdout=out)
    return out.getvalue()


def test_setup_defaults_is_idempotent_and_force_resets():
    first = run("setup_debugging_defaults")
    total = len(DEFAULT_THRESHOLDS) + len(DEFAULT_CONFIGURATIONS)
    assert f"{total} created" in first
    assert PerformanceThreshold.objects.count() == len(DEFAULT_THRESHOLDS)
    assert DebugConfiguration.objects.count() == len(DEFAULT_CONFIGURATIONS)
    api = PerformanceThreshold.objects.get(metric_name="response_time", layer="api")
    assert (api.warning_threshold, api.critical_threshold, api.direction) == (500, 2000, "above")
    cache = PerformanceThreshold.objects.get(metric_name="hit_rate", layer="cache")
    assert (cache.warning_threshold, cache.critical_threshold, cache.direction) == (80, 60, "below")

    api.warning_threshold = 750
    api.save()
    second = run("setup_debugging_defaults")
    assert "0 created" in second and f"{total} unchanged" in second
    api.refresh_from_db()
    assert api.warning_threshold == 750  # user edits survive a re-run
    assert PerformanceThreshold.objects.count() == len(DEFAULT_THRESHOLDS)

    forced = run("setup_debugging_defaults", "--force")
    assert "1 reset" in forced
    api.refresh_from_db()
    assert api.warning_threshold == 500


def session(age_days: float, status: str = "completed", steps: int = 1) -> WorkflowSession:
    start = timezone.now() - timedelta(days=age_days)
    obj = WorkflowSession.objects.create(correlation_id=uuid.uuid4(), workflow_type="t", status=status,
                                         start_time=start, last_activity=start)
    for index in range(steps):
        TraceStep.objects.create(workflow_session=obj, correlation_id=obj.correlation_id,
                                 span_id=f"{index + 1:016x}", layer="api", component="c", operation="o",
                                 start_time=start)
    return obj


def e2e(**changes: object) -> override_settings:
    return override_settings(E2E_OTEL={**settings.E2E_OTEL, **changes})


def test_prune_by_age_keeps_failed_longer_and_unresolved_errors():
    fresh = session(1)
    old = session(20, steps=3)
    old_failed = session(20, status="failed")
    ancient_failed = session(90, status="failed")
    now = timezone.now()
    old_resolved = ErrorLog.objects.create(layer="api", error_type="E", fingerprint="a", resolved=True,
                                           last_seen=now - timedelta(days=30))
    old_open = ErrorLog.objects.create(layer="api", error_type="E", fingerprint="b",
                                       last_seen=now - timedelta(days=30))
    new_resolved = ErrorLog.objects.create(layer="api", error_type="E", fingerprint="c", resolved=True)
    old_snapshot = PerformanceSnapshot.objects.create(layer="api", metric_name="m", metric_value=1,
                                                      timestamp=now - timedelta(days=30))
    new_snapshot = PerformanceSnapshot.objects.create(layer="api", metric_name="m", metric_value=1)

    with e2e(RETENTION_DAYS=14, FAILED_RETENTION_DAYS=60, MAX_WORKFLOW_SESSIONS=1000):
        dry = run("prune_debugging_records", "--dry-run")
        assert "would delete 1 sessions_expired" in dry
        assert "would delete 1 failed_sessions_expired" in dry
        assert "would delete 4 trace_steps" in dry
        assert WorkflowSession.objects.count() == 4  # dry run deletes nothing
        output = run("prune_debugging_records", "--batch-size", "1")
    assert "deleted 1 sessions_expired" in output
    assert "deleted 1 failed_sessions_expired" in output
    assert "deleted 4 trace_steps" in output
    assert "deleted 1 error_logs" in output and "deleted 1 performance_snapshots" in output
    assert set(WorkflowSession.objects.values_list("pk", flat=True)) == {fresh.pk, old_failed.pk}
    assert not TraceStep.objects.filter(workflow_session_id__in=[old.pk, ancient_failed.pk]).exists()
    assert set(ErrorLog.objects.values_list("pk", flat=True)) == {old_open.pk, new_resolved.pk}
    assert set(PerformanceSnapshot.objects.values_list("pk", flat=True)) == {new_snapshot.pk}
    assert not PerformanceSnapshot.objects.filter(pk=old_snapshot.pk).exists()
    assert not ErrorLog.objects.filter(pk=old_resolved.pk).exists()


def test_prune_by_cap_deletes_oldest_first():
    sessions = [session(age) for age in (5, 4, 3, 2, 1)]
    with e2e(MAX_WORKFLOW_SESSIONS=2):
        output = run("prune_debugging_records", "--batch-size", "2")
    assert "deleted 3 sessions_over_cap" in output
    assert set(WorkflowSession.objects.values_list("pk", flat=True)) == {sessions[3].pk, sessions[4].pk}
    again = run("prune_debugging_records", "--max-sessions", "2")
    assert "deleted 0 sessions_over_cap" in again


def test_prune_deletes_unresolved_errors_after_failed_retention():
    """Unresolved groups (e.g. made up by a hostile browser) must not pile up forever."""
    now = timezone.now()
    stale_open = ErrorLog.objects.create(layer="frontend", error_type="Made", fingerprint="s",
                                         last_seen=now - timedelta(days=61))
    recent_open = ErrorLog.objects.create(layer="frontend", error_type="Real", fingerprint="r",
                                          last_seen=now - timedelta(days=59))
    stale_resolved = ErrorLog.objects.create(layer="api", error_type="E", fingerprint="x", resolved=True,
                                             last_seen=now - timedelta(days=61))
    with e2e(RETENTION_DAYS=14, FAILED_RETENTION_DAYS=60):
        dry = run("prune_debugging_records", "--dry-run")
        assert "would delete 1 unresolved_error_logs_expired" in dry
        assert ErrorLog.objects.filter(pk=stale_open.pk).exists()
        output = run("prune_debugging_records", "--batch-size", "1")
    assert "deleted 1 unresolved_error_logs_expired" in output and "deleted 1 error_logs" in output
    assert set(ErrorLog.objects.values_list("pk", flat=True)) == {recent_open.pk}
    assert not ErrorLog.objects.filter(pk__in=[stale_open.pk, stale_resolved.pk]).exists()
    output = run("prune_debugging_records", "--failed-retention-days", "30")
    assert "deleted 1 unresolved_error_logs_expired" in output
    assert not ErrorLog.objects.exists()
    parser = load_command_class("e2e_otel", "prune_debugging_records").create_parser("manage.py", "prune")
    assert "UNRESOLVED error groups" in parser.format_help()


@pytest.mark.parametrize("option", ["--retention-days", "--failed-retention-days", "--batch-size"])
def test_prune_rejects_zero_instead_of_falling_back_to_the_setting(option):
    kept = session(20)
    with pytest.raises(CommandError, match=f"{option} must be >= 1, got 0"):
        run("prune_debugging_records", option, "0")
    with pytest.raises(CommandError, match="--max-sessions must be >= 0, got -1"):
        run("prune_debugging_records", "--max-sessions", "-1")
    assert WorkflowSession.objects.filter(pk=kept.pk).exists()
