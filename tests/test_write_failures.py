"""write_failures.py: what a failed write means (outage, lock, missing tables, refused data)."""

from __future__ import annotations

import logging
import sqlite3
from typing import Any

import psycopg.errors
import pymysql.err
import pytest
from django.db import DataError, IntegrityError, InterfaceError, OperationalError, ProgrammingError, connections

from e2e_otel.write_failures import FailureLog, classify_failure


def wrapped(django_class: type[Exception], cause: BaseException) -> Exception:
    """What Django's DatabaseErrorWrapper raises: the driver's args, the driver's error as cause."""
    exc = django_class(*cause.args)
    exc.__cause__ = cause
    return exc


def kind(exc: BaseException, usable: bool = True) -> str:
    return classify_failure(exc, connection_usable=lambda: usable)


@pytest.mark.parametrize(("code", "expected"), [
    (1146, "missing_tables"), (1054, "missing_tables"), (1205, "lock"), (1213, "lock"),
    (2003, "outage"), (2006, "outage"), (2013, "outage"), (1040, "outage"), (1290, "outage"),
])
def test_mysql_codes(code: int, expected: str) -> None:
    driver = pymysql.err.OperationalError(code, "message")
    assert kind(wrapped(OperationalError, driver)) == expected
    assert kind(driver) == expected  # a driver error that escaped Django's wrapper reads the same


def test_mysql_data_errors_drop_only_while_the_connection_is_usable() -> None:
    incorrect = wrapped(OperationalError, pymysql.err.OperationalError(1292, "Incorrect datetime value"))
    assert kind(incorrect, usable=True) == "refused"
    assert kind(incorrect, usable=False) == "outage"
    assert kind(wrapped(IntegrityError, pymysql.err.IntegrityError(1062, "Duplicate entry"))) == "refused"
    assert kind(wrapped(DataError, pymysql.err.DataError(1406, "Data too long"))) == "refused"
    assert kind(InterfaceError("(0, '')")) == "outage"
    # PyMySQL refuses NaN while escaping, before anything reaches the server: not an outage.
    assert kind(pymysql.err.ProgrammingError("nan can not be used with MySQL")) == "db_error"


@pytest.mark.parametrize(("driver_class", "expected"), [
    (psycopg.errors.UndefinedTable, "missing_tables"), (psycopg.errors.UndefinedColumn, "missing_tables"),
    (psycopg.errors.DeadlockDetected, "lock"), (psycopg.errors.LockNotAvailable, "lock"),
    (psycopg.errors.SerializationFailure, "lock"), (psycopg.errors.QueryCanceled, "lock"),
    (psycopg.errors.AdminShutdown, "outage"), (psycopg.errors.TooManyConnections, "outage"),
    (psycopg.errors.ReadOnlySqlTransaction, "outage"), (psycopg.errors.InvalidPassword, "outage"),
    (psycopg.errors.UntranslatableCharacter, "refused"), (psycopg.errors.UniqueViolation, "refused"),
    (psycopg.errors.NumericValueOutOfRange, "refused"),
])
def test_postgresql_sqlstates(driver_class: type[Exception], expected: str) -> None:
    assert kind(wrapped(OperationalError, driver_class("message"))) == expected


def test_real_sqlite_errors() -> None:
    db = sqlite3.connect(":memory:")
    try:
        with pytest.raises(sqlite3.OperationalError) as missing:
            db.execute("SELECT * FROM debugging_trace_step")
        db.execute("CREATE TABLE t (a INTEGER)")
        with pytest.raises(sqlite3.OperationalError) as column:
            db.execute("INSERT INTO t (b) VALUES (1)")
    finally:
        db.close()
    assert kind(wrapped(OperationalError, missing.value)) == "missing_tables"
    assert kind(wrapped(OperationalError, column.value)) == "missing_tables"
    assert kind(wrapped(OperationalError, sqlite3.OperationalError("database is locked"))) == "lock"
    assert kind(wrapped(OperationalError, sqlite3.OperationalError("unable to open database file"))) == "outage"


@pytest.mark.mysql
@pytest.mark.django_db
def test_a_real_missing_table_on_mariadb() -> None:
    with pytest.raises(ProgrammingError) as missing, connections["default"].cursor() as cursor:
        cursor.execute("SELECT * FROM no_such_e2e_table")
    assert kind(missing.value) == "missing_tables"


def test_errors_that_are_not_the_databases() -> None:
    surrogate = UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed")
    assert kind(surrogate) == "refused"  # the driver could not encode a value
    assert kind(ValueError("PostgreSQL text fields cannot contain NUL (0x00) bytes")) == "refused"
    assert kind(RuntimeError("Database access not allowed")) == "outage"  # not ready yet: keep the data

    class ImproperlyConfigured(Exception):
        pass

    assert kind(ImproperlyConfigured("settings.DATABASES is improperly configured")) == "outage"
    assert kind(KeyError("a bug")) == "db_error"  # dropped, never retried forever


def test_failure_log_warns_once_per_interval_per_kind(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    log = FailureLog(logging.getLogger("e2e_otel.test"), interval=60, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="e2e_otel.test"):
        results: list[Any] = [log.warn("refused", "refused %s", n) for n in range(5)]
        results.append(log.warn("db_error", "other"))
        now[0] = 61
        results.append(log.warn("refused", "refused %s", 9))
    assert results == [True, False, False, False, False, True, True]
    assert [r.getMessage() for r in caplog.records] == [
        "refused 0", "other", "refused 9 (4 more like it in the last 60 s)"]
