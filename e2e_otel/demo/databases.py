"""DATABASES entries for the demo: ``DATABASE_URL=mysql://...`` or a SQLite file."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

from django.core.exceptions import ImproperlyConfigured

# Query options of DATABASE_URL: ``charset`` goes to the driver as is, ``ssl_*`` into PyMySQL's ``ssl`` dict.
SSL_OPTIONS = {"ssl_ca": "ca", "ssl_cert": "cert", "ssl_key": "key"}
KNOWN_OPTIONS = ("charset", *SSL_OPTIONS)


def default_sqlite_path() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "e2e-otel" / "demo.sqlite3"


def _url_options(query: str) -> dict[str, object]:
    """Driver OPTIONS from the URL's query; an unknown or repeated option is an error, not ignored."""
    options: dict[str, object] = {"charset": "utf8mb4"}
    ssl: dict[str, str] = {}
    seen: set[str] = set()
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key not in KNOWN_OPTIONS:
            raise ImproperlyConfigured(
                f"DATABASE_URL: unknown option {key!r}; known options: {', '.join(KNOWN_OPTIONS)}"
            )
        if key in seen:
            raise ImproperlyConfigured(f"DATABASE_URL: option {key!r} is given more than once")
        if not value:
            raise ImproperlyConfigured(f"DATABASE_URL: option {key!r} needs a value")
        seen.add(key)
        if key in SSL_OPTIONS:
            ssl[SSL_OPTIONS[key]] = value
        else:
            options[key] = value
    if ssl:
        options["ssl"] = ssl
    return options


def database_from_url(url: str) -> dict[str, object]:
    """``mysql://user:pass@host:port/name?charset=..&ssl_ca=..`` as a Django DATABASES entry (PyMySQL).

    Raises ImproperlyConfigured with a one-line message (never containing the password) when the URL
    is unusable.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ImproperlyConfigured(
            "DATABASE_URL: the port must be a number from 0 to 65535 (mysql://user:pass@host:PORT/db)"
        ) from None
    if parts.scheme not in ("mysql", "mariadb", "mysql+pymysql"):
        raise ImproperlyConfigured(f"DATABASE_URL: only mysql:// is supported, got scheme {parts.scheme!r}")
    name = parts.path.lstrip("/")
    if not name:
        raise ImproperlyConfigured("DATABASE_URL: the database name is missing (mysql://user:pass@host:port/NAME)")
    options = _url_options(parts.query)
    import pymysql

    pymysql.install_as_MySQLdb()
    return {
        "ENGINE": "django.db.backends.mysql",
        "NAME": unquote(name),
        "USER": unquote(parts.username or "root"),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": parts.hostname or "127.0.0.1",
        "PORT": str(port or 3306),
        "OPTIONS": options,
    }


def sqlite_database(path: Path) -> dict[str, object]:
    import django

    path.parent.mkdir(parents=True, exist_ok=True)
    return {
        # Django < 5.1 has no transaction_mode/init_command OPTIONS: sqlite_backend adds them.
        "ENGINE": "django.db.backends.sqlite3" if django.VERSION >= (5, 1) else "e2e_otel.demo.sqlite_backend",
        "NAME": str(path),
        # WAL + IMMEDIATE transactions: the request threads and the record writer thread write
        # concurrently; without these SQLite answers "database is locked" under the demo's load.
        "OPTIONS": {
            "timeout": 30,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        },
    }
