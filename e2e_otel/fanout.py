"""A span processor whose list of children can change at run time.

The SDK's multi-processor only grows. Tests and ``e2e_otel.testing`` attach and detach span capture
on the live provider, and the ingestion endpoint replays browser spans into exactly our derived
processors, so we keep them behind one copy-on-write fan-out.
"""

from __future__ import annotations

import logging
import threading
import time

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

logger = logging.getLogger(__name__)


class FanOutSpanProcessor(SpanProcessor):
    """Calls each child in order. Runs on whichever thread starts/ends the span.

    ``on_end`` of a child must not block or raise (SDK contract); a child that raises anyway is
    logged, never propagated into the host application's request.
    """

    def __init__(self, processors: list[SpanProcessor] | None = None) -> None:
        self._processors: tuple[SpanProcessor, ...] = tuple(processors or ())
        self._lock = threading.Lock()

    @property
    def processors(self) -> tuple[SpanProcessor, ...]:
        return self._processors

    def add(self, processor: SpanProcessor) -> None:
        with self._lock:
            self._processors = (*self._processors, processor)

    def remove(self, processor: SpanProcessor) -> None:
        with self._lock:
            self._processors = tuple(p for p in self._processors if p is not processor)

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        for processor in self._processors:
            try:
                processor.on_start(span, parent_context=parent_context)
            except Exception:  # never break the host app
                logger.exception("span processor %r failed in on_start", processor)

    def on_end(self, span: ReadableSpan) -> None:
        for processor in self._processors:
            try:
                processor.on_end(span)
            except Exception:
                logger.exception("span processor %r failed in on_end", processor)

    def shutdown(self) -> None:
        for processor in self._processors:
            try:
                processor.shutdown()
            except Exception:
                logger.exception("span processor %r failed to shut down", processor)

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        deadline = time.monotonic() + timeout_millis / 1000
        ok = True
        for processor in self._processors:
            remaining = max(0, int((deadline - time.monotonic()) * 1000))
            ok = processor.force_flush(remaining) and ok
        return ok
