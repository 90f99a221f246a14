"""tests.settings, with django.request, django.server and tests.* records written to stderr as JSON
(correlation fields included), for the runserver log-correlation test."""

from __future__ import annotations

from tests.settings import *  # noqa: F403
from tests.settings import E2E_OTEL

E2E_OTEL = {**E2E_OTEL, "RECORDS_ENABLED": False}
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "e2e_otel.logging.JsonFormatter"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json"}},
    "loggers": {
        name: {"handlers": ["stderr"], "level": "INFO", "propagate": False}
        for name in ("django.request", "django.server", "tests")
    },
}
