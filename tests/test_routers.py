"""``DATABASE_ALIAS`` honoured everywhere: the API, the admin, the evaluator and health read and
write the records on the records alias (``e2e_otel.routers``), checked on two real databases."""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path

import pytest

from e2e_otel.models import PerformanceThreshold, WorkflowSession
from e2e_otel.routers import RecordsRouter
from tests.servers import PYTHON, REPO_ROOT, subprocess_env

# Runs in a child process on tests.settings_two_aliases; prints one JSON line of facts.
SCRIPT = textwrap.dedent('''
    import json, django
    from django.core.management import call_command
    django.setup()
    from django.contrib.auth import get_user_model
    from django.core import checks
    from django.db import connections
    from django.test import Client
    from e2e_otel.bootstrap import get_runtime
    from e2e_otel.models import PerformanceThreshold, WorkflowSession
    from e2e_otel.thresholds import load_rules

    call_command("migrate", verbosity=0)
    call_command("migrate", database="records", verbosity=0)
    tables = {alias: set(connections[alias].introspection.table_names()) for alias in ("default", "records")}
    get_user_model().objects.create_user("staffer", password="pw-not-secret", is_staff=True, is_superuser=True)

    client = Client()
    cid = client.get("/ping/").headers["X-Correlation-ID"]
    get_runtime().force_flush(10)
    api = Client(HTTP_AUTHORIZATION="Bearer test-api-key")
    session = api.get(f"/api/v1/debugging/workflow-sessions/{cid}/")
    created = api.post("/api/v1/debugging/performance-thresholds/",
                       {"layer": "api", "metric_name": "response_time", "warning_threshold": 1,
                        "critical_threshold": 2, "unit": "ms"}, content_type="application/json")
    started = api.post("/api/v1/debugging/workflow-sessions/", {"workflow_type": "checkout"},
                       content_type="application/json")
    completed = api.post(f"/api/v1/debugging/workflow-sessions/{started.json()['id']}/complete/",
                         {"status": "completed"}, content_type="application/json")
    health = api.get("/api/v1/debugging/system-health/").json()
    client.force_login(get_user_model().objects.get(username="staffer"))
    changelist = client.get("/admin/e2e_otel/workflowsession/")
    print(json.dumps({
        "default_has_records_table": "debugging_workflow_session" in tables["default"],
        "records_has_records_table": "debugging_workflow_session" in tables["records"],
        "session_status": session.status_code,
        "threshold_status": created.status_code,
        "thresholds_in_records": PerformanceThreshold.objects.using("records").count(),
        "rules_source": load_rules("records").source,
        "complete_status": completed.status_code,
        "sessions_in_records": WorkflowSession.objects.using("records").count(),
        "health_sessions": health["counts"]["workflow_sessions"],
        "admin_status": changelist.status_code,
        "admin_lists_session": cid in changelist.content.decode(),
        "check_ids": [m.id for m in checks.run_checks() if m.id and m.id.startswith("e2e_otel.")],
    }))
''')


def test_records_live_on_the_records_alias_for_api_admin_evaluator_and_health(tmp_path: Path) -> None:
    env = subprocess_env({"DJANGO_SETTINGS_MODULE": "tests.settings_two_aliases",
                          "E2E_DEFAULT_DB": str(tmp_path / "default.sqlite3"),
                          "E2E_RECORDS_DB": str(tmp_path / "records.sqlite3"),
                          "E2E_TEST_DB": "sqlite"})
    done = subprocess.run([PYTHON, "-c", SCRIPT], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    facts = json.loads(done.stdout.strip().splitlines()[-1])
    assert facts == {
        "default_has_records_table": False,
        "records_has_records_table": True,
        "session_status": 200,
        "threshold_status": 201,
        "thresholds_in_records": 1,
        "rules_source": "database",
        "complete_status": 200,
        "sessions_in_records": 2,
        "health_sessions": 2,
        "admin_status": 200,
        "admin_lists_session": True,
        "check_ids": [],
    }, facts


class _Other:
    class _meta:  # the shape Django's router reads: model._meta.app_label
        app_label = "shop"


def test_router_answers_only_for_e2e_otel_models(settings) -> None:
    settings.E2E_OTEL = {**settings.E2E_OTEL, "DATABASE_ALIAS": "records"}
    router = RecordsRouter()
    assert router.db_for_read(WorkflowSession) == "records"
    assert router.db_for_write(PerformanceThreshold) == "records"
    assert router.db_for_read(_Other) is None and router.db_for_write(_Other) is None
    assert router.allow_migrate("default", "e2e_otel") is False
    assert router.allow_migrate("records", "e2e_otel") is True
    assert router.allow_migrate("default", "shop") is None


@pytest.mark.django_db
def test_w009_when_another_router_wins(settings) -> None:
    from e2e_otel.routers import router_warnings

    class Elsewhere:
        def db_for_read(self, model, **hints):  # type: ignore[no-untyped-def]
            return "default"

        db_for_write = db_for_read

    settings.E2E_OTEL = {**settings.E2E_OTEL, "DATABASE_ALIAS": "unreachable"}
    settings.DATABASE_ROUTERS = [Elsewhere()]
    assert [m.id for m in router_warnings()] == ["e2e_otel.W009"]
    settings.DATABASE_ROUTERS = [RecordsRouter()]
    assert router_warnings() == []
