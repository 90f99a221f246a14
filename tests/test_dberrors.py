"""Values in database error messages: masked, names kept (e2e_otel/dberrors.py via Sanitizer.scrub_text).

The messages are produced by the real servers (MariaDB on 127.0.0.1:3306, PostgreSQL on 5432) where
they are reachable, and also pinned as text so the rules are checked without them.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from e2e_otel.sanitize import Sanitizer

SECRET = "s3cr3t-Value.42@example.org"


@pytest.fixture(scope="module")
def sanitizer() -> Sanitizer:
    return Sanitizer()


PINNED = [
    # (message as the driver renders it, what must survive)
    (f"(1062, \"Duplicate entry '{SECRET}' for key 'shop_customer.email'\")",
     "(1062, \"Duplicate entry '?' for key 'shop_customer.email'\")"),
    (f"Duplicate entry 'O'Brien-{SECRET}' for key 'name_uniq'", "Duplicate entry '?' for key 'name_uniq'"),
    (f"(1366, \"Incorrect integer value: '{SECRET}' for column `db`.`t`.`n` at row 1\")",
     "(1366, \"Incorrect integer value: '?' for column `db`.`t`.`n` at row 1\")"),
    (f"(1292, \"Truncated incorrect DOUBLE value: '{SECRET}'\")",
     "(1292, \"Truncated incorrect DOUBLE value: '?'\")"),
    (f"(1292, \"Incorrect datetime value: '{SECRET}' for column `t`.`c` at row 1\")",
     "(1292, \"Incorrect datetime value: '?' for column `t`.`c` at row 1\")"),
    (f"Variable 'time_zone' can't be set to the value of '{SECRET}'",
     "Variable 'time_zone' can't be set to the value of '?'"),
    (f"(1064, \"You have an error in your SQL syntax; check the manual for the right syntax to use near "
     f"''{SECRET}' WHERE id = 5' at line 1\")",
     "(1064, \"You have an error in your SQL syntax; check the manual for the right syntax to use near "
     "'? WHERE id = ?' at line 1\")"),
    (f"duplicate key value violates unique constraint \"c_email\"\nDETAIL:  Key (email)=({SECRET}) already exists.",
     "duplicate key value violates unique constraint \"c_email\"\nDETAIL:  Key (email)=(?) already exists."),
    (f"DETAIL:  Key (lower((email)::text), tenant)=({SECRET}, 7) already exists.",
     "DETAIL:  Key (lower((email)::text), tenant)=(?) already exists."),
    (f'DETAIL:  Key (user_id)=({SECRET}) is not present in table "auth_user".',
     'DETAIL:  Key (user_id)=(?) is not present in table "auth_user".'),
    (f'DETAIL:  Key (id)=({SECRET}) is still referenced from table "shop_order".',
     'DETAIL:  Key (id)=(?) is still referenced from table "shop_order".'),
    (f"DETAIL:  Key (room, during)=({SECRET}) conflicts with existing key (room, during)=({SECRET}).",
     "DETAIL:  Key (room, during)=(?) conflicts with existing key (room, during)=(?)."),
    (f'null value in column "name" violates not-null constraint\nDETAIL:  Failing row contains (1, {SECRET}, null).',
     'null value in column "name" violates not-null constraint\nDETAIL:  Failing row contains (?).'),
    (f'invalid input syntax for type integer: "{SECRET}"\nLINE 1: SELECT * FROM "t" WHERE "id" = \'{SECRET}\'\n'
     "                                         ^",
     'invalid input syntax for type integer: "?"\nLINE 1: SELECT * FROM "t" WHERE "id" = ?\n'
     "                                         ^"),
    (f'invalid input value for enum mood: "{SECRET}"', 'invalid input value for enum mood: "?"'),
    (f'value "{SECRET}" is out of range for type integer', 'value "?" is out of range for type integer'),
    (f'date/time field value out of range: "{SECRET}"', 'date/time field value out of range: "?"'),
    (f'invalid input syntax for type json\nDETAIL:  Token "{SECRET}" is invalid.',
     'invalid input syntax for type json\nDETAIL:  Token "?" is invalid.'),
    (f"CONTEXT:  unnamed portal parameter $2 = '{SECRET} it''s'", "CONTEXT:  unnamed portal parameter $2 = '?'"),
    # Django's check_constraints() (MySQL and SQLite backends)
    (f"The row in table 'shop_order' with primary key '{SECRET}' has an invalid foreign key: shop_order.user_id "
     f"contains a value '{SECRET}' that does not have a corresponding value in auth_user.id.",
     "The row in table 'shop_order' with primary key '?' has an invalid foreign key: shop_order.user_id "
     "contains a value '?' that does not have a corresponding value in auth_user.id."),
]


@pytest.mark.parametrize(("message", "expected"), PINNED, ids=[m[:40] for m, _ in PINNED])
def test_values_in_database_errors_are_masked_and_names_kept(sanitizer: Sanitizer, message: str,
                                                             expected: str) -> None:
    assert sanitizer.scrub_text(message) == expected
    assert sanitizer.scrub_text(f"IntegrityError: {message}") == f"IntegrityError: {expected}"


def test_database_error_values_are_masked_even_with_masking_off() -> None:
    """They are SQL parameter values, which are never stored or exported (like SQL literals)."""
    off = Sanitizer(enabled=False, max_string_length=100)
    assert off.scrub_text(f"Duplicate entry '{SECRET}' for key 'email' password=kept") == (
        "Duplicate entry '?' for key 'email' password=kept")
    long = off.scrub_text(f"Duplicate entry '{SECRET}' for key 'email'" + " pad" * 60)
    assert SECRET not in long and long.endswith("…[truncated]")


@pytest.mark.parametrize("message", [
    "Column 'email' cannot be null",
    "(1452, 'Cannot add or update a child row: a foreign key constraint fails (`db`.`t`, CONSTRAINT `fk`)')",
    'duplicate key value violates unique constraint "shop_customer_email_key"',
    "UNIQUE constraint failed: shop_customer.email",
    "Table 'db.missing' doesn't exist",
    "the key (of the house) was lost",
])
def test_messages_without_values_are_unchanged(sanitizer: Sanitizer, message: str) -> None:
    assert sanitizer.scrub_text(message) == message


def test_exception_events_and_stack_traces_are_masked_on_the_one_attribute_path(sanitizer: Sanitizer) -> None:
    trace = ("Traceback (most recent call last):\n  File \"x.py\", line 1, in f\n"
             f"django.db.utils.IntegrityError: (1062, \"Duplicate entry '{SECRET}' for key 'email'\")\n")
    attributes = {"exception.type": "IntegrityError", "exception.stacktrace": trace,
                  "exception.message": f"(1062, \"Duplicate entry '{SECRET}' for key 'email'\")"}
    clean = sanitizer.clean_attributes(attributes)
    assert SECRET not in repr(clean)
    assert "for key 'email'" in clean["exception.message"] and "for key 'email'" in clean["exception.stacktrace"]


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("'\"()=$ \nKkeyDuplicate entryLINE:near1")), max_size=3000))
def test_crafted_messages_are_scrubbed_in_bounded_time(text: str) -> None:
    started = time.perf_counter()
    Sanitizer().scrub_text(text)
    assert time.perf_counter() - started < 0.5


def test_adversarial_repetition_is_linear(sanitizer: Sanitizer) -> None:
    for head in ("Duplicate entry '", "Key (", "Key ((", "value: '", "parameter $1 = '", "near '"):
        text = head * (4096 // len(head))
        started = time.perf_counter()
        Sanitizer().scrub_text(text)
        assert time.perf_counter() - started < 0.5, head


# --- the real servers ----------------------------------------------------------------------------


def _mariadb_errors() -> Iterator[str]:
    pymysql = pytest.importorskip("pymysql")
    try:
        conn = pymysql.connect(host="127.0.0.1", port=3306, user="root", password="", database="mysql",
                               connect_timeout=3)  # a temporary table only: any schema will do
    except pymysql.err.OperationalError as exc:
        pytest.skip(f"MariaDB unreachable: {exc}")
    try:
        with conn.cursor() as cur:
            cur.execute("CREATE TEMPORARY TABLE e2e_secret_probe (email VARCHAR(80) UNIQUE, n INT)")
            cur.execute("INSERT INTO e2e_secret_probe VALUES (%s, 1)", (SECRET,))
            cur.execute("SET SESSION sql_mode = 'STRICT_ALL_TABLES'")
            for sql, args in (("INSERT INTO e2e_secret_probe VALUES (%s, 2)", (SECRET,)),
                              ("INSERT INTO e2e_secret_probe VALUES ('x', %s)", (SECRET,)),
                              ("SELECT * FROM e2e_secret_probe WHERE email = %s WHRE n = 1", (SECRET,))):
                try:
                    cur.execute(sql, args)
                except Exception as exc:  # tests.settings installs PyMySQL as MySQLdb; any driver error
                    yield str(exc)
    finally:
        conn.close()


def _postgresql_errors() -> Iterator[str]:
    psycopg = pytest.importorskip("psycopg")
    dsn = os.environ.get("E2E_POSTGRES_DSN", "host=127.0.0.1 port=5432 user=postgres dbname=postgres")
    try:
        conn = psycopg.connect(dsn, connect_timeout=3, autocommit=True)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL unreachable: {exc}")
    table = f"e2e_secret_probe_{uuid.uuid4().hex[:8]}"
    try:
        conn.execute(f"CREATE TEMP TABLE {table} (email TEXT UNIQUE, n INT NOT NULL)")
        conn.execute(f"INSERT INTO {table} VALUES (%s, 1)", (SECRET,))
        # Django's default psycopg cursor binds on the client: the statement quoted in LINE 1: has values.
        for cursor in (conn.cursor(), psycopg.ClientCursor(conn)):
            for sql, args in ((f"INSERT INTO {table} VALUES (%s, 2)", (SECRET,)),
                              (f"INSERT INTO {table} VALUES ('x', %s)", (SECRET,)),
                              (f"INSERT INTO {table} VALUES (%s, NULL)", (SECRET,))):
                try:
                    cursor.execute(sql, args)
                except psycopg.Error as exc:
                    yield str(exc)
    finally:
        conn.close()


@pytest.mark.mysql
def test_real_mariadb_errors_lose_their_values(sanitizer: Sanitizer) -> None:
    messages = list(_mariadb_errors())
    assert len(messages) == 3 and all(SECRET in m for m in messages[:2]), messages
    scrubbed = [sanitizer.scrub_text(m) for m in messages]
    assert not any(SECRET in m for m in scrubbed), scrubbed
    assert "for key 'email'" in scrubbed[0] and "for column" in scrubbed[1]


def test_real_postgresql_errors_lose_their_values(sanitizer: Sanitizer) -> None:
    messages = list(_postgresql_errors())
    assert len(messages) == 6 and sum(SECRET in m for m in messages) >= 4, messages
    scrubbed = [sanitizer.scrub_text(m) for m in messages]
    assert not any(SECRET in m for m in scrubbed), scrubbed
    assert all("Key (email)=(?) already exists" in m for m in scrubbed[::3])


# --- end to end: a real IntegrityError inside a trace, recorded by the writer ------------------------------


@pytest.mark.mysql
@pytest.mark.django_db(transaction=True)
def test_integrity_error_values_never_reach_error_logs_or_steps() -> None:
    """Issue #18.4: ``Duplicate entry '<the value>' for key …`` reached ErrorLog rows."""
    from django.db import IntegrityError, connection
    from opentelemetry import trace

    from e2e_otel.bootstrap import get_runtime
    from e2e_otel.models import ErrorLog, TraceStep
    from e2e_otel.processors import WorkflowSpanProcessor

    runtime = get_runtime()
    assert runtime is not None
    processor = runtime.processor(WorkflowSpanProcessor)
    assert isinstance(processor, WorkflowSpanProcessor)
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE IF NOT EXISTS e2e_secret_unique (email VARCHAR(80) UNIQUE)")
        cursor.execute("DELETE FROM e2e_secret_unique")
        cursor.execute("INSERT INTO e2e_secret_unique VALUES (%s)", [SECRET])
    try:
        tracer = trace.get_tracer("tests.dberrors")
        with pytest.raises(IntegrityError), tracer.start_as_current_span("signup") as span:
            trace_id = span.get_span_context().trace_id
            with connection.cursor() as cursor:
                cursor.execute("INSERT INTO e2e_secret_unique VALUES (%s)", [SECRET])
        assert runtime.derived.queue.flush(10) and processor.force_flush(10_000)
    finally:
        with connection.cursor() as cursor:
            cursor.execute("DROP TABLE IF EXISTS e2e_secret_unique")
    errors = list(ErrorLog.objects.filter(correlation_id=uuid.UUID(int=trace_id)))
    steps = list(TraceStep.objects.filter(correlation_id=uuid.UUID(int=trace_id)))
    assert errors and steps
    stored = repr([(e.error_message, e.stack_trace, e.metadata) for e in errors] + [s.metadata for s in steps])
    assert SECRET not in stored
    assert any("Duplicate entry '?' for key 'email'" in e.error_message for e in errors), stored
