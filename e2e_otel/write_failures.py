"""What a failed write means, so the record writer drops only what the database refused.

:func:`classify_failure` is pure apart from the ``connection_usable`` callback; :class:`FailureLog`
rate-limits the writer's warnings. Both run on the record writer thread. Kinds:

- ``outage``: the database cannot be reached (connection refused or lost, server shutting down,
  read-only, too many connections, wrong credentials) or Django cannot use it yet; the writer
  backs off and keeps its queue.
- ``lock``: a lock wait timeout, deadlock or serialization failure; the transaction was rolled back
  on a healthy connection and the same data goes in later: back off and retry.
- ``missing_tables``: e2e-otel's tables (or columns) do not exist: ``manage.py migrate e2e_otel``
  has not been run. Nothing can be written; the writer drops and counts, and retries slowly.
- ``refused``: this data was refused (an integrity or data error, a value the driver cannot put in
  SQL); writing it again fails the same way, so only this trace (or error group) is dropped.
- ``db_error``: any other failure (e.g. a ``ProgrammingError``): dropped, not retried forever.

Codes are read from the driver's exception, which Django keeps as ``__cause__`` (and whose
``args`` it copies): MySQL/MariaDB error numbers, PostgreSQL SQLSTATEs (psycopg 3 ``sqlstate``,
psycopg2 ``pgcode``), SQLite messages. Exceptions are matched by their PEP 249 class *name*, so a
driver exception that escaped Django's wrapper (PyMySQL raises while escaping parameters) is read
the same way as Django's.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Final, Literal

__all__ = ["DATA_FAILURES", "Failure", "FailureLog", "classify_failure"]

Failure = Literal["outage", "lock", "missing_tables", "refused", "db_error"]
#: Failures that drop the data they concern; the others leave it queued for a retry.
DATA_FAILURES: Final = frozenset({"refused", "db_error"})

_MYSQL_MISSING = frozenset({1146, 1054})  # no such table; unknown column (a migration not applied)
_MYSQL_LOCK = frozenset({1205, 1213})  # lock wait timeout; deadlock
_MYSQL_OUTAGE = frozenset({
    1040, 1044, 1045, 1049, 1053, 1081, 1129, 1130, 1152, 1158, 1159, 1160, 1161, 1290, 1836, 1927,
    2001, 2002, 2003, 2004, 2005, 2006, 2012, 2013, 2026, 2047, 2055, 4031,
})
_PG_MISSING = frozenset({"42P01", "42703"})  # undefined_table, undefined_column
_PG_LOCK = frozenset({"40001", "40P01", "55P03", "57014"})  # serialization, deadlock, lock, timeout
_PG_OUTAGE_PREFIXES = ("08", "28", "53", "57P", "3D000", "25006")  # connection, auth, resources, shutdown
_PG_REFUSED_PREFIXES = ("22", "23")  # data exception, integrity constraint violation
_SQLITE_MISSING = ("no such table", "no such column", "has no column named")
_SQLITE_LOCK = ("database is locked", "database table is locked")
_SQLITE_OUTAGE = ("unable to open database", "disk i/o error", "readonly database", "database or disk is full")
_PEP249 = ("InterfaceError", "OperationalError", "DataError", "IntegrityError", "ProgrammingError",
           "NotSupportedError", "InternalError", "DatabaseError")
# Not database errors, but Django not ready to use the database yet (settings, app registry, a test
# that has not been allowed database access): the same data goes in later.
_NOT_READY = ("ImproperlyConfigured", "AppRegistryNotReady", "RuntimeError")


def classify_failure(exc: BaseException, *, connection_usable: Callable[[], bool]) -> Failure:
    """The kind of ``exc`` (module docstring); ``connection_usable`` is asked only when the error
    itself does not say (an ``OperationalError`` without a known code)."""
    pep249 = _pep249_name(exc)
    if pep249 is None:
        if isinstance(exc, (UnicodeError, ValueError, OverflowError, TypeError)):
            return "refused"  # the driver could not turn a value into SQL
        if any(cls.__name__ in _NOT_READY for cls in type(exc).__mro__):
            return "outage"
        return "db_error"
    known = _by_code(exc)
    if known is not None:
        return known
    if pep249 == "InterfaceError":
        return "outage"
    if pep249 == "OperationalError":
        return "refused" if connection_usable() else "outage"  # e.g. MySQL 1292 or 4025: data
    if pep249 in ("DataError", "IntegrityError"):
        return "refused"
    return "db_error"


def _pep249_name(exc: BaseException) -> str | None:
    for cls in type(exc).__mro__:
        if cls.__name__ in _PEP249:
            return cls.__name__
    return None


def _by_code(exc: BaseException) -> Failure | None:
    for err in (exc, exc.__cause__):
        if err is None:
            continue
        code = err.args[0] if err.args else None
        if isinstance(code, int) and not isinstance(code, bool):
            return _mysql(code)
        state = getattr(err, "sqlstate", None) or getattr(err, "pgcode", None)
        if isinstance(state, str) and state:
            return _postgresql(state)
        if type(err).__module__ == "sqlite3":
            return _sqlite(str(err).lower())
    return None


def _mysql(code: int) -> Failure | None:
    if code in _MYSQL_MISSING:
        return "missing_tables"
    if code in _MYSQL_LOCK:
        return "lock"
    if code in _MYSQL_OUTAGE:
        return "outage"
    return None


def _postgresql(state: str) -> Failure | None:
    if state in _PG_MISSING:
        return "missing_tables"
    if state in _PG_LOCK:
        return "lock"
    if state.startswith(_PG_OUTAGE_PREFIXES):
        return "outage"
    if state.startswith(_PG_REFUSED_PREFIXES):
        return "refused"
    return None


def _sqlite(message: str) -> Failure | None:
    if any(text in message for text in _SQLITE_MISSING):
        return "missing_tables"
    if any(text in message for text in _SQLITE_LOCK):
        return "lock"
    if any(text in message for text in _SQLITE_OUTAGE):
        return "outage"
    return None


class FailureLog:
    """Warns at most once per ``interval`` seconds per kind, saying how many were not logged since.
    Runs on the record writer thread (not thread-safe: one writer, one log)."""

    def __init__(self, logger: logging.Logger, *, interval: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._logger = logger
        self._interval = interval
        self._clock = clock
        self._last: dict[str, float] = {}
        self._quiet: dict[str, int] = {}

    def warn(self, kind: str, message: str, *args: object) -> bool:
        """Log ``message % args`` unless ``kind`` was logged less than ``interval`` ago; ``True``
        when it was logged."""
        now = self._clock()
        last = self._last.get(kind)
        if last is not None and now - last < self._interval:
            self._quiet[kind] = self._quiet.get(kind, 0) + 1
            return False
        self._last[kind] = now
        quiet = self._quiet.pop(kind, 0)
        if quiet:
            message += " (%d more like it in the last %.0f s)"
            args = (*args, quiet, self._interval)
        self._logger.warning(message, *args)
        return True
