"""The ingestion-attack benchmark's app: configuration C (e2e-otel fully on) with browser ingestion
open to one origin; every ingestion limit at its default."""

from __future__ import annotations

import os

from .settings_e2e import *  # noqa: F403
from .settings_e2e import E2E_OTEL

ROOT_URLCONF = "bench_project.urls_ingest"
INGEST_KEY = "bench-ingest-key-not-secret"
INGEST_ORIGIN = "http://shop.bench.example"

E2E_OTEL = {
    **E2E_OTEL,
    "INGEST_KEY": INGEST_KEY,
    "INGEST_ALLOWED_ORIGINS": [INGEST_ORIGIN],
    # the driver reads e2e_otel_* counters (export drops, ingestion drops) from /metrics
    "METRICS_KEY": None,
    "TRACES_EXPORTER": os.environ.get("BENCH_TRACES_EXPORTER", "otlp"),
}
