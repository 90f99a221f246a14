"""Django settings for the demo shop (``DJANGO_SETTINGS_MODULE=e2e_otel.demo.settings``).

Everything variable comes from the environment, which ``e2e-otel demo`` fills from its options
before ``django.setup()``:

- ``DATABASE_URL=mysql://user:pass@host:port/db`` selects MySQL/MariaDB (PyMySQL); otherwise SQLite at
  ``E2E_DEMO_DB`` (the CLI sets it to ``--db`` or to a new file per run; without the CLI,
  ``~/.cache/e2e-otel/demo.sqlite3``).
- ``E2E_DEMO_FAULTS``: which faults the shop injects (see ``shop/faults.py``).
- Traces leave the process only when ``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``E2E_OTEL_OTLP_ENDPOINT``
  is set; otherwise the exporter is ``none`` and everything stays in the local records.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from .databases import database_from_url, default_sqlite_path, sqlite_database

BASE_DIR = Path(__file__).resolve().parent

_database_url = os.environ.get("DATABASE_URL", "").strip()
DATABASES = {
    "default": database_from_url(_database_url) if _database_url
    else sqlite_database(Path(os.environ.get("E2E_DEMO_DB") or default_sqlite_path()))
}

# A fresh key per process: the demo keeps no sessions worth preserving across restarts.
SECRET_KEY = os.environ.get("E2E_DEMO_SECRET_KEY") or secrets.token_urlsafe(50)
DEBUG = False
# A wildcard listen address serves whatever name or address clients use to reach this machine, so
# every Host is allowed then (``e2e-otel demo`` warns that the shop is reachable from elsewhere).
WILDCARD_HOSTS = ("0.0.0.0", "::", "[::]")


def allowed_hosts(host: str) -> list[str]:
    if host in WILDCARD_HOSTS:
        return ["*"]
    return sorted({"127.0.0.1", "localhost", "[::1]", f"[{host}]" if ":" in host else host})


ALLOWED_HOSTS = allowed_hosts(os.environ.get("E2E_DEMO_HOST", "127.0.0.1"))
USE_TZ = True
TIME_ZONE = "UTC"
ROOT_URLCONF = "e2e_otel.demo.urls"
WSGI_APPLICATION = "e2e_otel.demo.wsgi.application"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "e2e_otel.demo.shop",
    "e2e_otel",  # the settings hook
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],  # the landing page
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

STATIC_URL = "/static/"

# Demo-only: a cheaper PBKDF2 so a login costs ~0.1 s instead of ~1 s on a small machine; the
# passwords are random per run and the server listens on 127.0.0.1 by default.
PASSWORD_HASHERS = ["e2e_otel.demo.shop.hashers.DemoPBKDF2PasswordHasher"]

REST_FRAMEWORK = {
    # Token first: a request carrying a token is not held to the session's CSRF check.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.AllowAny"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
}

DEMO_FAULTS = os.environ.get("E2E_DEMO_FAULTS", "all")

_otlp_endpoint = os.environ.get("E2E_OTEL_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")

# The four seed workflows, by route: baggage (e2e.workflow) and e2e_otel.workflow() name them too.
E2E_OTEL: dict[str, object] = {
    "SERVICE_NAME": os.environ.get("OTEL_SERVICE_NAME") or "e2e-otel-demo-shop",
    "ENVIRONMENT": "development",
    "API_KEY": os.environ.get("E2E_OTEL_API_KEY") or secrets.token_urlsafe(24),
    "INGEST_KEY": os.environ.get("E2E_OTEL_INGEST_KEY") or secrets.token_urlsafe(24),
    # the traffic driver is one client posting every workflow
    "INGEST_RATE_LIMIT": 100_000,
    "INGEST_RATE_BURST": 1000,
    "INGEST_NEW_TRACES_PER_MINUTE": 100_000,
    "RECORD_FLUSH_INTERVAL": 0.2,
    "WORKFLOW_IDLE_TIMEOUT": 30,
    "TRACE_URL_TEMPLATE": "http://localhost:16686/trace/{trace_id}",
    "WORKFLOWS": {
        "login": ["POST /api/shop/auth/login/*", "POST /api/shop/auth/token/*"],
        "product_fetch": ["GET /api/shop/products/*", "GET /api/shop/categories/*"],
        "cart_update": ["POST /api/shop/cart/items/*", "DELETE /api/shop/cart/items/*"],
        "checkout": ["POST /api/shop/checkout/*"],
    },
}
if _otlp_endpoint:
    if os.environ.get("E2E_OTEL_OTLP_ENDPOINT"):
        E2E_OTEL["OTLP_ENDPOINT"] = os.environ["E2E_OTEL_OTLP_ENDPOINT"]
else:
    E2E_OTEL["TRACES_EXPORTER"] = "none"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {
        "stderr": {"class": "logging.StreamHandler", "level": "WARNING"},
        "null": {"class": "logging.NullHandler"},
    },
    "loggers": {
        # Request lines and the demo's deliberate 4xx/5xx would drown the summary.
        "django.server": {"handlers": ["null"], "propagate": False},
        "django.request": {"handlers": ["null"], "propagate": False},
    },
    "root": {"handlers": ["stderr"], "level": "WARNING"},
}
