"""(B) stock OpenTelemetry. Django settings are the plain ones; ``stock_otel.install()`` (called by
the worker before the WSGI handler is built) adds the SDK, the Django + PyMySQL instrumentors and a
BatchSpanProcessor with the OTLP/gRPC exporter, the way the upstream docs set it up."""

from __future__ import annotations

from .settings_base import *  # noqa: F403
