"""tests.settings with the records on a second alias (``DATABASE_ALIAS = "records"``), both SQLite
files named by ``E2E_DEFAULT_DB`` and ``E2E_RECORDS_DB`` (tests/test_routers.py, subprocesses)."""

from __future__ import annotations

import os

from tests.settings import *
from tests.settings import E2E_OTEL

DATABASES = {
    "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": os.environ["E2E_DEFAULT_DB"]},
    "records": {"ENGINE": "django.db.backends.sqlite3", "NAME": os.environ["E2E_RECORDS_DB"]},
}
E2E_OTEL = {**E2E_OTEL, "DATABASE_ALIAS": "records"}
