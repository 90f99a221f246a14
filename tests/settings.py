"""Settings for the test suite.

The database is real MariaDB/MySQL over PyMySQL when it answers on 127.0.0.1:3306 (always in CI,
where E2E_OTEL_REQUIRE_MYSQL=1 turns "unreachable" into an error), else SQLite so the rest of the
suite still runs on a laptop; tests marked ``mysql`` then skip with the reason.
"""

from __future__ import annotations

import os

import pymysql

pymysql.install_as_MySQLdb()

MYSQL = {
    "HOST": os.environ.get("E2E_MYSQL_HOST", "127.0.0.1"),
    "PORT": int(os.environ.get("E2E_MYSQL_PORT", "3306")),
    "USER": os.environ.get("E2E_MYSQL_USER", "root"),
    "PASSWORD": os.environ.get("E2E_MYSQL_PASSWORD", ""),
    "NAME": os.environ.get("E2E_MYSQL_DATABASE", "test"),
}


def _mysql_reachable() -> str | None:
    """None when MySQL answers, else the reason it doesn't."""
    try:
        conn = pymysql.connect(host=MYSQL["HOST"], port=MYSQL["PORT"], user=MYSQL["USER"],
                               password=MYSQL["PASSWORD"], connect_timeout=2)
    except Exception as exc:
        return f"MySQL at {MYSQL['HOST']}:{MYSQL['PORT']} unreachable: {exc}"
    conn.close()
    return None


_choice = os.environ.get("E2E_TEST_DB", "auto")
MYSQL_UNAVAILABLE_REASON = _mysql_reachable() if _choice != "sqlite" else "E2E_TEST_DB=sqlite"
# An explicit E2E_TEST_DB=sqlite (subprocess servers of SQLite-only tests) is a choice, not a skip.
if MYSQL_UNAVAILABLE_REASON and _choice != "sqlite" and os.environ.get("E2E_OTEL_REQUIRE_MYSQL") == "1":
    raise RuntimeError(f"E2E_OTEL_REQUIRE_MYSQL=1 but {MYSQL_UNAVAILABLE_REASON}")

if MYSQL_UNAVAILABLE_REASON is None:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.mysql",
            **MYSQL,
            "OPTIONS": {"charset": "utf8mb4"},
            "TEST": {"NAME": os.environ.get("E2E_MYSQL_TEST_DATABASE", "test_e2e_otel"),
                     "CHARSET": "utf8mb4", "COLLATION": "utf8mb4_unicode_ci"},
        }
    }
else:
    DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}

# A MySQL alias nothing listens on, for record-writer outage tests (tests/test_store.py,
# tests/test_records_e2e.py). Tests that let the writer thread use it list it in `databases`; the
# TEST MIRROR stops pytest-django from creating a test database for it (a mirror only swaps the
# settings of the main thread's connection object; other threads still connect to port 1). Tests may
# point it at the real server temporarily to check recovery.
DATABASES["unreachable"] = {
    "ENGINE": "django.db.backends.mysql",
    "HOST": "127.0.0.1",
    "PORT": 1,
    "USER": "root",
    "PASSWORD": "",
    "NAME": "unreachable",
    "OPTIONS": {"charset": "utf8mb4", "connect_timeout": 1},
    "TEST": {"MIRROR": "default"},
}

SECRET_KEY = "tests-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
USE_TZ = True
TIME_ZONE = "UTC"
ROOT_URLCONF = "tests.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "tests.testapp",
    "e2e_otel",
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
        "DIRS": [],
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
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

E2E_OTEL = {
    "SERVICE_NAME": "e2e-otel-tests",
    "ENVIRONMENT": "testing",
    "API_KEY": "test-api-key",
    "INGEST_KEY": "test-ingest-key",
    "INGEST_ALLOWED_ORIGINS": ["http://localhost:3000"],
    "RECORD_FLUSH_INTERVAL": 0.05,
    "WORKFLOW_IDLE_TIMEOUT": 60,
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"null": {"class": "logging.NullHandler"}},
    "root": {"handlers": ["null"], "level": "INFO"},
}
