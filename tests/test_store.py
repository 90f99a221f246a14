"""RecordWriter: bounded queue, drop counters, outage back-off and recovery, flush, fork, privacy."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connections
from opentelemetry.trace import SpanKind

from e2e_otel.conf import resolve
from e2e_otel.models import ErrorLog, TraceStep, WorkflowSession
from e2e_otel.sanitize import Sanitizer
from e2e_otel.spans_to_records import ErrorData, StepData, WorkflowHints, error_fingerprint
from tests.forking import check_in_child

_trace_counter = iter(range(1, 1_000_000))


def make_step(trace_id: int | None = None, *, root: bool = True, name: str = "GET /x/", layer: str = "api",
              attributes: dict[str, Any] | None = None, errors: tuple[ErrorData, ...] = (),
              status: str = "ok") -> StepData:
    now = time.time_ns()
    return StepData(
        trace_id=trace_id or uuid.uuid4().int, span_id=f"{next(_trace_counter):016x}", parent_span_id="",
        name=name, layer=layer, component="/x/", operation="GET", start_ns=now - 5_000_000, end_ns=now,
        status=status, is_local_root=root, sampled=True, hints=WorkflowHints(route_key="GET /x/"),
        attributes=attributes or {}, errors=errors,
    )


def config(**options: Any) -> Any:
    return resolve({"ENVIRONMENT": "testing", "RECORD_FLUSH_INTERVAL": 0.02, **options}, environ={})


@pytest.fixture
def writers() -> Iterator[Any]:
    from e2e_otel.store import RecordWriter

    made: list[RecordWriter] = []

    def make(*, start: bool = True, alias: str | None = None, **options: Any) -> RecordWriter:
        made.append(RecordWriter(config(**options), Sanitizer(), alias=alias, start=start))
        return made[-1]

    yield make
    for writer in made:
        writer.shutdown(2)


def test_full_queue_drops_and_counts_without_blocking(writers: Any) -> None:
    writer = writers(start=False, RECORD_QUEUE_SIZE=3)
    started = time.perf_counter()
    results = [writer.submit(make_step()) for _ in range(5)]
    assert time.perf_counter() - started < 0.05
    assert results == [True, True, True, False, False]
    stats = writer.stats()
    assert stats["queue_depth"] == 3 and stats["queue_capacity"] == 3
    assert stats["dropped"] == {"queue_full": 2, "refused": 0, "invalid_value": 0, "missing_tables": 0,
                                "db_error": 0, "step_cap": 0, "frontend_step_cap": 0, "unsampled_overflow": 0}
    assert stats["written"] == {"session": 0, "step": 0, "error": 0, "snapshot": 0}
    assert stats["last_error"] is None and stats["last_flush_ts"] is None


@pytest.mark.mysql
@pytest.mark.django_db(transaction=True, databases=["default", "unreachable"])
def test_database_outage_backs_off_keeps_newest_and_recovers(writers: Any) -> None:
    writer = writers(alias="unreachable", RECORD_QUEUE_SIZE=4)
    steps = [make_step() for _ in range(6)]
    for step in steps[:2]:
        writer.submit(step)
    assert not writer.force_flush(0.5)  # nothing can be written
    assert "OperationalError" in (writer.stats()["last_error"] or "")
    started = time.perf_counter()
    for step in steps[2:]:
        assert writer.submit(step)
    assert time.perf_counter() - started < 0.05  # producers never wait for the database
    deadline = time.monotonic() + 5
    while writer.stats()["dropped"]["queue_full"] < 2 and time.monotonic() < deadline:
        writer.force_flush(0.2)
    # Pending capped at 4: the two oldest went, counted as overflow, not as a database error.
    assert writer.stats()["dropped"]["queue_full"] == 2 and writer.stats()["dropped"]["db_error"] == 0
    assert writer.stats()["queue_depth"] == 4

    settings = connections.settings["unreachable"]
    saved = dict(settings)
    default = connections["default"].settings_dict
    settings.update(PORT=default["PORT"], NAME=default["NAME"], HOST=default["HOST"])
    try:
        assert writer.force_flush(10)  # cuts the back-off short and writes the backlog
    finally:
        settings.clear()
        settings.update(saved)
    stored = set(WorkflowSession.objects.values_list("correlation_id", flat=True))
    assert stored == {uuid.UUID(int=s.trace_id) for s in steps[2:]}
    assert writer.stats()["written"]["step"] == 4 and writer.stats()["queue_depth"] == 0


@pytest.mark.mysql
@pytest.mark.django_db(transaction=True)
def test_force_flush_returns_when_written_not_after_the_interval(writers: Any) -> None:
    writer = writers(RECORD_FLUSH_INTERVAL=30, RECORD_BATCH_SIZE=1000)
    steps = [make_step() for _ in range(5)]
    for step in steps:
        writer.submit(step)
    started = time.monotonic()
    assert writer.force_flush(10)
    assert time.monotonic() - started < 5
    assert TraceStep.objects.filter(correlation_id__in=[uuid.UUID(int=s.trace_id) for s in steps]).count() == 5
    assert writer.stats()["last_flush_ts"] is not None


@pytest.mark.mysql
@pytest.mark.django_db(transaction=True)
def test_writer_sanitises_before_storage(writers: Any) -> None:
    writer = writers()
    trace_id = uuid.uuid4().int
    stack = 'Traceback:\n  File "app.py", line 3, in login\n    check(password="hunter2")\nError: token=abc123xyz'
    error = ErrorData(error_type="AuthError", message="bad password=hunter2 for Bearer abc123xyz",
                      stacktrace=stack, layer="api", component="/login/", operation="POST",
                      fingerprint=error_fingerprint("AuthError", "api", "/login/", "POST", stack),
                      severity="warning", category="auth", timestamp_ns=time.time_ns(),
                      metadata={"password": "hunter2"})
    writer.submit(make_step(trace_id, status="error", errors=(error,), attributes={
        "db.statement": "SELECT 1 FROM auth_user WHERE password = 'hunter2' AND id = 42",
        "api_token": "abc123xyz", "http.route": "login/"}))
    assert writer.force_flush(10)
    step = TraceStep.objects.get(correlation_id=uuid.UUID(int=trace_id))
    assert step.metadata["db.statement"] == "SELECT ? FROM auth_user WHERE password = ? AND id = ?"
    assert step.metadata["api_token"] == "[REDACTED]" and step.metadata["http.route"] == "login/"
    row = ErrorLog.objects.get(correlation_id=uuid.UUID(int=trace_id))
    stored = f"{row.error_message}|{row.stack_trace}|{row.metadata}"
    assert "hunter2" not in stored and "abc123xyz" not in stored
    assert "[REDACTED]" in row.error_message and 'in login' in row.stack_trace


def test_fork_restarts_the_writer_with_an_empty_queue(writers: Any) -> None:
    writer = writers(alias="unreachable")
    for _ in range(3):
        writer.submit(make_step())
    parent_thread = writer._thread
    # the child must not touch the database or pytest state
    assert check_in_child(lambda: writer.stats()["queue_depth"] == 0 and writer._thread is not None
                          and writer._thread.is_alive() and writer._thread is not parent_thread)
    assert writer.stats()["queue_depth"] >= 1  # the parent's backlog is untouched


def test_unknown_kind_of_span_is_not_a_workflow() -> None:
    from opentelemetry.sdk.trace import TracerProvider

    from e2e_otel.processors import _is_stray_query
    from e2e_otel.spans_to_records import step_from_span

    provider = TracerProvider()
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("SELECT", kind=SpanKind.CLIENT, attributes={"db.system": "mysql"}) as span:
        pass
    step = step_from_span(span)  # type: ignore[arg-type]
    assert step is not None and step.layer == "database" and _is_stray_query(step)


def _raw_mysql() -> Any:
    """A connection of our own to the test database, outside Django (another 'process')."""
    import pymysql

    settings = connections["default"].settings_dict
    return pymysql.connect(host=settings["HOST"] or "127.0.0.1", port=int(settings["PORT"] or 3306),
                           user=settings["USER"], password=settings["PASSWORD"], database=settings["NAME"],
                           autocommit=False)


@pytest.mark.mysql
@pytest.mark.django_db(transaction=True)
def test_lock_wait_timeout_is_retried_not_dropped(writers: Any, monkeypatch: Any) -> None:
    from e2e_otel import store

    if connections["default"].vendor != "mysql":
        pytest.skip("needs MySQL/MariaDB row locks")
    monkeypatch.setattr(store, "LOCK_WAIT_TIMEOUT", 1)
    writer = writers()
    trace_id = uuid.uuid4().int
    writer.submit(make_step(trace_id, root=False))
    assert writer.force_flush(10)
    session = WorkflowSession.objects.get(correlation_id=uuid.UUID(int=trace_id))
    locker = _raw_mysql()
    try:
        with locker.cursor() as cursor:  # another transaction holds the session row
            cursor.execute(f"SELECT id FROM {WorkflowSession._meta.db_table} WHERE id = %s FOR UPDATE",
                           [session.pk])
        writer.submit(make_step(trace_id, root=True))
        deadline = time.monotonic() + 8
        while "1205" not in (writer.stats()["last_error"] or "") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "1205" in (writer.stats()["last_error"] or "")  # waited 1 s, then gave up
        assert writer.stats()["dropped"]["db_error"] == 0
    finally:
        locker.rollback()
        locker.close()
    assert writer.force_flush(10)
    stats = writer.stats()
    assert stats["dropped"]["db_error"] == 0
    assert TraceStep.objects.filter(correlation_id=uuid.UUID(int=trace_id)).count() == 2
    assert stats["written"]["step"] == 2
    session.refresh_from_db()
    assert session.step_count == 2 and session.status == "completed"


@pytest.mark.mysql
@pytest.mark.django_db(transaction=True)
def test_reconnect_after_a_stale_connection_sets_the_lock_wait_timeout(writers: Any) -> None:
    from e2e_otel.store import LOCK_WAIT_TIMEOUT

    connection = connections["default"]
    if connection.vendor != "mysql":
        pytest.skip("MySQL/MariaDB session variable")
    writer = writers(start=False)  # its methods run on this thread, on this thread's connection
    writer._check_connection(connection)
    with connection.cursor() as cursor:
        cursor.execute("SELECT @@SESSION.innodb_lock_wait_timeout, CONNECTION_ID()")
        timeout, first_id = cursor.fetchone()
    assert timeout == LOCK_WAIT_TIMEOUT
    killer = _raw_mysql()
    try:
        with killer.cursor() as cursor:
            cursor.execute(f"KILL {int(first_id)}")  # the server closed it while we idled
    finally:
        killer.close()
    writer._last_used = time.monotonic() - 3600
    writer._check_connection(connection)
    with connection.cursor() as cursor:
        cursor.execute("SELECT @@SESSION.innodb_lock_wait_timeout, CONNECTION_ID()")
        timeout, second_id = cursor.fetchone()
    assert second_id != first_id
    assert timeout == LOCK_WAIT_TIMEOUT


@pytest.mark.mysql
@pytest.mark.django_db(transaction=True)
def test_errors_of_a_chunk_are_grouped_with_one_statement_pair_per_fingerprint(writers: Any) -> None:
    from django.test.utils import CaptureQueriesContext

    writer = writers(start=False)  # driven on this thread, so its queries can be captured
    table = ErrorLog._meta.db_table

    def error(kind: str, at: int) -> ErrorData:
        stack = f'  File "/srv/app/{kind}.py", line 3, in {kind}\n'
        return ErrorData(error_type="KeyError", message=f"missing {at}", stacktrace=stack, layer="api",
                         component="/x/", operation="GET",
                         fingerprint=error_fingerprint("KeyError", "api", "/x/", "GET", stack),
                         severity="warning", category="validation", timestamp_ns=at)

    def chunk(base: int) -> list[tuple[int, StepData]]:
        steps = [make_step(status="error", errors=(error("cart" if i % 2 else "pay", base + i),))
                 for i in range(20)]
        return list(enumerate(steps, start=base))

    first, second = chunk(1000), chunk(2000)
    for batch in (first, second):
        with CaptureQueriesContext(connections["default"]) as queries:
            assert writer._attempt(writer._write, batch) == "ok"
        writer._chunk_done.clear()
        on_errors = [q["sql"] for q in queries.captured_queries if table in q["sql"]]
        assert len(on_errors) == 4, on_errors  # per fingerprint: a locked read, then an insert or an update
    groups = {row.stack_trace.split("in ")[-1].strip(): row for row in ErrorLog.objects.all()}
    assert sorted(groups) == ["cart", "pay"]
    assert groups["cart"].occurrences == groups["pay"].occurrences == 20
    assert groups["pay"].error_message == "missing 1000"  # the first occurrence's text
    assert groups["cart"].correlation_id == uuid.UUID(int=second[-1][1].trace_id)  # the latest occurrence
    assert writer.stats()["written"]["error"] == 40
    assert WorkflowSession.objects.filter(error_count=1).count() == 40


def test_fork_gives_the_record_processor_a_fresh_hold_and_lock(writers: Any) -> None:
    import threading

    from e2e_otel.processors import WorkflowSpanProcessor

    processor = WorkflowSpanProcessor(writers(alias="unreachable"), slow_span_ms=500)
    processor._hold(make_step(root=False))
    assert processor.stats()["held_traces"] == 1
    held = threading.Event()
    release = threading.Event()

    def hold_lock() -> None:  # another thread is inside the hold when the process forks
        with processor._lock:
            held.set()
            release.wait(5)

    thread = threading.Thread(target=hold_lock)
    thread.start()
    held.wait(5)
    try:
        ok = check_in_child(lambda: processor._lock.acquire(timeout=1) and not processor._held)
    finally:
        release.set()
        thread.join(5)
    assert ok
    assert processor.stats()["held_traces"] == 1  # the parent's hold is untouched


@pytest.mark.django_db(transaction=True)
def test_a_late_span_of_a_closed_request_does_not_reopen_the_session() -> None:
    """A browser's fetch span can be exported after its click root closed the workflow."""
    from opentelemetry.sdk.trace import TracerProvider

    from e2e_otel.conf import resolve
    from e2e_otel.models import WorkflowSession
    from e2e_otel.processors import WorkflowSpanProcessor
    from e2e_otel.sanitize import Sanitizer
    from e2e_otel.store import RecordWriter

    config = resolve({"RECORD_FLUSH_INTERVAL": 0.05}, {})
    writer = RecordWriter(config, Sanitizer())
    processor = WorkflowSpanProcessor(writer, slow_span_ms=1000)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("browser")
    try:
        click = tracer.start_span("click checkout", attributes={"e2e.layer": "frontend"})
        from opentelemetry import trace

        with trace.use_span(click, end_on_exit=False):
            fetch = tracer.start_span("POST", attributes={"e2e.layer": "frontend"})
        click.end()
        assert writer.force_flush(5)
        fetch.end()  # ends after its root, arrives in a later batch
        assert writer.force_flush(5)
        session = WorkflowSession.objects.get(correlation_id=f"{click.get_span_context().trace_id:032x}")
        assert session.status == "completed" and session.step_count == 2
        assert session.end_time is not None and session.duration_ms > 0
        later = tracer.start_span("next request", attributes={"e2e.layer": "frontend"},
                                  context=trace.set_span_in_context(trace.NonRecordingSpan(click.get_span_context())))
        later.end()
        assert writer.force_flush(5)
        session.refresh_from_db()
        assert session.status == "in_progress"  # a span starting after the end is a later request
    finally:
        writer.shutdown()


@pytest.mark.django_db(transaction=True)
def test_an_exception_escaping_nested_spans_is_one_error_kept_where_it_was_raised() -> None:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

    from e2e_otel.conf import resolve
    from e2e_otel.models import ErrorLog
    from e2e_otel.processors import WorkflowSpanProcessor
    from e2e_otel.sanitize import Sanitizer
    from e2e_otel.store import RecordWriter

    writer = RecordWriter(resolve({"RECORD_FLUSH_INTERVAL": 0.05}, {}), Sanitizer())
    provider = TracerProvider()
    provider.add_span_processor(WorkflowSpanProcessor(writer, slow_span_ms=1000))
    tracer = provider.get_tracer("t")

    def charge() -> None:
        raise ValueError("card declined")

    try:
        for _ in range(2):  # two requests, each with the error crossing three spans
            with (
                pytest.raises(ValueError),
                tracer.start_as_current_span("POST /checkout/", kind=trace.SpanKind.SERVER,
                                             attributes={"http.route": "checkout/", "http.method": "POST"}),
                tracer.start_as_current_span("workflow checkout"),
                tracer.start_as_current_span("charge", attributes={"e2e.layer": "external",
                                                                   "e2e.component": "payments"}),
            ):
                charge()
        assert writer.force_flush(5)
        (group,) = ErrorLog.objects.all()
        assert (group.layer, group.component, group.occurrences) == ("external", "payments", 2)
    finally:
        writer.shutdown()


@pytest.mark.mysql
@pytest.mark.django_db(transaction=True)
def test_set_path_writes_the_rows_the_orm_path_writes_in_statements_of_bounded_size(writers: Any) -> None:
    """The chunk path builds its TraceStep INSERTs itself (in pieces of ``_ROWS_PER_STATEMENT``) and
    inserts new sessions already folded; the per-trace fallback goes through the ORM. Both must
    store the same values in every TraceStep column and the same session."""
    import dataclasses

    from django.test.utils import CaptureQueriesContext

    from e2e_otel.store import _ROWS_PER_STATEMENT, _STEP_COLUMNS

    model_columns = [f.name for f in TraceStep._meta.concrete_fields if not f.primary_key]
    assert sorted(_STEP_COLUMNS) == sorted(model_columns)
    writer = writers(start=False, MAX_STEPS_PER_WORKFLOW=1000)
    count = 2 * _ROWS_PER_STATEMENT + 3
    trace_id = uuid.uuid4().int
    root = make_step(trace_id, name="GET /orders/<int:pk>/ password=hunter2",
                     attributes={"http.route": "/orders/<int:pk>/", "api_token": "abc", "n": 1.5})
    steps = [root] + [make_step(trace_id, root=False, layer="database", name="SELECT shop_product",
                                attributes={"db.system": "mysql", "db.statement": f"SELECT {i} FROM t"})
                      for i in range(count - 1)]
    other_id = uuid.uuid4().int
    same = [dataclasses.replace(s, trace_id=other_id) for s in steps]  # span ids are per session
    seq = iter(range(1, 10_000))
    with CaptureQueriesContext(connections["default"]) as queries:
        writer._write_set({trace_id: [(next(seq), s) for s in steps]})
    inserts = [q["sql"] for q in queries.captured_queries if TraceStep._meta.db_table in q["sql"]]
    assert len(inserts) == 3, inserts  # two full pieces and the rest
    writer._write_trace_by_trace({other_id: [(next(seq), s) for s in same]})

    def stored(tid: int) -> tuple[list[tuple[Any, ...]], dict[str, Any]]:
        cid = uuid.UUID(int=tid)
        steps = sorted(TraceStep.objects.filter(correlation_id=cid).values_list(*_STEP_COLUMNS[2:]))
        session = WorkflowSession.objects.filter(correlation_id=cid).values().get()
        return steps, {k: v for k, v in session.items() if k not in ("id", "correlation_id", "created_at",
                                                                      "updated_at")}

    set_steps, set_session = stored(trace_id)
    assert len(set_steps) == count and set_session["step_count"] == count
    assert "hunter2" not in str(set_steps) and all(row[-1] for row in set_steps)  # scrubbed metadata
    assert (set_steps, set_session) == stored(other_id)


def test_scrub_memos_are_bounded_and_give_the_sanitizers_answers(writers: Any) -> None:
    from e2e_otel.sanitize import MEMO_SIZE

    writer = writers(start=False)
    sanitizer = Sanitizer()
    for i in range(MEMO_SIZE + 50):
        statement = f"SELECT * FROM t{i} WHERE password = 'hunter2' AND id = {i}"
        assert writer._metadata({"db.statement": statement}) == {"db.statement": sanitizer.scrub_sql(statement)}
        assert writer._text(f"GET /x/{i}/ token=abc123", 12) == sanitizer.scrub_text(f"GET /x/{i}/ token=abc123")[:12]
    memos = (writer._sanitizer._scrub_sql_memo, writer._sanitizer._scrub_text_memo)
    for memo in memos:
        assert memo.cache_info().currsize == MEMO_SIZE
    before = [memo.cache_info() for memo in memos]
    huge = "INSERT INTO t VALUES " + ", ".join(f"({i}, 'x')" for i in range(2000))  # too long to keep
    assert writer._metadata({"db.statement": huge}) == {"db.statement": sanitizer.scrub_sql(huge)}
    assert writer._text("y" * 10_000, 190) == sanitizer.scrub_text("y" * 10_000)[:190]
    assert [memo.cache_info() for memo in memos] == before


@pytest.mark.mysql
@pytest.mark.django_db(transaction=True)
def test_a_full_batch_is_written_without_waiting_for_the_interval(writers: Any) -> None:
    writer = writers(RECORD_FLUSH_INTERVAL=30, RECORD_BATCH_SIZE=20)
    for n in range(20):
        writer.submit(make_step())
        if n == 4:
            time.sleep(0.2)  # the writer is gathering: these five are pending, the rest queued
    deadline = time.monotonic() + 10
    while writer.stats()["written"]["step"] < 20 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert writer.stats()["written"]["step"] == 20
    assert time.monotonic() < deadline


@pytest.mark.mysql
@pytest.mark.django_db(transaction=True)
def test_new_sessions_get_their_ids_on_backends_that_return_none(writers: Any, monkeypatch: Any) -> None:
    writer = writers(start=False)
    monkeypatch.setattr(type(connections["default"].features), "can_return_rows_from_bulk_insert", False)
    from django.test.utils import CaptureQueriesContext

    steps = [make_step() for _ in range(3)]
    with CaptureQueriesContext(connections["default"]) as queries:
        assert writer._attempt(writer._write, list(enumerate(steps, start=1))) == "ok"
    table = WorkflowSession._meta.db_table
    inserts = [q["sql"] for q in queries.captured_queries if q["sql"].startswith(f"INSERT INTO `{table}`")]
    assert len(inserts) == 1, inserts  # the chunk path, not the per-trace fallback
    for step in steps:
        session = WorkflowSession.objects.get(correlation_id=uuid.UUID(int=step.trace_id))
        assert TraceStep.objects.get(span_id=step.span_id).workflow_session_id == session.pk


@pytest.mark.django_db(transaction=True)
def test_a_chunk_of_many_new_sessions_links_every_step_to_its_own_session(writers: Any) -> None:
    """New sessions go in several statements with ids read back by correlation id (RETURNING rows
    have no promised order); every step must point at the session of its own trace."""
    from django.db.models import F

    writer = writers(start=False)
    trace_ids = [uuid.uuid4().int for _ in range(27)]  # three statements of sessions
    seq = iter(range(1, 10_000))
    writer._write_set({tid: [(next(seq), make_step(tid, root=n == 0, name=f"s{n}")) for n in range(2)]
                       for tid in trace_ids})
    assert WorkflowSession.objects.count() == 27 and TraceStep.objects.count() == 54
    assert not TraceStep.objects.exclude(workflow_session__correlation_id=F("correlation_id")).exists()
    assert sorted(s.correlation_id.int for s in WorkflowSession.objects.all()) == sorted(trace_ids)


@pytest.mark.django_db(transaction=True)
def test_the_writer_waits_for_a_gap_between_requests_but_not_when_flushed(writers: Any) -> None:
    from e2e_otel import inflight

    writer = writers(RECORD_FLUSH_INTERVAL=0.01)
    inflight.begin_request()
    try:
        writer.submit(make_step())
        time.sleep(0.4)
        assert writer.stats()["written"]["step"] == 0  # a request is in flight: the chunk waits
        started = time.perf_counter()
        assert writer.force_flush(5)  # a flush does not wait for the gap
        assert time.perf_counter() - started < 1.0
        assert writer.stats()["written"]["step"] == 1 and writer._flushes == 0
        writer.submit(make_step())
    finally:
        inflight.end_request()
    deadline = time.monotonic() + 3
    while writer.stats()["written"]["step"] < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert writer.stats()["written"]["step"] == 2  # the gap came: written without a flush
