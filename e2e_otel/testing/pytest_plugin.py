"""Pytest plugin for projects using e2e-otel: the testing profile on its own, records stopped before
pytest-django destroys the test databases, and the ``otlp_receiver`` fixture.

Load it as a plugin so its hooks run before pytest-django calls ``django.setup()``: it is registered
under the ``pytest11`` entry point named like the module, or pass ``-p e2e_otel.testing.pytest_plugin``
(``addopts``). Importing only the fixture (``from e2e_otel.testing.pytest_plugin import
otlp_receiver``) gives the fixture without the hooks. Disable with ``-p no:e2e_otel.testing.pytest_plugin``.

Hooks run on pytest's main thread.
"""

from __future__ import annotations

import logging
from collections.abc import Generator, Iterator
from typing import TYPE_CHECKING, Any

import pytest

from e2e_otel.conf import is_test_run, mark_test_run

if TYPE_CHECKING:  # grpc is imported only when the fixture is used: a plugin that fails to import
    from e2e_otel.testing.otlp_receiver import OTLPReceiver  # would break every pytest run

__all__ = ["otlp_receiver"]

logger = logging.getLogger(__name__)


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config) -> None:
    # pytest-django calls django.setup() in its own implementation of this hook (not tryfirst), so
    # this runs first and AppConfig.ready() already sees a test run.
    mark_test_run()


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    if is_test_run():
        return
    mark_test_run()  # loaded late (a conftest's pytest_plugins): only the teardown ordering applies
    from e2e_otel.bootstrap import get_runtime
    from e2e_otel.conf import get_config

    runtime = get_runtime()
    if runtime is not None and runtime.config.ENVIRONMENT != get_config().ENVIRONMENT:
        logger.warning("e2e-otel: the pytest plugin was loaded after django.setup(), so the testing profile "
                       "could not apply; load it with -p e2e_otel.testing.pytest_plugin")


def pytest_sessionstart(session: pytest.Session) -> None:
    # After every pytest_configure (pytest-django may set Django up in its own): no test database
    # exists yet, so nothing may be recorded.
    from e2e_otel.testrun import hold_records

    hold_records()


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(fixturedef: pytest.FixtureDef[Any], request: pytest.FixtureRequest) -> Generator[Any]:
    """Record once ``django_db_setup`` (pytest-django's, or a project's override of it) has made the
    test databases, and stop e2e-otel's runtime right before it tears them down.

    A fixture's teardown is a finalizer of its definition, and finalizers run last-in first-out, so
    one added after the fixture has been set up runs before the databases are destroyed. A session
    fixture depending on ``django_db_setup`` would do the same but would create the test databases in
    runs that need none.
    """
    result = yield
    if fixturedef.argname == "django_db_setup":
        from e2e_otel.testrun import release_records, stop_runtime

        release_records()
        request.addfinalizer(stop_runtime)
    return result


@pytest.fixture
def otlp_receiver() -> Iterator[OTLPReceiver]:
    """A started :class:`OTLPReceiver`, stopped after the test."""
    from e2e_otel.testing.otlp_receiver import OTLPReceiver

    receiver = OTLPReceiver()
    receiver.start()
    try:
        yield receiver
    finally:
        receiver.stop()
