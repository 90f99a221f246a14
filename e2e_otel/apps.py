"""Django app config: the only hook a user adds."""

from __future__ import annotations

import logging

from django.apps import AppConfig

logger = logging.getLogger(__name__)

MIDDLEWARE_PATH = "e2e_otel.correlation.CorrelationMiddleware"
OTEL_MIDDLEWARE_PATH = "opentelemetry.instrumentation.django.middleware.otel_middleware._DjangoMiddleware"


class E2EOtelConfig(AppConfig):
    name = "e2e_otel"
    label = "e2e_otel"
    verbose_name = "E2E workflow debugging"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Runs after settings load and before any handler builds its middleware chain, under
        # runserver, gunicorn and plain WSGI/ASGI alike.
        from . import checks  # noqa: F401  (registers the system checks)
        from .conf import connect_signals, get_config
        from .routers import install_router

        connect_signals()
        install_router()  # the API and admin read the records where the writer writes them
        config = get_config()
        if not config.is_active:
            return  # disabled: no SDK, no threads, no exporters
        from .bootstrap import install
        from .logging import install_record_factory
        from .metrics_multiprocess import configure_for_server

        if config.METRICS_ENABLED:
            configure_for_server()  # before anything of ours imports prometheus_client
        runtime = install(config)
        if runtime is None:
            return
        install_record_factory()
        _insert_middleware()


def _insert_middleware() -> None:
    """Put the correlation middleware right after the OTel middleware (or first), once."""
    from django.conf import settings

    middleware = list(getattr(settings, "MIDDLEWARE", None) or [])
    if MIDDLEWARE_PATH in middleware:
        return
    position = middleware.index(OTEL_MIDDLEWARE_PATH) + 1 if OTEL_MIDDLEWARE_PATH in middleware else 0
    middleware.insert(position, MIDDLEWARE_PATH)
    settings.MIDDLEWARE = type(settings.MIDDLEWARE)(middleware) if settings.MIDDLEWARE else middleware
