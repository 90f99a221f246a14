"""``WorkflowSpanProcessor``: every ended span becomes a step in the record queue.

Both hooks do bounded work per span without I/O. ``on_start`` runs on the thread that starts the span
(a request thread): it copies one baggage entry and the parent's internal mark onto the span, because
the context is gone by the time the span is derived. ``on_end`` runs on the derive thread
(``derive.py``): it reduces the span to a ``StepData`` (a fixed set of attribute lookups, plus frame parsing
for the rare exception event) and hands it to the ``RecordWriter`` without blocking. Sanitising and
all database work happen on the writer thread.

Unsampled spans (kept only locally by the record-only sampler) are held per trace until the trace's
local root ends; the trace is then recorded only if a span errored or the root was slower than
``SLOW_SPAN_MS``. The hold is bounded in traces, in spans per trace and in time: a trace whose root
has not ended ``HOLD_TTL`` seconds after its first held span is dropped when the next trace is held.
Everything dropped from the hold is counted as ``unsampled_overflow``. Spans that end after their
local root (post-response work, streaming) are decided at once from a small record of recently
released traces, so they do not wait in the hold.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from opentelemetry import baggage, trace
from opentelemetry import context as context_api
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

from . import forksafe
from .baggage import workflow_name_from_baggage
from .conf import Config
from .correlation import internal_requests_in_flight
from .spans_to_records import ATTR_INTERNAL, ATTR_WORKFLOW_BAGGAGE, BAGGAGE_WORKFLOW, StepData, step_from_span
from .store import RecordWriter

if TYPE_CHECKING:
    from .bootstrap import Runtime

logger = logging.getLogger(__name__)

__all__ = ["WorkflowSpanProcessor", "build_record_processor"]

MAX_HELD_TRACES = 1000
MAX_HELD_SPANS_PER_TRACE = 256
HOLD_TTL = 60.0  # seconds a trace may wait in the hold for its local root to end
MAX_RELEASED_TRACES = 128  # recently decided traces remembered for their late spans
_MAX_DECIDED_SPANS = MAX_HELD_SPANS_PER_TRACE  # span ids per decided trace: memory stays ~3 MB at worst


class _Held:
    """Unsampled steps of one trace waiting for its local root; ``since`` is ``time.monotonic()``."""

    __slots__ = ("since", "steps")

    def __init__(self, since: float) -> None:
        self.since = since
        self.steps: list[StepData] = []


class WorkflowSpanProcessor(SpanProcessor):
    """Span → step → bounded queue. Hooks run on span-starting/ending threads and never block
    on I/O; the short lock guards only the unsampled hold (dict operations and scans of at most
    ``max_held_spans`` steps)."""

    def __init__(self, writer: RecordWriter, *, slow_span_ms: float,
                 max_held_traces: int = MAX_HELD_TRACES,
                 max_held_spans: int = MAX_HELD_SPANS_PER_TRACE,
                 hold_ttl: float = HOLD_TTL,
                 max_released: int = MAX_RELEASED_TRACES) -> None:
        if max_held_traces < 1 or max_held_spans < 1 or max_released < 1 or hold_ttl <= 0:
            raise ValueError(f"hold bounds must be positive, got {max_held_traces!r}, {max_held_spans!r}, "
                             f"{max_released!r}, {hold_ttl!r}")
        self.writer = writer
        self._slow_ns = int(slow_span_ms * 1_000_000)
        self._max_traces = max_held_traces
        self._max_spans = max_held_spans
        self._ttl = hold_ttl
        self._max_released = max_released
        self._reset()
        forksafe.register(self)

    def _after_fork_in_child(self) -> None:
        # Another thread may have held the lock at fork time; the child starts with a fresh hold.
        self._reset()

    def _reset(self) -> None:
        self._held: OrderedDict[int, _Held] = OrderedDict()  # oldest first
        # trace id -> {span id: recorded?} of recently decided traces, least recently used first. Per
        # span, because requests reusing one correlation id share a trace but are decided apart.
        self._released: OrderedDict[int, dict[str, bool]] = OrderedDict()
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, config: Config, writer: RecordWriter) -> WorkflowSpanProcessor:
        return cls(writer, slow_span_ms=float(config.SLOW_SPAN_MS))

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        # Per span on the request thread: the current context is resolved once for both lookups.
        context = context_api.get_current() if parent_context is None else parent_context
        # Baggage lives in the context, not on the span; copy the workflow name so on_end sees it.
        value = workflow_name_from_baggage(baggage.get_baggage(BAGGAGE_WORKFLOW, context))
        if value:
            span.set_attribute(ATTR_WORKFLOW_BAGGAGE, value)
        # e2e-otel's own views mark their server span internal; their queries inherit the mark so
        # the whole trace stays out of the workflow records.
        if not internal_requests_in_flight():
            return
        parent_attributes = getattr(trace.get_current_span(context), "attributes", None)
        if parent_attributes:
            internal = parent_attributes.get(ATTR_INTERNAL)
            if internal is not None:
                span.set_attribute(ATTR_INTERNAL, internal)

    def on_end(self, span: ReadableSpan) -> None:
        step = step_from_span(span)
        if step is None or _is_stray_query(step):
            return
        if step.sampled:
            self.writer.submit(step)
            return
        self._hold(step)

    def _hold(self, step: StepData) -> None:
        with self._lock:
            decided = self._released.get(step.trace_id)
            if decided is not None and step.parent_span_id in decided:
                submit = self._late(step, decided)
            else:
                submit = self._add(step)
        for held_step in submit:
            self.writer.submit(held_step)

    def _late(self, step: StepData, decided: dict[str, bool]) -> list[StepData]:
        """A span of an already decided request that ended after its local root (lock held)."""
        self._released.move_to_end(step.trace_id)
        keep = decided[step.parent_span_id]
        late = [step]
        held = self._held.get(step.trace_id)
        if held is not None:  # its own descendants ended before it and were held: they go with it
            ids = {step.span_id}
            rest = []
            for candidate in reversed(held.steps):  # children end before parents: one pass suffices
                if candidate.parent_span_id in ids:
                    ids.add(candidate.span_id)
                    late.append(candidate)
                else:
                    rest.append(candidate)
            if rest:
                held.steps = rest[::-1]
            else:
                del self._held[step.trace_id]
        keep = keep or any(s.status == "error" for s in late)
        for late_step in late:
            if len(decided) < _MAX_DECIDED_SPANS:
                decided[late_step.span_id] = keep
        return late if keep else []

    def _add(self, step: StepData) -> list[StepData]:
        """Hold ``step``; when it is its trace's local root, decide the trace (lock held)."""
        held = self._held.get(step.trace_id)
        if held is None:
            now = time.monotonic()
            self._expire(now - self._ttl)
            if len(self._held) >= self._max_traces:
                _, evicted = self._held.popitem(last=False)
                self.writer.count_drop("unsampled_overflow", len(evicted.steps))
            held = self._held[step.trace_id] = _Held(now)
        if len(held.steps) < self._max_spans:
            held.steps.append(step)
        else:
            self.writer.count_drop("unsampled_overflow")
        if not step.is_local_root:
            return []
        del self._held[step.trace_id]
        # Errors and slow requests of unsampled traces are what the record store must keep.
        keep = step.end_ns - step.start_ns > self._slow_ns or any(s.status == "error" for s in held.steps)
        self._remember(step.trace_id, keep, [*(s.span_id for s in held.steps), step.span_id])
        return held.steps if keep else []

    def _expire(self, cutoff: float) -> None:
        """Drop held traces first seen before ``cutoff`` (their root ended elsewhere or never will)."""
        while self._held:
            trace_id, oldest = next(iter(self._held.items()))
            if oldest.since >= cutoff:
                return
            del self._held[trace_id]
            self.writer.count_drop("unsampled_overflow", len(oldest.steps))

    def _remember(self, trace_id: int, keep: bool, span_ids: list[str]) -> None:
        decided = self._released.get(trace_id)
        if decided is None or len(decided) + len(span_ids) > _MAX_DECIDED_SPANS:
            decided = {}
        decided.update(dict.fromkeys(span_ids, keep))
        self._released[trace_id] = decided
        self._released.move_to_end(trace_id)
        if len(self._released) > self._max_released:
            self._released.popitem(last=False)

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
