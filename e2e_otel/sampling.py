"""Head sampling that still lets local processors see every span.

Production samples 10 % of traces for export, but the record store must keep errors and slow
requests of the other 90 %. ``RecordOnlySampler`` turns the wrapped sampler's ``DROP`` into
``RECORD_ONLY``: the span records (our processors see it) but its sampled flag stays clear, so the
SDK's ``BatchSpanProcessor`` never exports it and downstream services see ``sampled=0``.
"""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry.context import Context
from opentelemetry.sdk.trace.sampling import (
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import Link, SpanKind
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes


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


def build_sampler(rate: float, *, record_unsampled: bool) -> Sampler:
    """Parent-based ratio sampler; with ``record_unsampled`` unsampled spans still reach processors."""
    sampler: Sampler = ParentBased(root=TraceIdRatioBased(rate))
    return RecordOnlySampler(sampler) if record_unsampled else sampler
