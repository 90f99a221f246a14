"""Shared settings of every benchmark configuration (plain Django; no tracing).

The per-configuration modules import this and add only what that configuration needs, so the
application, middleware and database work are identical across configurations.
"""

from __future__ import annotations

import os

import pymysql

pymysql.install_as_MySQLdb()

DB_NAME = os.environ.get("BENCH_DB_NAME", "e2e_otel_bench")
DB_HOST = os.environ.get("BENCH_DB_HOST", "127.0.0.1")
DB_PORT = int(os.environ.get("BENCH_DB_PORT", "3306"))
#: The sidecar's OTLP/gRPC receiver (``http://127.0.0.1:PORT``), set by ``overhead.py``.
OTLP_ENDPOINT = os.environ.get("BENCH_OTLP_ENDPOINT", "http://127.0.0.1:4317")

SECRET_KEY = "benchmark-only-not-secret"
DEBUG = False  # DEBUG=True would keep every SQL string in connection.queries
ALLOWED_HOSTS = ["*"]
USE_TZ = True
TIME_ZONE = "UTC"
ROOT_URLCONF = "bench_project.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.mysql",
        "NAME": DB_NAME,
        "HOST": DB_HOST,
        "PORT": DB_PORT,
        "USER": os.environ.get("BENCH_DB_USER", "root"),
        "PASSWORD": os.environ.get("BENCH_DB_PASSWORD", ""),
        "OPTIONS": {"charset": "utf8mb4"},
        # Persistent connection: per-request reconnects would add ~1 ms of identical noise to
        # every configuration and hide the tracing overhead we want to see.
        "CONN_MAX_AGE": None,
    }
}

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "bench_project.shop",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["stderr"], "level": "WARNING"},
}
