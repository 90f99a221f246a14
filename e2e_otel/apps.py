"""Django app config: the only hook a user adds.

``ready()`` never lets an exception out of ``django.setup()``: e2e-otel is an observer, and a host
whose tests, migrations and server stop starting because of it is worse off than one without traces.
Each step that can fail logs one error naming what is off and the host runs on, with e2e-otel
degraded (no export) or disabled.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from django.apps import AppConfig

from .conf import Config

if TYPE_CHECKING:
    from .bootstrap import Runtime

logger = logging.getLogger(__name__)

MIDDLEWARE_PATH = "e2e_otel.correlation.CorrelationMiddleware"
OTEL_MIDDLEWARE_PATH = "opentelemetry.instrumentation.django.middleware.otel_middleware._DjangoMiddleware"

#: Commands that print the system checks themselves (the start-up log would repeat them).
COMMANDS_RUNNING_CHECKS = frozenset({"check", "runserver", "test", "migrate"})

_settings_reported = False


class E2EOtelConfig(AppConfig):
    name = "e2e_otel"
    label = "e2e_otel"
    verbose_name = "E2E workflow debugging"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Runs after settings load and before any handler builds its middleware chain, under
        # runserver, gunicorn and plain WSGI/ASGI alike, once per process (main thread).
        try:
            from . import checks  # noqa: F401  (registers the system checks)
            from .conf import connect_signals

            connect_signals()
        except Exception:
            logger.exception("e2e-otel: its system checks could not be registered")
        try:
            start(sys.argv)
        except Exception:
            logger.exception("e2e-otel failed to start and is disabled in this process; the application "
                             "runs without it")


def start(argv: Sequence[str]) -> None:
    """Detect a test run, report bad settings, install the runtime and the middleware."""
    from django.conf import settings

    from .conf import get_config
    from .testrun import prepare

    try:
        prepare(argv, settings)
    except Exception:  # the run goes on with the profile the settings name
        logger.exception("e2e-otel: the test-run set-up failed")
    config = get_config()
    report_settings_problems(config, argv)
    try:
        from .routers import install_router

        install_router()  # the API and admin read the records where the writer writes them
    except Exception:
        logger.exception("e2e-otel: its database router could not be installed")
    if not config.is_active:
        return  # disabled: no SDK, no threads, no exporters
    from .logging import install_record_factory
    from .metrics_multiprocess import configure_for_server

    if config.METRICS_ENABLED:
        configure_for_server()  # before anything of ours imports prometheus_client
    if install_runtime(config) is None:
        return
    install_record_factory()
    _insert_middleware()


def report_settings_problems(config: Config, argv: Sequence[str]) -> None:
    """Log E001/E002 once per process at error level, in the checks' words: gunicorn and uWSGI run no
    checks, and a typo must not pass silently there. Skipped where Django prints the checks itself."""
    global _settings_reported
    from .checks import format_message, settings_messages

    if _settings_reported or (len(argv) > 1 and argv[1] in COMMANDS_RUNNING_CHECKS):
        return
    _settings_reported = True
    for message in settings_messages(config):
        logger.error("e2e-otel settings: %s", format_message(message))


def install_runtime(config: Config) -> Runtime | None:
    """``bootstrap.install`` guarded. An exporter that cannot be built (e.g. its package is missing)
    costs the export only: records and metrics still run. Any other failure leaves e2e-otel off in
    this process. Either way one error is logged."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

    from .bootstrap import build_sanitizer, install
    from .exporters import build_span_exporter

    try:
        # Built here only to find out: the exporter is lazy (its channel opens on the first export),
        # so this costs an import, and install() builds the one it uses. A provider configured before
        # Django (opentelemetry-instrument) keeps its own exporter: nothing to find out then.
        if not isinstance(trace.get_tracer_provider(), TracerProvider):
            build_span_exporter(config, build_sanitizer(config))
    except Exception as exc:
        logger.error("e2e-otel could not set up trace export (%s: %s); running without export (records and "
                     "metrics stay on)", type(exc).__name__, exc, exc_info=exc)
        config = Config({**config, "TRACES_EXPORTER": "none"}, config.errors, config.unknown, config.explicit)
    try:
        return install(config)
    except Exception as exc:
        logger.error("e2e-otel could not start (%s: %s) and is disabled in this process", type(exc).__name__,
                     exc, exc_info=exc)
        return None


def _insert_middleware() -> None:
    """Put the correlation middleware right after the OTel middleware (or first), once."""
    from django.conf import settings

    middleware = list(getattr(settings, "MIDDLEWARE", None) or [])
    if MIDDLEWARE_PATH in middleware:
        return
    position = middleware.index(OTEL_MIDDLEWARE_PATH) + 1 if OTEL_MIDDLEWARE_PATH in middleware else 0
    middleware.insert(position, MIDDLEWARE_PATH)
    settings.MIDDLEWARE = type(settings.MIDDLEWARE)(middleware) if settings.MIDDLEWARE else middleware
