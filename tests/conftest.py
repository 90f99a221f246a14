from __future__ import annotations

import os

import pytest
from django.conf import settings

from e2e_otel.testing.pytest_plugin import otlp_receiver  # noqa: F401  (fixture)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = getattr(settings, "MYSQL_UNAVAILABLE_REASON", None)
    if reason is None:
        return
    # (With E2E_OTEL_REQUIRE_MYSQL=1, tests/settings.py already refused to load: CI can't skip these.)
    for item in items:
        if item.get_closest_marker("mysql"):
            item.add_marker(pytest.mark.skip(reason=f"needs MariaDB: {reason}"))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    """With E2E_OTEL_NO_SKIPS=1 (CI) a skip is a failure: every real component must be there."""
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("E2E_OTEL_NO_SKIPS") == "1" and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped, but E2E_OTEL_NO_SKIPS=1 forbids skips: {report.longrepr}"


def _is_transactional(item: pytest.Item) -> bool:
    marker = item.get_closest_marker("django_db")
    if marker is None:
        return False
    return bool(marker.kwargs.get("transaction") or (marker.args and marker.args[0]))


@pytest.fixture(autouse=True)
def _records_only_in_transactional_tests(request: pytest.FixtureRequest):
    """The live record writer commits on its own connection. In a test wrapped in a transaction it
    would wait on the test's row locks and its rows would outlive the rollback; without django_db it
    may not touch the database at all. So it is attached only to transactional tests."""
    from e2e_otel.bootstrap import get_runtime
    from e2e_otel.processors import WorkflowSpanProcessor
    from e2e_otel.queries import QueryAnalyzer

    runtime = get_runtime()
    if runtime is None or _is_transactional(request.node):
        yield
        return
    # query findings are records too: the writer thread stores them
    detached = [p for p in runtime.derived.processors if isinstance(p, (WorkflowSpanProcessor, QueryAnalyzer))]
    runtime.derived.queue.flush(5)  # spans an earlier test ended still reach its writer
    for processor in detached:
        runtime.derived.remove(processor)
        processor.force_flush(5_000)  # an earlier test's steps must not land inside this one
    try:
        yield
    finally:
        runtime.derived.queue.flush(5)  # this test's spans are derived while the writer is detached
        for processor in detached:
            runtime.derived.add(processor)


@pytest.fixture
def spans():
    """Spans ended by the live runtime during the test (an InMemorySpanExporter)."""
    from e2e_otel.testing.spans import capture_spans

    with capture_spans() as exporter:
        yield exporter
