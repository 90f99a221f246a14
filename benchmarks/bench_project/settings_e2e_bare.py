"""Breakdown run only: e2e-otel with records and metrics/thresholds off (sampler, id generator,
correlation middleware, sanitising exporter and query analysis remain)."""

from __future__ import annotations

from .settings_e2e import *  # noqa: F403
from .settings_e2e import E2E_OTEL

E2E_OTEL = {**E2E_OTEL, "SERVICE_NAME": "bench-e2e-otel-bare", "RECORDS_ENABLED": False,
            "METRICS_ENABLED": False}
