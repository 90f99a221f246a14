"""tests.settings, but exporting over OTLP (development profile) for subprocess tests.

The receiver's endpoint and protocol come from the standard ``OTEL_EXPORTER_OTLP_*`` variables;
``E2E_MYSQL_DATABASE`` points the subprocess at the test database pytest-django created;
``E2E_TEST_OTEL_OVERRIDES`` (JSON) adds ``E2E_OTEL`` keys for one test.
"""

from __future__ import annotations

import json
import os

from tests.settings import *
from tests.settings import DATABASES, E2E_OTEL

E2E_OTEL = {
    **E2E_OTEL,
    "ENVIRONMENT": "development",
    "TRACES_EXPORTER": "otlp",
    "SERVICE_NAME": os.environ.get("E2E_SERVICE_NAME", "e2e-export-tests"),
    **json.loads(os.environ.get("E2E_TEST_OTEL_OVERRIDES", "{}")),
}
if "E2E_MYSQL_DATABASE" in os.environ and DATABASES["default"]["ENGINE"].endswith("mysql"):
    DATABASES["default"]["NAME"] = os.environ["E2E_MYSQL_DATABASE"]
