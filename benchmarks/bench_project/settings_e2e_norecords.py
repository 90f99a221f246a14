"""Breakdown run only: e2e-otel with metrics/thresholds on but records off."""

from __future__ import annotations

from .settings_e2e import *  # noqa: F403
from .settings_e2e import E2E_OTEL

E2E_OTEL = {**E2E_OTEL, "SERVICE_NAME": "bench-e2e-otel-norecords", "RECORDS_ENABLED": False}
