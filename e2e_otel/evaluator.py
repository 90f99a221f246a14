"""``ThresholdEvaluator``: the span processor that turns every recorded span into step/error metrics,
ratio-window events and duration breaches; and ``build_metrics_processor``, its bootstrap factory.

It reads the ``RuleSet`` the monitor thread swaps in (``thresholds.py``), feeds ``SlidingWindow``s
(``windows.py``) and queues span breaches for ``ThresholdMonitor`` (``monitor.py``) to signal. Its
``on_end`` runs on the derive thread (``derive.py``), one span at a time; nothing in it relies on that
(spans may still reach it from another thread), so everything it touches is thread-safe.
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Mapping
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.trace import SpanKind, StatusCode

from . import forksafe, spans_to_records
from .defaults import DURATION_METRIC_BY_LAYER
from .metrics import LAYERS, E2EMetrics, get_metrics, method_label, status_label
from .monitor import ThresholdMonitor
from .propagation import format_correlation_id
from .thresholds import Breach, RuleSet
from .windows import SlidingWindow

logger = logging.getLogger(__name__)

#: Span attribute conventions (documented in docs/metrics.md).
ATTR_LAYER = "e2e.layer"
ATTR_CACHE_HIT = "e2e.cache.hit"
PENDING_BREACHES = 1000
_LAYER_SET = frozenset(LAYERS)
_EMPTY: Mapping[str, Any] = {}
#: http.response.status_code (stable semconv) wins over http.status_code (old), as in the records.
_STATUS_CODE_KEYS = ("http.response.status_code", "http.status_code")
_METHOD_KEYS = ("http.request.method", "http.method")
#: The attributes ``on_end`` asks about that most spans lack. The SDK's attribute mapping answers a
#: missing key by raising and catching KeyError, so one pass over its keys finds which are present.
_SOUGHT_KEYS = frozenset({ATTR_LAYER, ATTR_CACHE_HIT, spans_to_records.ATTR_INTERNAL, *_STATUS_CODE_KEYS})


def classify(span: ReadableSpan) -> tuple[str, str]:
    """(layer, component) of a span, as the records have it (``spans_to_records.classify``):
    components are route templates or table names, never raw paths. A span carrying
    ``e2e.cache.hit`` (and no explicit ``e2e.layer``) is a cache step; a layer outside the known set
    becomes ``internal`` (it is a label value)."""
    attributes = span.attributes or _EMPTY
    return _classify(span, attributes, _SOUGHT_KEYS.intersection(attributes))


def _classify(span: ReadableSpan, attributes: Mapping[str, Any], present: frozenset[str]) -> tuple[str, str]:
    """``present``: the ``_SOUGHT_KEYS`` that ``attributes`` has."""
    layer, component, _ = spans_to_records.classify(span)
    if ATTR_CACHE_HIT in present and not (ATTR_LAYER in present and attributes[ATTR_LAYER]):
        layer = "cache"
    if layer not in _LAYER_SET:
        layer = "internal"
    return layer, component


def _status_code(attributes: Mapping[str, Any], present: frozenset[str]) -> Any:
    for key in _STATUS_CODE_KEYS:
        if key in present:
            return attributes[key]
    return None


def _is_error(span: ReadableSpan, layer: str, attributes: Mapping[str, Any], present: frozenset[str]) -> bool:
    if span.status.status_code is StatusCode.ERROR:
        return True
    if layer == "api":
        code = _status_code(attributes, present)
        return isinstance(code, int) and code >= 500
    return False


class ThresholdEvaluator(SpanProcessor):
    """Spans → step/error metrics, ratio windows and duration breaches.

    ``on_end`` runs on the derive thread, one span at a time; the ``workflow_closed`` receiver on the
    record writer thread; ``drain_pending`` on the monitor thread. Nothing relies on ``on_end`` having
    one thread, though (a span may be replayed into it from another): its only per-span state is in
    thread-safe structures (label caps, ``ChildCache``s, windows, the breach queue). Every recorded
    span counts, sampled or not (the sampler records what it does not export), so rates do not depend
    on SAMPLE_RATE; only spans the derive queue had to drop are missing (counted in
    ``e2e_otel_derive_dropped_spans_total``). ``on_end`` classifies each span once, reads the span's
    own attribute mapping (no copy, one pass over its keys), labels through the metrics' child
    caches, never blocks on I/O and never raises. Traffic marked ``e2e.internal`` (e2e-otel's own,
    ``IGNORE_PATHS``, unmatched: ``traffic.py``) counts as steps but never in the API error ratio or
    in breaches; an unmatched request counts in ``e2e_otel_unmatched_requests_total``. Span breaches
    wait in a bounded queue for the monitor thread; when it is full the oldest is dropped and counted
    in ``e2e_otel_breach_signals_dropped_total``.
    """

    def __init__(self, metrics: E2EMetrics, *, rules: RuleSet | None = None) -> None:
        self.metrics = metrics
        self.rules: RuleSet = rules or RuleSet.defaults()  # replaced whole, read without a lock
        self.api_window = SlidingWindow()
        self.cache_window = SlidingWindow()
        self.pending: collections.deque[Breach] = collections.deque(maxlen=PENDING_BREACHES)
        self._pending_lock = threading.Lock()
        self.monitor: ThresholdMonitor | None = None
        forksafe.register(self)

    def on_end(self, span: ReadableSpan) -> None:
        try:
            self._observe(span)
        except Exception:
            logger.debug("e2e-otel: threshold evaluation failed", exc_info=True)

    def _observe(self, span: ReadableSpan) -> None:
        start, end = span.start_time, span.end_time
        if end is None or start is None:
            return
        metrics = self.metrics
        attributes = span.attributes or _EMPTY
        present = _SOUGHT_KEYS.intersection(attributes)
        layer, raw_component = _classify(span, attributes, present)
        component = metrics.component_label(layer, raw_component)
        seconds = max(0.0, (end - start) / 1e9)
        error = _is_error(span, layer, attributes, present)
        metrics.step_duration_children[layer, component].observe(seconds)
        metrics.steps_children[layer, component, "error" if error else "ok"].inc()
        if error:
            self._count_errors(span, layer, attributes, present)
        if spans_to_records.ATTR_INTERNAL in present:
            # our own scrapes/API/ingest posts, IGNORE_PATHS, unmatched: real steps, not the app's health
            if span.kind is SpanKind.SERVER and attributes[spans_to_records.ATTR_INTERNAL] == "unmatched":
                method = next((attributes[k] for k in _METHOD_KEYS if k in attributes), None)
                metrics.unmatched_requests.labels(method_label(method),
                                                  status_label(_status_code(attributes, present))).inc()
            return
        if layer == "api":
            self.api_window.add(error)
        if ATTR_CACHE_HIT in present:
            hit = attributes[ATTR_CACHE_HIT]
            if isinstance(hit, bool):
                self.cache_window.add(not hit)
        metric = DURATION_METRIC_BY_LAYER.get(layer)
        if metric is None:
            return
        rule = self.rules.lookup(layer, metric, raw_component)
        severity = rule.severity(seconds) if rule is not None else None
        if severity is not None:
            metrics.threshold_breaches.labels(layer, metric, severity).inc()
            context = span.context
            self._queue(Breach(layer, component, metric, seconds, severity,
                               format_correlation_id(context.trace_id) if context else None))

    def _queue(self, breach: Breach) -> None:
        with self._pending_lock:  # held for a length check and an append only
            full = len(self.pending) >= PENDING_BREACHES
            self.pending.append(breach)  # maxlen: drops the oldest when full
        if full:
            self.metrics.breach_signals_dropped.inc()

    def drain_pending(self) -> list[Breach]:
        """Every queued span breach, oldest first (monitor thread)."""
        with self._pending_lock:
            breaches = list(self.pending)
            self.pending.clear()
        return breaches

    def _count_errors(self, span: ReadableSpan, layer: str, attributes: Mapping[str, Any],
                      present: frozenset[str]) -> None:
        metrics = self.metrics
        counted = False
        for event in span.events:
            if event.name == "exception":
                error_type = (event.attributes or _EMPTY).get("exception.type") or "Exception"
                metrics.errors_children[layer, metrics.error_type_label(layer, str(error_type))].inc()
                counted = True
        if not counted:
            error_type = attributes.get("error.type") or _status_code(attributes, present) or "error"
            metrics.errors_children[layer, metrics.error_type_label(layer, str(error_type))].inc()

    def on_workflow_closed(self, sender: Any = None, session: Any = None, **kwargs: Any) -> None:
        """``signals.workflow_closed`` receiver (record writer thread): workflow counters."""
        try:
            status = str(getattr(session, "status", ""))
            if status not in ("completed", "failed"):
                return
            metrics = self.metrics
            workflow_type = metrics.workflow_type_label(str(getattr(session, "workflow_type", "") or "unknown"))
            metrics.workflows_children[workflow_type, status].inc()
            duration_ms = getattr(session, "duration_ms", None)
            if isinstance(duration_ms, (int, float)):
                metrics.workflow_duration_children[(workflow_type,)].observe(max(0.0, duration_ms / 1000.0))
        except Exception:
            logger.debug("e2e-otel: workflow metrics failed", exc_info=True)

    def _after_fork_in_child(self) -> None:
        """Fresh windows, queue and lock in a forked child (the parent's counts and locks are not ours)."""
        self.api_window = SlidingWindow()
        self.cache_window = SlidingWindow()
        self.pending = collections.deque(maxlen=PENDING_BREACHES)
        self._pending_lock = threading.Lock()

    def shutdown(self) -> None:
        if self.monitor is not None:
            self.monitor.stop()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


def build_metrics_processor(runtime: Any) -> ThresholdEvaluator | None:
    """``bootstrap.PROCESSOR_FACTORIES`` entry: the evaluator plus its monitor thread, or None when
    ``METRICS_ENABLED`` is off."""
    config = runtime.config
    if not config.METRICS_ENABLED:
        return None
    from .signals import workflow_closed

    metrics = get_metrics(config.METRICS_MAX_COMPONENTS)
    metrics.set_build_info(service=config.SERVICE_NAME, environment=config.ENVIRONMENT)
    evaluator = ThresholdEvaluator(metrics)
    workflow_closed.connect(evaluator.on_workflow_closed, weak=True)
    monitor = ThresholdMonitor(evaluator, alias=config.DATABASE_ALIAS,
                               refresh_interval=config.THRESHOLD_REFRESH_INTERVAL)
    evaluator.monitor = monitor
    monitor.start()
    return evaluator
