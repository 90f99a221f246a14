"""``WorkflowSpanProcessor``: every ended span becomes a step in the record queue.

Runs on whichever thread starts or ends a span (request threads, the ingestion view). Both hooks do
O(1) work: ``on_start`` copies one baggage entry into an attribute, ``on_end`` reduces the span to a
``StepData`` and hands it to the ``RecordWriter`` without blocking. Sanitising and all database work
happen on the writer thread.

Unsampled spans (kept only locally by the record-only sampler) are held per trace until the trace's
local root ends; the trace is then recorded only if a span errored or the root was slower than
``SLOW_SPAN_MS``. The hold is bounded in traces and spans per trace; overflow is counted as
``unsampled_overflow``.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from opentelemetry import baggage, trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

from .conf import Config
from .spans_to_records import ATTR_INTERNAL, ATTR_WORKFLOW_BAGGAGE, BAGGAGE_WORKFLOW, StepData, step_from_span
from .store import RecordWriter

if TYPE_CHECKING:
    from .bootstrap import Runtime

logger = logging.getLogger(__name__)

__all__ = ["WorkflowSpanProcessor", "build_record_processor"]

MAX_HELD_TRACES = 1000
MAX_HELD_SPANS_PER_TRACE = 256


class WorkflowSpanProcessor(SpanProcessor):
    """Span → step → bounded queue. Hooks run on span-starting/ending threads and never block
    on I/O; the short lock guards only the unsampled hold (dict operations)."""

    def __init__(self, writer: RecordWriter, *, slow_span_ms: float,
                 max_held_traces: int = MAX_HELD_TRACES,
                 max_held_spans: int = MAX_HELD_SPANS_PER_TRACE) -> None:
        if max_held_traces < 1 or max_held_spans < 1:
            raise ValueError(f"hold bounds must be positive, got {max_held_traces!r}, {max_held_spans!r}")
        self.writer = writer
        self._slow_ns = int(slow_span_ms * 1_000_000)
        self._max_traces = max_held_traces
        self._max_spans = max_held_spans
        self._held: OrderedDict[int, list[StepData]] = OrderedDict()
        self._lock = threading.Lock()
        ref = weakref.ref(self)

        def after_fork() -> None:
            processor = ref()
            if processor is not None:
                processor._reset_after_fork()

        os.register_at_fork(after_in_child=after_fork)

    def _reset_after_fork(self) -> None:
        # Another thread may have held the lock at fork time; the child starts with a fresh hold.
        self._held = OrderedDict()
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, config: Config, writer: RecordWriter) -> WorkflowSpanProcessor:
        return cls(writer, slow_span_ms=float(config.SLOW_SPAN_MS))

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        # Baggage lives in the context, not on the span; copy the workflow name so on_end sees it.
        value = baggage.get_baggage(BAGGAGE_WORKFLOW, parent_context)
        if value:
            span.set_attribute(ATTR_WORKFLOW_BAGGAGE, str(value)[:100])
        # e2e-otel's own views mark their server span internal; their queries inherit the mark so
        # the whole trace stays out of the workflow records.
        parent_attributes = getattr(trace.get_current_span(parent_context), "attributes", None)
        if parent_attributes and ATTR_INTERNAL in parent_attributes:
            span.set_attribute(ATTR_INTERNAL, parent_attributes[ATTR_INTERNAL])

    def on_end(self, span: ReadableSpan) -> None:
        step = step_from_span(span)
        if step is None or _is_stray_query(step):
            return
        if step.sampled:
            self.writer.submit(step)
            return
        self._hold(step)

    def _hold(self, step: StepData) -> None:
        release: list[StepData] | None = None
        with self._lock:
            held = self._held.get(step.trace_id)
            if held is None:
                if len(self._held) >= self._max_traces:
                    _, evicted = self._held.popitem(last=False)
                    self.writer.count_drop("unsampled_overflow", len(evicted))
                held = self._held[step.trace_id] = []
            if len(held) < self._max_spans:
                held.append(step)
            else:
                self.writer.count_drop("unsampled_overflow")
            if step.is_local_root:
                del self._held[step.trace_id]
                release = held
        if release is None:
            return
        # Errors and slow requests of unsampled traces are what the record store must keep.
        if step.end_ns - step.start_ns > self._slow_ns or any(s.status == "error" for s in release):
            for held_step in release:
                self.writer.submit(held_step)

    def stats(self) -> dict[str, Any]:
        """The writer's counters (see ``RecordWriter.stats``) plus ``held_traces``."""
        stats = self.writer.stats()
        with self._lock:
            stats["held_traces"] = len(self._held)
        return stats

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.writer.force_flush(timeout_millis / 1000)

    def shutdown(self) -> None:
        self.writer.shutdown()


def _is_stray_query(step: StepData) -> bool:
    """A database/cache span that is a whole trace by itself (startup code, ``migrate``, a shell):
    not part of any workflow, and recording it would write sessions for the writer's own tables
    while they are being created."""
    return (not step.parent_span_id and step.layer in ("database", "cache")
            and step.hints.explicit_type is None and step.hints.baggage_type is None)


def build_record_processor(runtime: Runtime) -> WorkflowSpanProcessor | None:
    """``PROCESSOR_FACTORIES`` entry: the record processor, or ``None`` when RECORDS_ENABLED is off."""
    config = runtime.config
    if not config.RECORDS_ENABLED:
        return None
    writer = RecordWriter(config, runtime.sanitizer)
    return WorkflowSpanProcessor.from_config(config, writer)
