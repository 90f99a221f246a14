"""The span processor behind which e2e-otel's derived views sit, and whose children can change at run time.

The SDK's multi-processor only grows. Tests and ``e2e_otel.testing`` attach and detach span capture
on the live provider, and the ingestion endpoint replays browser spans into exactly our derived
processors, so we keep them behind one copy-on-write fan-out.

Two kinds of children:

- *derived* (the default: records, metrics/thresholds, query analysis): their ``on_start``, when
  they define one, runs on the span-starting thread (it may need the parent context); their
  ``on_end`` runs on the derive thread (``derive.py``), one span at a time in the order spans ended.
  The span-ending thread only queues the span: O(1), no lock.
- *inline* (``add(processor, inline=True)``: span capture in tests): both hooks on the calling thread,
  so a test sees its spans as soon as they end.
"""

from __future__ import annotations

import logging
import threading
import time

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

from .derive import DeriveQueue

logger = logging.getLogger(__name__)

__all__ = ["FanOutSpanProcessor"]


def _has_on_start(processor: SpanProcessor) -> bool:
    return type(processor).on_start is not SpanProcessor.on_start


class FanOutSpanProcessor(SpanProcessor):
    """Derived children behind a derive queue, inline children called directly.

    No child hook may break the host application: whatever a child raises is logged, never
    propagated into the request.
    """

    def __init__(self, processors: list[SpanProcessor] | None = None) -> None:
        self._derived: tuple[SpanProcessor, ...] = ()
        self._inline: tuple[SpanProcessor, ...] = ()
        self._starting: tuple[SpanProcessor, ...] = ()  # children with an on_start of their own
        self._lock = threading.Lock()
        self.queue = DeriveQueue(self._derive)
        for processor in processors or ():
            self.add(processor)

    @property
    def processors(self) -> tuple[SpanProcessor, ...]:
        """Every child, derived ones first."""
        return self._derived + self._inline

    def add(self, processor: SpanProcessor, *, inline: bool = False) -> None:
        with self._lock:
            if inline:
                self._inline = (*self._inline, processor)
            else:
                self._derived = (*self._derived, processor)
            self._update_starting()

    def remove(self, processor: SpanProcessor) -> None:
        with self._lock:
            self._derived = tuple(p for p in self._derived if p is not processor)
            self._inline = tuple(p for p in self._inline if p is not processor)
            self._update_starting()

    def _update_starting(self) -> None:
        self._starting = tuple(p for p in self.processors if _has_on_start(p))

    # --- span-starting / span-ending threads ------------------------------------------------------

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        for processor in self._starting:
            try:
                processor.on_start(span, parent_context=parent_context)
            except Exception:
                logger.exception("span processor %r failed in on_start", processor)

    def on_end(self, span: ReadableSpan) -> None:
        if self._derived:
            self.queue.put(span)
        for processor in self._inline:
            try:
                processor.on_end(span)
            except Exception:
                logger.exception("span processor %r failed in on_end", processor)

    # --- derive thread ----------------------------------------------------------------------------

    def _derive(self, span: ReadableSpan) -> None:
        for processor in self._derived:
            try:
                processor.on_end(span)
            except Exception:
                logger.exception("span processor %r failed in on_end", processor)

    # --- lifecycle --------------------------------------------------------------------------------

    def shutdown(self) -> None:
        self.queue.stop()
        for processor in self.processors:
            try:
                processor.shutdown()
            except Exception:
                logger.exception("span processor %r failed to shut down", processor)

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Derive every span that ended before the call, then flush each child (records are written)."""
        deadline = time.monotonic() + timeout_millis / 1000
        ok = self.queue.flush(timeout_millis / 1000)
        for processor in self.processors:
            remaining = max(0, int((deadline - time.monotonic()) * 1000))
            ok = processor.force_flush(remaining) and ok
        return ok

    def stats(self) -> dict[str, int]:
        """The derive queue's counters, for the metrics scrape and the health endpoint."""
        return {"queue_depth": self.queue.depth, "queue_capacity": self.queue.capacity,
                "dropped": self.queue.dropped, "handled": self.queue.handled}
