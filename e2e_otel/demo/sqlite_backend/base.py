"""Django 4.2/5.0: the stock SQLite backend with Django 5.1's ``transaction_mode`` and ``init_command``.

The demo's request threads and the record writer thread write to one SQLite file at once; without
WAL and ``BEGIN IMMEDIATE`` a deferred transaction that later wants to write fails at once with
"database is locked" instead of waiting ``timeout`` seconds. Django 5.1 takes both as ``OPTIONS``;
older versions pass unknown options on to ``sqlite3.connect()``, which refuses them. On 5.1 and later
``e2e_otel.demo.databases`` uses the stock backend and this module is not imported. Runs on whichever
thread opens or uses the connection, like any Django backend.
"""

from __future__ import annotations

from typing import Any

from django.db.backends.sqlite3 import base


class DatabaseWrapper(base.DatabaseWrapper):
    """Takes ``transaction_mode`` and ``init_command`` out of the connection parameters and applies them."""

    def get_connection_params(self) -> dict[str, Any]:
        params = dict(super().get_connection_params())
        mode = params.pop("transaction_mode", None)
        self._transaction_mode = str(mode).upper() if mode else None
        self._init_commands = [c.strip() for c in str(params.pop("init_command", "")).split(";") if c.strip()]
        return params

    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        connection = super().get_new_connection(conn_params)
        for command in self._init_commands:
            connection.execute(command)
        return connection

    def _start_transaction_under_autocommit(self) -> None:
        mode = getattr(self, "_transaction_mode", None)
        if mode is None:  # Django >= 5.1 took the option itself
            super()._start_transaction_under_autocommit()  # type: ignore[misc]  # private, not in django-stubs
        else:
            self.cursor().execute(f"BEGIN {mode}")
