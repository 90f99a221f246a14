"""RecordWriter under hostile values and failures: sanitised on the way in, refusals classified."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import pytest

from e2e_otel.models import ErrorLog, PerformanceSnapshot, TraceStep, WorkflowSession
from e2e_otel.spans_to_records import ErrorData, MetricData, StepData, WorkflowHints
from tests import test_store
from tests.test_store import make_step
from tests.test_store_postgresql import require_postgresql

writers = test_store.writers  # the same writer fixture (started writers shut down after the test)

REPO = Path(__file__).resolve().parent.parent


def cid(step: StepData) -> uuid.UUID:
    return uuid.UUID(int=step.trace_id)


def with_metric(value: float, **fields: Any) -> StepData:
    metric = MetricData(layer="frontend", component="/home", name="lcp", value=value, unit="ms",
                        timestamp_ns=time.time_ns(), metadata=fields)
    return replace(make_step(), metrics=(metric,))


@pytest.mark.mysql
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_a_non_finite_metric_drops_only_its_snapshot(writers: Any, value: float) -> None:
    writer = writers()
    bad, ordinary = with_metric(value), make_step()
    writer.submit(bad)
    writer.submit(ordinary)
    assert writer.force_flush(10)
    assert WorkflowSession.objects.filter(correlation_id__in=[cid(bad), cid(ordinary)]).count() == 2
    assert TraceStep.objects.filter(correlation_id=cid(ordinary)).count() == 1
    assert not PerformanceSnapshot.objects.filter(correlation_id=cid(bad)).exists()
    stats = writer.stats()
    assert stats["dropped"]["invalid_value"] == 1 and stats["written"]["snapshot"] == 0
    assert stats["written"]["step"] == 2


@pytest.mark.mysql
@pytest.mark.django_db(transaction=True)
def test_surrogates_nul_and_non_finite_metadata_are_stored_cleaned(writers: Any) -> None:
    writer = writers()
    step = make_step(name="GET \ud800 /x\x00/", attributes={"score": float("nan"),
                                                               "code.function": "f\udfff\x00",
                                                               "peer.service": [1.0, float("inf")]})
    error = ErrorData(error_type="Value\ud83dError", message="bad \udc00 json\x00", stacktrace="",
                      layer="api", component="/x\ud800/", operation="GET", fingerprint="f" * 64,
                      severity="error", category="validation", timestamp_ns=time.time_ns(),
                      metadata={"ratio": float("-inf")})
    step = replace(step, errors=(error,), status="error",
                   hints=WorkflowHints(route_key="GET /x/", user_id="u\ud800", metadata={"m": math.nan}))
    writer.submit(step)
    after = make_step()
    writer.submit(after)
    assert writer.force_flush(10)
    row = TraceStep.objects.get(correlation_id=cid(step))
    assert row.name == "GET \ufffd /x/"
    assert row.metadata == {"score": None, "code.function": "f\ufffd", "peer.service": [1.0, None]}
    logged = ErrorLog.objects.get(correlation_id=cid(step))
    assert logged.error_message == "bad \ufffd json" and logged.error_type == "Value\ufffdError"
    assert logged.metadata == {"operation": "GET", "ratio": None}
    session = WorkflowSession.objects.get(correlation_id=cid(step))
    assert session.user_id == "u\ufffd" and session.metadata == {"m": None}
    assert TraceStep.objects.filter(correlation_id=cid(after)).count() == 1
    stats = writer.stats()
    assert stats["written"] == {"session": 2, "step": 2, "error": 1, "snapshot": 0}
    assert not any(stats["dropped"].values())


# --- frontend (ingested) steps ----------------------------------------------------------------------


def frontend_step(trace_id: int, *, status: str = "ok", user: str | None = None, root: bool = True,
                  error: ErrorData | None = None) -> StepData:
    """A browser span as ingestion hands it on: layer ``frontend``, no workflow status."""
    return replace(make_step(trace_id, root=root, name="click", layer="frontend", status=status),
                   hints=WorkflowHints(user_id=user), errors=(error,) if error else ())


def browser_error(trace_id: int) -> ErrorData:
    return ErrorData(error_type="TypeError", message="x is undefined", stacktrace="at f (app.js:1:2)",
                     layer="frontend", component="/checkout", operation="click", fingerprint=f"{trace_id:064x}"[-64:],
                     severity="error", category="validation", timestamp_ns=time.time_ns())


@pytest.mark.mysql
@pytest.mark.django_db(transaction=True)
def test_ingested_spans_never_set_the_user_nor_flip_a_server_status(writers: Any) -> None:
    writer = writers()
    completed, failed, running = (uuid.uuid4().int for _ in range(3))
    writer.submit(make_step(completed))  # a server root that ended well
    writer.submit(make_step(failed, status="error"))  # a server root that failed
    writer.submit(make_step(running, root=False, layer="database"))  # a request still running
    assert writer.force_flush(10)
    writer.submit(frontend_step(completed, status="error", user="mallory", error=browser_error(completed)))
    writer.submit(frontend_step(failed, user="mallory"))
    writer.submit(frontend_step(running, user="mallory"))
    assert writer.force_flush(10)
    sessions = {s.correlation_id.int: s for s in WorkflowSession.objects.all()}
    assert sessions[completed].status == "completed"  # a browser error does not fail it
    assert sessions[completed].error_count == 1 and sessions[completed].step_count == 2
    assert ErrorLog.objects.get(correlation_id=uuid.UUID(int=completed)).layer == "frontend"
    assert sessions[failed].status == "failed"
    assert sessions[running].status == "in_progress"  # a browser root does not close it either
    assert {s.user_id for s in sessions.values()} == {""}
    writer.submit(replace(make_step(completed), hints=WorkflowHints(route_key="GET /x/", user_id="alice")))
    assert writer.force_flush(10)
    session = WorkflowSession.objects.get(correlation_id=uuid.UUID(int=completed))
    assert session.user_id == "alice" and session.status == "completed"  # the server's own errors: none


@pytest.mark.mysql
@pytest.mark.django_db(transaction=True)
def test_frontend_steps_have_a_budget_of_their_own(writers: Any) -> None:
    writer = writers(MAX_STEPS_PER_WORKFLOW=5, MAX_FRONTEND_STEPS_PER_WORKFLOW=3)
    trace_id = uuid.uuid4().int
    for _ in range(10):
        writer.submit(frontend_step(trace_id, root=False))
    assert writer.force_flush(10)
    for n in range(6):
        writer.submit(make_step(trace_id, root=n == 5, layer="database" if n < 5 else "api"))
    assert writer.force_flush(10)
    stored = TraceStep.objects.filter(correlation_id=uuid.UUID(int=trace_id))
    assert stored.filter(layer="frontend").count() == 3
    assert stored.exclude(layer="frontend").count() == 5  # the client did not spend the server's budget
    stats = writer.stats()
    assert stats["dropped"]["frontend_step_cap"] == 7 and stats["dropped"]["step_cap"] == 1
    assert stats["written"]["step"] == stored.count() == 8
    session = WorkflowSession.objects.get(correlation_id=uuid.UUID(int=trace_id))
    assert session.step_count == 8 and session.dropped_step_count == 8


# --- missing tables -----------------------------------------------------------------------------------


def _run_check(script: str, *args: str) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    proc = subprocess.run([sys.executable, str(REPO / "tests" / script), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=180, check=False)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-4000:]}"
    return cast(dict[str, Any], json.loads(proc.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize("vendor", ["mysql", "sqlite", "postgresql"])
def test_missing_tables_are_one_problem_counted_and_recovered_from(vendor: str) -> None:
    """Before ``migrate e2e_otel``: each chunk dropped as ``missing_tables`` with no trace-by-trace
    retry, one warning naming the fix; after it, the writer writes again by itself."""
    from django.db import connections

    if vendor == "mysql" and connections["default"].vendor != "mysql":
        pytest.skip("needs MariaDB")
    if vendor == "postgresql":
        require_postgresql()
    name = os.environ.get("E2E_MYSQL_TEST_DATABASE", "test_e2e_otel")[:40] + "_bare"
    result = _run_check("missing_tables_check.py", vendor, name)
    assert result["before"]["missing_tables"] == 10 and result["per_trace_writes"] == 0
    assert result["after_written"]["step"] == result["rows"] == 3


# --- refusals drop only what was refused; nothing uncommitted counts as written -----------------------


def erring(trace_id: int | None = None, *, fingerprint: str) -> StepData:
    step = make_step(trace_id, status="error")
    error = ErrorData(error_type="ValueError", message="bad", stacktrace="", layer="api", component="/x/",
                      operation="GET", fingerprint=fingerprint, severity="error", category="validation",
                      timestamp_ns=time.time_ns())
    return replace(step, errors=(error,))


@pytest.mark.mysql
@pytest.mark.django_db(transaction=True)
def test_a_trace_the_database_refuses_drops_only_itself(writers: Any, caplog: pytest.LogCaptureFixture) -> None:
    writer = writers(RECORD_FLUSH_INTERVAL=0.5)
    good = [erring(fingerprint="a" * 64) for _ in range(4)]
    refused = [replace(make_step(), status="x" * 50) for _ in range(2)]  # TraceStep.status is 10 wide
    for step in [good[0], refused[0], *good[1:], refused[1]]:
        writer.submit(step)
    assert writer.force_flush(10)
    stats = writer.stats()
    assert stats["dropped"]["refused"] == 2 and stats["dropped"]["db_error"] == 0
    assert stats["written"]["step"] == TraceStep.objects.count() == 4
    assert stats["written"]["error"] == ErrorLog.objects.get().occurrences == 4
    assert not WorkflowSession.objects.filter(correlation_id__in=[cid(s) for s in refused]).exists()
    warnings = [r.getMessage() for r in caplog.records if "not written (refused)" in r.getMessage()]
    assert len(warnings) == 1 and "1406" in warnings[0]  # once a minute, with the database's reason


@pytest.mark.mysql
@pytest.mark.django_db(transaction=True)
def test_a_refused_error_group_drops_only_its_occurrences(writers: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from django.db import DataError

    writer = writers(RECORD_FLUSH_INTERVAL=0.5)
    original = writer._add_to_group

    def add_to_group(fingerprint: str, group: list[Any]) -> Any:
        if fingerprint.startswith("b"):
            raise DataError(1406, "Data too long for column 'error_message'")
        return original(fingerprint, group)

    monkeypatch.setattr(writer, "_add_to_group", add_to_group)
    for fingerprint in ("a" * 64, "b" * 64, "b" * 64, "c" * 64):
        writer.submit(erring(fingerprint=fingerprint))
    assert writer.force_flush(10)
    stats = writer.stats()
    assert stats["written"]["step"] == TraceStep.objects.count() == 4  # the traces went in: none counted dropped
    assert stats["dropped"]["refused"] == 2 and sum(stats["dropped"].values()) == 2
    assert stats["written"]["error"] == 2
    assert sorted(ErrorLog.objects.values_list("fingerprint", flat=True)) == ["a" * 64, "c" * 64]


@pytest.mark.mysql
@pytest.mark.django_db(transaction=True)
def test_a_span_delivered_twice_is_stored_and_counted_once(writers: Any) -> None:
    writer = writers()
    step, other, new = make_step(), make_step(), make_step()
    writer.submit(step)
    assert writer.force_flush(10)
    for item in (step, other, step, new, new):  # again in a later chunk, twice in one, twice in a new trace
        writer.submit(item)
    assert writer.force_flush(10)
    stats = writer.stats()
    assert TraceStep.objects.filter(correlation_id__in=[cid(step), cid(new)]).count() == 2
    assert stats["written"]["step"] == TraceStep.objects.count() == 3
    assert WorkflowSession.objects.get(correlation_id=cid(step)).step_count == 1
    assert WorkflowSession.objects.get(correlation_id=cid(new)).step_count == 1
    assert not any(stats["dropped"].values())


@pytest.mark.mysql
@pytest.mark.django_db(transaction=True)
def test_a_failing_browser_fetch_does_not_fail_the_servers_completed_workflow() -> None:
    """End to end: a request the server completed, then the browser's spans of it through the
    ingestion endpoint, with an error status, an exception and an ``enduser.id``."""
    from django.test import Client

    from e2e_otel.bootstrap import get_runtime
    from e2e_otel.ingest import reset_rate_limits
    from tests.test_ingest import browser_payload, kv, new_trace_id, post

    runtime = get_runtime()
    assert runtime is not None
    trace_id, fetch_span_id = new_trace_id(), 0x1234567890ABCDEF
    assert Client().get("/ping/", headers={"traceparent": f"00-{trace_id:032x}-{fetch_span_id:016x}-01"}
                        ).status_code == 200
    assert runtime.force_flush(10)
    session = WorkflowSession.objects.get(correlation_id=uuid.UUID(int=trace_id))
    assert session.status == "completed" and session.error_count == 0

    payload = browser_payload(trace_id, fetch_span_id=fetch_span_id + 1)
    payload.resource_spans[0].scope_spans[0].spans[1].attributes.append(kv("enduser.id", "mallory"))
    reset_rate_limits()
    assert post(payload.SerializeToString()).status_code == 200
    assert runtime.force_flush(10)
    session.refresh_from_db()
    assert session.status == "completed" and session.user_id == ""
    assert session.error_count == 1  # the browser's failed fetch is counted, and its error is logged
    assert TraceStep.objects.filter(workflow_session=session, layer="frontend").count() == 2
    assert ErrorLog.objects.filter(correlation_id=session.correlation_id, layer="frontend").exists()
