"""Like (C), for a worker that imports a patched copy of e2e_otel (``overhead.py --patched DIR``),
so a proposed hot-path change is measured interleaved with the current code in one run."""

from __future__ import annotations

from .settings_e2e import *  # noqa: F403
from .settings_e2e import E2E_OTEL

E2E_OTEL = {**E2E_OTEL, "SERVICE_NAME": "bench-e2e-otel-patched"}
