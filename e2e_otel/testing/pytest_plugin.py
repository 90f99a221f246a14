"""Pytest fixtures for e2e-otel tests.

Use via ``pytest_plugins = ["e2e_otel.testing.pytest_plugin"]`` in a
conftest, or ``from e2e_otel.testing.pytest_plugin import otlp_receiver``
in a test module.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from e2e_otel.testing.otlp_receiver import OTLPReceiver

__all__ = ["otlp_receiver"]


@pytest.fixture
def otlp_receiver() -> Iterator[OTLPReceiver]:
    """A started :class:`OTLPReceiver`, stopped after the test."""
    receiver = OTLPReceiver()
    receiver.start()
    try:
        yield receiver
    finally:
        receiver.stop()
