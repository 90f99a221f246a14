"""Head sampling that still lets local processors see every span.

Production samples 10 % of traces for export, but the record store must keep errors and slow
requests of the other 90 %. Unsampled spans are then recorded (``RECORD_ONLY``) instead of dropped:
our processors see them, but their sampled flag stays clear, so the SDK's ``BatchSpanProcessor``
never exports them and downstream services see ``sampled=0``.

Samplers run on the thread that starts a span (the request thread), once per span.
"""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace.sampling import (
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import Link, SpanKind, TraceFlags
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes

_SAMPLED = TraceFlags.SAMPLED
_RECORD_AND_SAMPLE = Decision.RECORD_AND_SAMPLE
# Roots are decided on the right-most 7 bytes, the part W3C Trace Context level 2 requires to be random
# (the SDK's TraceIdRatioBased reads 8, but byte 8 holds the UUID variant bits of our generated ids).
_RANDOM_BITS = 56
_TRACE_ID_LOW_BITS = (1 << _RANDOM_BITS) - 1


class RecordOnlySampler(Sampler):
    """Wraps a sampler; what it would drop is recorded locally instead of being discarded."""

    def __init__(self, delegate: Sampler) -> None:
        self._delegate = delegate

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        result = self._delegate.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )
        if result.decision is Decision.DROP:
            return SamplingResult(Decision.RECORD_ONLY, result.attributes, result.trace_state)
        return result

    def get_description(self) -> str:
        return f"RecordOnly{{{self._delegate.get_description()}}}"


class ParentBasedRatioSampler(Sampler):
    """``ParentBased(TraceIdRatioBased(rate))``, optionally wrapped in ``RecordOnlySampler``, in one call.

    Same decisions, attributes, trace state and description as that composition, which looks the
    parent span up twice and dispatches through two samplers per span; this looks it up once.
    A valid parent's sampled flag decides (local or remote); a root samples when the trace id's low
    56 bits (its random part, see ``propagation.CorrelationIdGenerator``) fall under the ratio bound.
    """

    def __init__(self, rate: float, *, record_unsampled: bool) -> None:
        root = TraceIdRatioBased(rate)  # validates the rate
        self._bound = round(rate * (1 << _RANDOM_BITS))
        self._unsampled = Decision.RECORD_ONLY if record_unsampled else Decision.DROP
        description = ParentBased(root=root).get_description()
        self._description = f"RecordOnly{{{description}}}" if record_unsampled else description

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        parent = trace.get_current_span(parent_context).get_span_context()
        if parent is not None and parent.is_valid:
            sampled = parent.trace_flags & _SAMPLED
            state = parent.trace_state
        else:
            sampled = trace_id & _TRACE_ID_LOW_BITS < self._bound
            state = None
        if sampled:
            return SamplingResult(_RECORD_AND_SAMPLE, attributes, state)
        return SamplingResult(self._unsampled, None, state)

    def get_description(self) -> str:
        return self._description


def build_sampler(rate: float, *, record_unsampled: bool) -> Sampler:
    """Parent-based ratio sampler; with ``record_unsampled`` unsampled spans still reach processors."""
    return ParentBasedRatioSampler(rate, record_unsampled=record_unsampled)
