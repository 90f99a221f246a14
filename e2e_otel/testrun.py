"""Host test runs: the testing profile on its own, and records stopped before the test database goes.

Under ``manage.py test`` and pytest-django e2e-otel exports nothing (the testing profile, unless the
user chose ENVIRONMENT or TRACES_EXPORTER) and writes records to the test database while it exists.
The record writer and the threshold monitor have their own connections, so they must be stopped
*before* the test database is destroyed: afterwards their connections point at a dropped database
(``1146 Table 'test_….debugging_workflow_session' doesn't exist`` at exit) or, once Django has put
the real database name back into ``settings.DATABASES``, at the developer's real database.

How each runner is told, without patching Django:

* ``manage.py test``: ``ready()`` sees ``argv[1] == "test"`` (exactly how ``ManagementUtility``
  picks the subcommand) and points ``settings.TEST_RUNNER`` at ``HostTestRunner``, a subclass of the
  configured runner whose ``teardown_databases()`` stops the runtime first. ``TEST_RUNNER`` is
  Django's own extension point, read by the test command after ``django.setup()``; signals cannot do
  this (none is sent around ``destroy_test_db``, and ``connection_created`` is not sent for SQLite
  or with ``--keepdb``). A runner given with ``--testrunner`` is not replaced: mix
  ``StopRecordsBeforeTeardown`` into it.
* pytest-django: ``e2e_otel.testing.pytest_plugin`` marks the run before pytest-django calls
  ``django.setup()``, holds the record processor back until ``django_db_setup`` has created the test
  databases (a session that needs none would otherwise write its traffic to the real database at
  exit, once pytest-django stops blocking it) and stops the runtime just before ``django_db_setup``
  tears the databases down.

Runs on the main thread, at start-up and at the end of the test run.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from .conf import is_test_run, mark_test_run

logger = logging.getLogger(__name__)

__all__ = ["StopRecordsBeforeTeardown", "hold_records", "host_test_runner", "is_manage_py_test", "prepare",
           "release_records", "stop_runtime"]

HOST_RUNNER_PATH = "e2e_otel.testrun.HostTestRunner"
_wrapped_runner_path: str | None = None


def is_manage_py_test(argv: Sequence[str]) -> bool:
    """``manage.py test`` / ``django-admin test`` / ``python -m django test``: Django's management
    utility takes ``argv[1]`` as the subcommand, so this matches exactly the runs it treats as tests."""
    return len(argv) > 1 and argv[1] == "test"


def prepare(argv: Sequence[str], settings: Any) -> bool:
    """Called from ``ready()`` before the config is read: on ``manage.py test`` mark the test run and
    wrap the test runner. Returns whether this process runs tests (including under pytest)."""
    if is_manage_py_test(argv):
        mark_test_run()
        _wrap_test_runner(argv, settings)
    return is_test_run()


def _wrap_test_runner(argv: Sequence[str], settings: Any) -> None:
    global _wrapped_runner_path
    from django.core.management.utils import get_command_line_option

    if get_command_line_option(list(argv), "--testrunner"):
        logger.info("e2e-otel: --testrunner given; add e2e_otel.testrun.StopRecordsBeforeTeardown to that "
                    "runner so records stop before the test database is destroyed")
        return
    path = settings.TEST_RUNNER
    if path == HOST_RUNNER_PATH:
        return
    _wrapped_runner_path = path
    host_test_runner.cache_clear()
    settings.TEST_RUNNER = HOST_RUNNER_PATH


def stop_runtime() -> None:
    """Flush and stop the installed runtime (record writer, monitor, exporter) within its
    SHUTDOWN_TIMEOUT; later spans are dropped quietly. Idempotent; never raises."""
    from .bootstrap import get_runtime

    runtime = get_runtime()
    if runtime is None:
        return
    try:
        runtime.shutdown()
    except Exception:  # the test run's own result matters more than our records
        logger.exception("e2e-otel: stopping the runtime before the test databases are destroyed failed")


_held_back: list[Any] = []


def hold_records() -> None:
    """Detach the record processor while no test database exists; its spans are not recorded."""
    from .bootstrap import get_runtime
    from .processors import WorkflowSpanProcessor

    runtime = get_runtime()
    if runtime is None:
        return
    for processor in runtime.derived.processors:
        if isinstance(processor, WorkflowSpanProcessor):
            runtime.derived.remove(processor)
            _held_back.append(processor)


def release_records() -> None:
    """Attach what ``hold_records`` detached: the test databases exist now."""
    from .bootstrap import get_runtime

    runtime = get_runtime()
    while _held_back:
        processor = _held_back.pop(0)
        if runtime is not None:
            runtime.derived.add(processor)


class StopRecordsBeforeTeardown:
    """Mixin for a Django test runner (``DiscoverRunner`` and subclasses): e2e-otel's runtime is
    stopped while the test databases still exist."""

    def teardown_databases(self, old_config: Any, **kwargs: Any) -> None:
        stop_runtime()
        super().teardown_databases(old_config, **kwargs)  # type: ignore[misc]


@lru_cache(maxsize=1)
def host_test_runner() -> type:
    """The configured ``TEST_RUNNER`` with ``StopRecordsBeforeTeardown`` mixed in."""
    from django.conf import settings
    from django.test.utils import get_runner

    base = get_runner(settings, _wrapped_runner_path or "django.test.runner.DiscoverRunner")
    if not hasattr(base, "teardown_databases"):
        return base  # not database-aware: nothing to stop in time for
    return type(base.__name__, (StopRecordsBeforeTeardown, base), {"__module__": base.__module__,
                                                                   "__qualname__": base.__qualname__})


def __getattr__(name: str) -> Any:
    # ``settings.TEST_RUNNER`` must be a dotted path; the class depends on the user's runner.
    if name == "HostTestRunner":
        return host_test_runner()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
