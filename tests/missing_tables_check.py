"""Run by ``tests/test_store_reliability.py`` in a subprocess: the record writer before and after
``migrate e2e_otel``, on a fresh database of one backend (``mysql``, ``sqlite`` or ``postgresql``).

Own settings, because the suite's test databases are already migrated and pytest-django refuses
connections to aliases a test did not declare. Prints one JSON line; exit code 0 when all is well.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import django
from django.conf import settings

VENDOR = sys.argv[1] if len(sys.argv) > 1 else "sqlite"
DB_NAME = sys.argv[2] if len(sys.argv) > 2 else "e2e_otel_missing_tables"
PG_DSN = os.environ.get("E2E_POSTGRES_DSN", "host=127.0.0.1 port=5432 user=postgres dbname=postgres")


def _database(tmp: Path) -> tuple[dict[str, Any], Callable[[], None]]:
    """Settings of a fresh, empty database and the function that removes it."""
    if VENDOR == "sqlite":
        return {"ENGINE": "django.db.backends.sqlite3", "NAME": str(tmp / "bare.db")}, lambda: None
    if VENDOR == "mysql":
        import pymysql

        pymysql.install_as_MySQLdb()
        server = {"host": os.environ.get("E2E_MYSQL_HOST", "127.0.0.1"),
                  "port": int(os.environ.get("E2E_MYSQL_PORT", "3306")),
                  "user": os.environ.get("E2E_MYSQL_USER", "root"),
                  "password": os.environ.get("E2E_MYSQL_PASSWORD", "")}

        def admin(sql: str) -> None:
            conn = pymysql.connect(**server)
            try:
                conn.cursor().execute(sql)
            finally:
                conn.close()

        admin(f"DROP DATABASE IF EXISTS `{DB_NAME}`")
        admin(f"CREATE DATABASE `{DB_NAME}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
        return ({"ENGINE": "django.db.backends.mysql", "NAME": DB_NAME, "HOST": server["host"],
                 "PORT": server["port"], "USER": server["user"], "PASSWORD": server["password"],
                 "OPTIONS": {"charset": "utf8mb4"}}, lambda: admin(f"DROP DATABASE IF EXISTS `{DB_NAME}`"))
    import psycopg

    def pg(sql: str) -> None:
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(sql)

    pg(f'DROP DATABASE IF EXISTS "{DB_NAME}"')
    pg(f'CREATE DATABASE "{DB_NAME}"')
    params = psycopg.conninfo.conninfo_to_dict(PG_DSN)
    return ({"ENGINE": "django.db.backends.postgresql", "NAME": DB_NAME, "HOST": params.get("host", "127.0.0.1"),
             "PORT": params.get("port", "5432"), "USER": params.get("user", "postgres"),
             "PASSWORD": params.get("password", "")}, lambda: pg(f'DROP DATABASE IF EXISTS "{DB_NAME}"'))


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        database, drop = _database(Path(tmp))
        try:
            settings.configure(DATABASES={"default": database}, INSTALLED_APPS=["e2e_otel"], USE_TZ=True,
                               SECRET_KEY="check", DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
                               E2E_OTEL={"ENABLED": False})
            django.setup()
            return check()
        finally:
            from django.db import connections

            connections.close_all()
            drop()


def check() -> int:
    from django.core.management import call_command

    from e2e_otel.models import TraceStep
    from e2e_otel.sanitize import Sanitizer
    from e2e_otel.store import RecordWriter
    from tests.test_store import config, make_step

    log = _Lines()
    logging.getLogger("e2e_otel").addHandler(log)
    writer = RecordWriter(config(), Sanitizer(), start=False)
    per_trace: list[int] = []
    original = writer._write_trace

    def write_trace(trace_id: int, group: Any) -> Any:
        per_trace.append(trace_id)
        return original(trace_id, group)

    writer._write_trace = write_trace  # type: ignore[method-assign]
    writer.start()
    flushed = []
    try:
        for _ in range(2):  # two chunks of five traces, no tables
            for _ in range(5):
                writer.submit(make_step())
            flushed.append(writer.force_flush(10))
        before = writer.stats()
        call_command("migrate", "e2e_otel", verbosity=0)
        for _ in range(3):
            writer.submit(make_step())
        flushed.append(writer.force_flush(20))
        after = writer.stats()
    finally:
        writer.shutdown(5)
    missing = [line for line in log.lines if "record tables are missing" in line]
    result = {
        "flushed": flushed, "before": before["dropped"], "after_written": after["written"],
        "after_dropped": after["dropped"], "per_trace_writes": len(per_trace), "missing_warnings": missing,
        "recovered_warning": any("record tables exist now" in line for line in log.lines),
        "rows": TraceStep.objects.count(), "last_error": before["last_error"],
    }
    print(json.dumps(result, default=str))
    ok = (flushed == [True, True, True] and before["dropped"]["missing_tables"] == 10
          and not any(n for reason, n in before["dropped"].items() if reason != "missing_tables")
          and per_trace == [] and len(missing) == 1 and "manage.py migrate e2e_otel" in missing[0]
          and result["recovered_warning"] and after["written"]["step"] == result["rows"] == 3
          and after["dropped"]["missing_tables"] == 10)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
