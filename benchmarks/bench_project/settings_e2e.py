"""(C) e2e-otel fully on: development profile, OTLP/gRPC export to the sidecar receiver, records,
thresholds and metrics enabled, every trace sampled."""

from __future__ import annotations

from .settings_base import *  # noqa: F403
from .settings_base import INSTALLED_APPS, OTLP_ENDPOINT

INSTALLED_APPS = [*INSTALLED_APPS, "e2e_otel"]

E2E_OTEL = {
    "ENVIRONMENT": "development",
    "SERVICE_NAME": "bench-e2e-otel",
    "TRACES_EXPORTER": "otlp",
    "OTLP_PROTOCOL": "grpc",
    "OTLP_ENDPOINT": OTLP_ENDPOINT,
    "SAMPLE_RATE": 1.0,
    "RECORDS_ENABLED": True,
    "METRICS_ENABLED": True,
    "WORKFLOWS": {"bench_one": ["GET /one/*"], "bench_heavy": ["GET /heavy/*"]},
}
