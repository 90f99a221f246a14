"""N+1 and slow-query detection, derived from the database spans of each trace.

``QueryAnalyzer.on_end`` runs on e2e-otel's derive thread (``derive.py``), one span at a time. Per
database span it does a dict update keyed by the statement text as the driver saw it: ORM queries keep
their ``%s`` placeholders, so the N+1 pattern (the same statement once per row of an outer loop) shows
up as one key with a high count without any parsing on the hot path. The statements are scrubbed and
fingerprinted only when a finding is made, at the end of the trace's local root span. State is
bounded: at most ``max_traces`` open traces and ``max_shapes`` distinct statements per trace; the
oldest trace is evicted first.

Findings go to the listeners: the Prometheus counters and, when records are on, the
``FindingWriter`` (``findings_store.py``) that the record writer thread drains into the
``QueryFinding`` table, which is what the API, the reports and ``debugging_report`` read. The
analyzer's own ``recent`` ring is this process's short memory (for tests), not the source of any
shared view.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor

from .findings_store import finding_fingerprint
from .propagation import format_correlation_id
from .sanitize import ansi_quotes_for, scrub_sql, sql_operation_and_table
from .spans_to_records import ATTR_INTERNAL

if TYPE_CHECKING:
    from .bootstrap import Runtime
    from .findings_store import FindingWriter

logger = logging.getLogger(__name__)

__all__ = ["FindingData", "QueryAnalyzer", "advice_for", "build_query_analyzer"]

_STATEMENT_KEYS = ("db.statement", "db.query.text")
_MAX_STATEMENT_CHARS = 2048
#: Findings built per trace, worst (most total time) first: building one scrubs SQL, and it happens
#: on the derive thread, in the root span's ``on_end``.
MAX_FINDINGS_PER_TRACE = 5
_EMPTY: Mapping[str, Any] = {}


@dataclass(frozen=True)
class FindingData:
    """One problem found in one trace, with what to do about it (stored as ``models.QueryFinding``)."""

    kind: str  # "n_plus_one" | "slow_query"
    correlation_id: str
    route: str
    table: str
    operation: str
    statement: str  # scrubbed: literals replaced by ?
    fingerprint: str  # findings_store.finding_fingerprint: kind + statement shape + route
    count: int
    total_ms: float
    max_ms: float
    advice: str
    detected_at: float = field(default_factory=time.time)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def advice_for(kind: str, operation: str, table: str, statement: str, count: int = 1) -> str:
    """Concrete optimisation advice for a finding, from the statement's shape."""
    if kind == "n_plus_one":
        return (
            f"The same {operation} on {table or 'a table'} ran {count} times in one request: a query per "
            "row of an outer loop. Load the related rows with the outer query instead: "
            "select_related() for ForeignKey/OneToOne fields, prefetch_related() (or Prefetch()) for "
            "reverse ForeignKey and ManyToMany relations, or aggregate with annotate()."
        )
    text = statement.upper()
    tips = []
    if "LIKE '%" in text or "LIKE %S" in text:  # Django's contains/icontains bind '%value%'

        tips.append("a leading-wildcard LIKE cannot use an index; consider a full-text index")
    if " WHERE " not in text and operation in ("SELECT", "UPDATE", "DELETE"):
        tips.append("there is no WHERE clause: the whole table is read; filter or paginate")
    if "ORDER BY" in text and "LIMIT" not in text:
        tips.append("ORDER BY without LIMIT sorts every matching row; paginate")
    if "SELECT *" in text or ".*" in text:
        tips.append("select only the columns you need (.only()/.values())")
    if " IN (" in text:
        tips.append("large IN lists are slow; join or use a temporary table")
    if not tips:
        tips.append(
            "run EXPLAIN on it; add an index covering the WHERE/ORDER BY columns "
            "(Meta.indexes) if it scans"
        )
    return f"Slow {operation} on {table or 'a table'}: " + "; ".join(tips) + "."


@dataclass
class _Shape:
    count: int = 0
    total_ns: int = 0
    max_ns: int = 0


@dataclass
class _TraceQueries:
    ansi_quotes: bool = False  # "..." quotes names (SQLite, PostgreSQL), not strings (MySQL)
    shapes: dict[str, _Shape] = field(default_factory=dict)
    slow: list[tuple[str, int]] = field(default_factory=list)


class QueryAnalyzer(SpanProcessor):
    """Per-trace query statistics → findings at local-root end. ``on_end`` runs on the derive thread;
    the short lock guards the per-trace dicts (no I/O and no SQL parsing under it)."""

    def __init__(self, *, slow_query_ms: float, n_plus_one_threshold: int, max_traces: int = 2000,
                 max_shapes: int = 200, max_findings: int = 500) -> None:
        if n_plus_one_threshold < 2:
            raise ValueError(f"n_plus_one_threshold must be >= 2, got {n_plus_one_threshold!r}")
        if slow_query_ms < 0:
            raise ValueError(f"slow_query_ms must be >= 0, got {slow_query_ms!r}")
        self._slow_ns = int(slow_query_ms * 1_000_000)
        self._threshold = n_plus_one_threshold
        self._max_traces = max_traces
        self._max_shapes = max_shapes
        self._traces: OrderedDict[int, _TraceQueries] = OrderedDict()
        self._lock = threading.Lock()
        self.recent: deque[FindingData] = deque(maxlen=max_findings)
        self.listeners: list[Callable[[FindingData], object]] = []
        self.writer: FindingWriter | None = None  # set by build_query_analyzer when records are on
        self.evicted_traces = 0

    def on_end(self, span: ReadableSpan) -> None:
        # The SDK wraps its attributes in a new proxy on each access, and every lookup through it runs
        # Python code (a missing key raises inside): take the proxy once and look each key up once.
        attributes = span.attributes
        if attributes is None:
            attributes = _EMPTY
        trace_id = span.context.trace_id
        statement = None
        for key in _STATEMENT_KEYS:  # attribute values are never None: None means absent
            statement = attributes.get(key)
            if statement is not None:
                break
        if isinstance(statement, str):
            self._observe(trace_id, statement[:_MAX_STATEMENT_CHARS], (span.end_time or 0) - (span.start_time or 0),
                          attributes)
        parent = span.parent
        if parent is None or parent.is_remote:
            if ATTR_INTERNAL in attributes:  # e2e-otel's own pages: not the app's queries
                with self._lock:
                    self._traces.pop(trace_id, None)
                return
            self._finish(trace_id, span)

    def _observe(self, trace_id: int, statement: str, duration_ns: int, attributes: Mapping[str, Any]) -> None:
        """Counts one statement; ``attributes`` (the span's) are read only by a trace's first query."""
        with self._lock:
            queries = self._traces.get(trace_id)
            if queries is None:
                if len(self._traces) >= self._max_traces:
                    self._traces.popitem(last=False)
                    self.evicted_traces += 1
                ansi_quotes = ansi_quotes_for(attributes.get("db.system"))
                queries = self._traces[trace_id] = _TraceQueries(ansi_quotes=ansi_quotes)
            shape = queries.shapes.get(statement)
            if shape is None:
                if len(queries.shapes) >= self._max_shapes:
                    return
                shape = queries.shapes[statement] = _Shape()
            shape.count += 1
            shape.total_ns += duration_ns
            if duration_ns > shape.max_ns:
                shape.max_ns = duration_ns
            if duration_ns > self._slow_ns and len(queries.slow) < self._max_shapes:
                queries.slow.append((statement, duration_ns))

    def _finish(self, trace_id: int, root: ReadableSpan) -> None:
        with self._lock:
            queries = self._traces.pop(trace_id, None)
        if queries is None:
            return
        route = str((root.attributes or {}).get("http.route") or root.name)[:190]
        correlation_id = format_correlation_id(trace_id)
        repeated = sorted(((s.total_ns, statement, s) for statement, s in queries.shapes.items()
                           if s.count >= self._threshold), key=lambda item: item[0], reverse=True)
        slow = sorted(queries.slow, key=lambda item: item[1], reverse=True)
        findings = [
            self._finding("n_plus_one", correlation_id, route, statement, shape.count, shape.total_ns,
                          shape.max_ns, queries.ansi_quotes)
            for _, statement, shape in repeated[:MAX_FINDINGS_PER_TRACE]
        ] + [
            self._finding("slow_query", correlation_id, route, statement, 1, duration_ns, duration_ns,
                          queries.ansi_quotes)
            for statement, duration_ns in slow[:MAX_FINDINGS_PER_TRACE]
        ]
        for finding in findings:
            self.recent.append(finding)
            for listener in self.listeners:
                try:
                    listener(finding)
                except Exception:  # one listener (metrics, the writer) must not cost the others
                    logger.exception("e2e-otel: query finding listener %r failed", listener)

    @staticmethod
    def _finding(kind: str, correlation_id: str, route: str, statement: str, count: int,
                 total_ns: int, max_ns: int, ansi_quotes: bool) -> FindingData:
        operation, table = sql_operation_and_table(statement)
        scrubbed = scrub_sql(statement, ansi_quotes=ansi_quotes)
        return FindingData(
            kind=kind, correlation_id=correlation_id, route=route, table=table or "",
            operation=operation, statement=scrubbed, fingerprint=finding_fingerprint(kind, scrubbed, route),
            count=count, total_ms=round(total_ns / 1e6, 3), max_ms=round(max_ns / 1e6, 3),
            advice=advice_for(kind, operation, table or "", statement, count),
        )

    def findings(self, kind: str | None = None) -> list[FindingData]:
        """This process's recent findings, newest first (the shared ones are in the database)."""
        items = list(self.recent)
        items.reverse()
        return [f for f in items if kind is None or f.kind == kind]

    def stats(self) -> dict[str, Any]:
        """The finding writer's counters (queue depth, drops, rows written) for the metrics scrape;
        empty when findings are not stored."""
        return self.writer.stats() if self.writer is not None else {}


def build_query_analyzer(runtime: Runtime) -> QueryAnalyzer | None:
    """``PROCESSOR_FACTORIES`` entry (after the record processor): findings are stored by the
    record writer when records are on, and feed the Prometheus counters when metrics are on."""
    config = runtime.config
    analyzer = QueryAnalyzer(slow_query_ms=float(config.SLOW_QUERY_MS),
                             n_plus_one_threshold=int(config.N_PLUS_ONE_THRESHOLD))
    if config.METRICS_ENABLED:
        from .metrics import get_metrics

        analyzer.listeners.append(get_metrics().observe_query_finding)
    from .processors import WorkflowSpanProcessor

    records = runtime.processor(WorkflowSpanProcessor)
    if isinstance(records, WorkflowSpanProcessor):
        from .findings_store import FindingWriter

        analyzer.writer = FindingWriter(runtime.sanitizer, alias=records.writer.alias)
        records.writer.add_batch_job(analyzer.writer)
        analyzer.listeners.append(analyzer.writer.submit)
    return analyzer
