"""DATABASES entries for the demo: ``DATABASE_URL=mysql://...`` or a SQLite file."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote, urlsplit

from django.core.exceptions import ImproperlyConfigured


def default_sqlite_path() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "e2e-otel" / "demo.sqlite3"


def database_from_url(url: str) -> dict[str, object]:
    """``mysql://user:pass@host:port/name`` as a Django DATABASES entry (PyMySQL as MySQLdb)."""
    parts = urlsplit(url)
    if parts.scheme not in ("mysql", "mariadb", "mysql+pymysql"):
        raise ImproperlyConfigured(f"DATABASE_URL: only mysql:// is supported, got scheme {parts.scheme!r}")
    name = parts.path.lstrip("/")
    if not name:
        raise ImproperlyConfigured("DATABASE_URL: the database name is missing (mysql://user:pass@host:port/NAME)")
    import pymysql

    pymysql.install_as_MySQLdb()
    return {
        "ENGINE": "django.db.backends.mysql",
        "NAME": unquote(name),
        "USER": unquote(parts.username or "root"),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": parts.hostname or "127.0.0.1",
        "PORT": str(parts.port or 3306),
        "OPTIONS": {"charset": "utf8mb4"},
    }


def sqlite_database(path: Path) -> dict[str, object]:
    path.parent.mkdir(parents=True, exist_ok=True)
    return {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": str(path),
        # WAL + IMMEDIATE transactions: the request threads and the record writer thread write
        # concurrently; without these SQLite answers "database is locked" under the demo's load.
        "OPTIONS": {
            "timeout": 30,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        },
    }
