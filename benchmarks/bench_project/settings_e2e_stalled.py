"""(C') like (C), but the record writer's database alias goes through the sidecar's stalling TCP
proxy: every packet to and from MariaDB is held back, so each write takes hundreds of ms. If the
request path ever waited for a record write, this configuration's latency would show it."""

from __future__ import annotations

import os

from .settings_e2e import *  # noqa: F403
from .settings_e2e import DATABASES, E2E_OTEL

DATABASES = {
    **DATABASES,
    "records": {**DATABASES["default"], "HOST": "127.0.0.1",
                "PORT": int(os.environ.get("BENCH_RECORDS_PROXY_PORT", "3307"))},
}
E2E_OTEL = {**E2E_OTEL, "SERVICE_NAME": "bench-e2e-otel-stalled", "DATABASE_ALIAS": "records"}
