"""The record store on PostgreSQL: correlation ids come back as UUIDs and bulk inserts keep all 32
hex digits (see ``CorrelationIdField``). Runs ``tests/postgresql_store_check.py`` in a subprocess
with its own settings, against the PostgreSQL server on 127.0.0.1:5432 (``E2E_POSTGRES_DSN``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from e2e_otel.fields import CorrelationIdField

REPO = Path(__file__).resolve().parent.parent


def test_values_read_back_as_text_become_uuids() -> None:
    field = CorrelationIdField()
    value = uuid.uuid4()
    assert field.from_db_value(value.hex, None, None) == value
    assert field.from_db_value(value, None, None) is value
    assert field.from_db_value(None, None, None) is None


def require_postgresql() -> None:
    """Skip (a failure in CI, which forbids skips) unless psycopg and the PostgreSQL server are there."""
    psycopg = pytest.importorskip("psycopg", reason="psycopg not installed (the test extra has it)")
    dsn = os.environ.get("E2E_POSTGRES_DSN", "host=127.0.0.1 port=5432 user=postgres dbname=postgres")
    try:
        psycopg.connect(dsn, connect_timeout=3).close()
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL unreachable ({dsn}): {exc}")


def test_record_writer_round_trip_on_postgresql() -> None:
    require_postgresql()
    name = os.environ.get("E2E_MYSQL_TEST_DATABASE", "test_e2e_otel")[:40] + "_pg"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    proc = subprocess.run([sys.executable, str(REPO / "tests" / "postgresql_store_check.py"), name],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=180, check=False)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-4000:]}"
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["session_id_type"] == "UUID" and result["steps"] == 6
