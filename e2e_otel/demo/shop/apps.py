from __future__ import annotations

import threading

from django.apps import AppConfig
from django.conf import settings

_sqlite_lock = threading.Lock()
_sqlite_traced = False


class ShopConfig(AppConfig):
    name = "e2e_otel.demo.shop"
    label = "shop"
    verbose_name = "Demo shop"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        if getattr(settings, "DEMO_TRACE_SQLITE", False):
            trace_sqlite()


def trace_sqlite() -> None:
    """Trace SQLite queries with upstream OpenTelemetry's DB-API integration, as any app on SQLite
    would: e2e-otel instruments PyMySQL itself, and without database spans the demo's N+1 fault
    would be invisible in its SQLite default. Parameter values are not captured."""
    global _sqlite_traced
    import sqlite3.dbapi2

    from opentelemetry.instrumentation.dbapi import trace_integration

    with _sqlite_lock:
        if _sqlite_traced:
            return
        # Django's SQLite backend calls sqlite3.dbapi2.connect() for every new connection.
        trace_integration(sqlite3.dbapi2, "connect", "sqlite")
        _sqlite_traced = True
