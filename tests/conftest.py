from __future__ import annotations

import os

import pytest
from django.conf import settings

from e2e_otel.testing.pytest_plugin import otlp_receiver  # noqa: F401  (fixture)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = getattr(settings, "MYSQL_UNAVAILABLE_REASON", None)
    if reason is None:
        return
    required = os.environ.get("E2E_OTEL_REQUIRE_MYSQL") == "1"
    for item in items:
        if item.get_closest_marker("mysql"):
            if required:
                item.add_marker(pytest.mark.xfail(reason=reason, strict=True, run=False))
            else:
                item.add_marker(pytest.mark.skip(reason=f"needs MariaDB: {reason}"))


@pytest.fixture
def spans():
    """Spans ended by the live runtime during the test (an InMemorySpanExporter)."""
    from e2e_otel.testing.spans import capture_spans

    with capture_spans() as exporter:
        yield exporter
