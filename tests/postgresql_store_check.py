"""Run by ``tests/test_store_postgresql.py`` in a subprocess: the record store on PostgreSQL.

Own settings (the suite's database is MariaDB), a throw-away database created and dropped here.
Writes one trace's steps through the record writer twice (a new session, then the same session
again), another trace through the per-trace fallback (the ORM's ``bulk_create``), and checks what
PostgreSQL gives back. Prints one JSON line; exit code 0 when all is well.
"""

from __future__ import annotations

import json
import os
import sys
import uuid

import django
import psycopg
from django.conf import settings

ADMIN_DSN = os.environ.get("E2E_POSTGRES_DSN", "host=127.0.0.1 port=5432 user=postgres dbname=postgres")
DB_NAME = sys.argv[1] if len(sys.argv) > 1 else "e2e_otel_pg_check"


def main() -> int:
    with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}"')
        admin.execute(f'CREATE DATABASE "{DB_NAME}"')
    params = psycopg.conninfo.conninfo_to_dict(ADMIN_DSN)
    try:
        settings.configure(
            DATABASES={"default": {"ENGINE": "django.db.backends.postgresql", "NAME": DB_NAME,
                                   "HOST": params.get("host", "127.0.0.1"), "PORT": params.get("port", "5432"),
                                   "USER": params.get("user", "postgres"), "PASSWORD": params.get("password", "")}},
            INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth", "e2e_otel"],
            USE_TZ=True, SECRET_KEY="check", DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
            E2E_OTEL={"ENABLED": False},
        )
        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        return check()
    finally:
        from django.db import connections

        connections.close_all()
        with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}"')


def check() -> int:
    from e2e_otel.models import TraceStep, WorkflowSession
    from e2e_otel.sanitize import Sanitizer
    from e2e_otel.store import RecordWriter
    from tests.test_store import config, make_step

    writer = RecordWriter(config(), Sanitizer())
    trace_id = uuid.uuid4().int  # random: most are not RFC 4122 uuids
    flushed = []
    try:
        for batch in range(2):  # the second batch finds the session the first one created
            for n in range(3):
                writer.submit(make_step(trace_id, root=batch == 0 and n == 0,
                                        layer="api" if n == 0 else "database", name=f"step {batch}.{n}"))
            flushed.append(writer.force_flush(20))
    finally:
        writer.shutdown(5)
    # The per-trace fallback (refused data) inserts through the ORM's bulk_create; called here, on
    # this thread, once the writer thread has stopped.
    other_id = uuid.uuid4().int
    writer._write_trace_by_trace({other_id: [(10_000 + n, make_step(other_id, root=n == 0, name=f"other {n}"))
                                             for n in range(3)]})
    session = WorkflowSession.objects.get(correlation_id=uuid.UUID(int=trace_id))
    other_cids = sorted({step.correlation_id for step in TraceStep.objects.filter(name__startswith="other")})
    cids = sorted({step.correlation_id for step in TraceStep.objects.exclude(name__startswith="other")})
    result = {
        "flushed": flushed,
        "stats": writer.stats(),
        "session_id_type": type(session.correlation_id).__name__,
        "session_id_ok": session.correlation_id == uuid.UUID(int=trace_id),
        "step_ids_ok": cids == [uuid.UUID(int=trace_id)],
        "steps": TraceStep.objects.exclude(name__startswith="other").count(),
        "fallback_ids_ok": other_cids == [uuid.UUID(int=other_id)],
        "step_count": session.step_count,
        "lookup_ok": WorkflowSession.objects.filter(correlation_id=uuid.UUID(int=trace_id)).exists(),
    }
    print(json.dumps(result, default=str))
    checks = ("session_id_ok", "step_ids_ok", "lookup_ok", "fallback_ids_ok")
    ok = (flushed == [True, True] and all(result[name] for name in checks)
          and result["steps"] == result["step_count"] == 6 and not any(result["stats"]["dropped"].values()))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
