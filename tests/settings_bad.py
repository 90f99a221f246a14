"""tests.settings with a misspelt key and an invalid value, for the ``manage.py check`` test."""

from __future__ import annotations

from tests.settings import *
from tests.settings import E2E_OTEL

E2E_OTEL = {**E2E_OTEL, "SAMPLE_RATIO": 0.5, "OTLP_PROTOCOL": "carrier-pigeon"}
