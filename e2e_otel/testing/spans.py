"""Capture the spans of the live runtime in tests (``with capture_spans() as exporter: ...``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from ..bootstrap import get_runtime


@contextmanager
def capture_spans() -> Iterator[InMemorySpanExporter]:
    """Attach an in-memory exporter to the installed runtime for the duration of the block. It is
    called inline, on the thread that ends each span, so spans are there as soon as they end."""
    runtime = get_runtime()
    if runtime is None:
        raise RuntimeError("e2e-otel is not installed in this process (is it in INSTALLED_APPS and enabled?)")
    exporter = InMemorySpanExporter()
    processor = SimpleSpanProcessor(exporter)
    runtime.derived.add(processor, inline=True)
    try:
        yield exporter
    finally:
        runtime.derived.remove(processor)
