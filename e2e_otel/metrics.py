"""prometheus_client metric families, label caps, multiprocess scraping and the ``/metrics`` view.

All families live in one ``E2EMetrics`` object so tests can build a private one on their own
``CollectorRegistry``; the process-wide instance (``get_metrics()``) registers on prometheus_client's
default registry. In multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``; under gunicorn e2e-otel sets it
up itself, see ``metrics_multiprocess.py``) every worker writes its values to mmap files there and a
scrape of any worker sums them with ``MultiProcessCollector``. The catalogue is docs/metrics.md.
"""

from __future__ import annotations

import hmac
import logging
import os
import threading
import weakref
from collections.abc import Sequence
from typing import Any, Generic, TypeVar

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics import MetricWrapperBase

from . import forksafe
from .metrics_multiprocess import AUTO_ENV, forget_dead_workers, multiprocess_dir
from .routes import HTTP_METHODS, method_key

logger = logging.getLogger(__name__)

PREFIX = "e2e_otel"
OTHER = "other"
UNMATCHED = "<unmatched>"
#: models.Layer; every (layer, x) label pair has a cap per layer, so one layer cannot fill another's.
LAYERS: tuple[str, ...] = ("frontend", "api", "database", "cache", "external", "internal", "system")
MAX_LABEL_LENGTH = 100
FRONTEND_COMPONENTS = 50
ERROR_TYPES_PER_LAYER = 50

#: Step durations: the default thresholds (0.1/0.5 s database, 0.5/2 s api, 0.2/1 s frontend) are
#: bucket bounds, so "above warning" is exact in PromQL.
STEP_BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
WORKFLOW_BUCKETS: tuple[float, ...] = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
#: ``status`` values of ``e2e_otel_unmatched_requests_total`` kept as themselves; any other code is its
#: class (``4xx``), a missing one ``none``. With the 9 methods and ``_OTHER``: at most 210 series.
UNMATCHED_STATUSES = frozenset({301, 302, 304, 400, 401, 403, 404, 405, 410, 413, 429, 500, 502, 503, 504})
UNMATCHED_SERIES = (len(HTTP_METHODS) + 1) * (len(UNMATCHED_STATUSES) + 6)


def method_label(method: object) -> str:
    """An HTTP method label: one of the standard methods, else ``_OTHER`` (clients choose the string)."""
    return method_key(method)


def status_label(code: object) -> str:
    """An HTTP status label from a bounded set (``UNMATCHED_STATUSES``, classes, ``none``)."""
    if isinstance(code, int) and not isinstance(code, bool) and 100 <= code <= 599:
        return str(code) if code in UNMATCHED_STATUSES else f"{code // 100}xx"
    return "none"


class LabelCap:
    """At most ``limit`` distinct label values; a new value beyond that is reported as not admitted.

    Thread-safe, run by any thread: looking up a known value takes no lock (set membership is atomic
    in CPython); admitting a new one takes a lock that is never held across I/O. The cap is per process
    (in multiprocess mode each worker admits its own first ``limit`` values); the lock is re-created
    in a forked child.
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"label cap must be >= 1, got {limit!r}")
        self.limit = limit
        self._seen: set[object] = set()
        self._lock = threading.Lock()
        forksafe.register(self)

    def admit(self, key: object) -> bool:
        if key in self._seen:
            return True
        with self._lock:
            if key in self._seen:
                return True
            if len(self._seen) >= self.limit:
                return False
            self._seen.add(key)
            return True

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()  # the parent may have held it while forking

    def __len__(self) -> int:
        return len(self._seen)


def clip(value: str) -> str:
    """A label value cut to ``MAX_LABEL_LENGTH`` characters (span names and exception types are
    unbounded strings)."""
    return value if len(value) <= MAX_LABEL_LENGTH else value[:MAX_LABEL_LENGTH]


def component_budget(layer: str, max_labels: int) -> int:
    """Distinct components one layer may use. Browser spans name their own components (any page can
    post them to the ingest endpoint), so ``frontend`` gets a smaller budget of its own."""
    return min(FRONTEND_COMPONENTS, max_labels) if layer == "frontend" else max_labels


def error_type_budget(max_labels: int) -> int:
    """Distinct ``error_type`` values per layer: exception type names are a small set in any app."""
    return min(ERROR_TYPES_PER_LAYER, max_labels)


def component_pairs(max_labels: int) -> int:
    """Distinct (layer, component) label pairs: every layer's budget plus one ``other`` per layer."""
    return sum(component_budget(layer, max_labels) for layer in LAYERS) + len(LAYERS)


_Child = TypeVar("_Child", bound=MetricWrapperBase)


class ChildCache(dict[tuple[str, ...], _Child], Generic[_Child]):
    """A family's labelled children by label values: ``cache[layer, component]`` is
    ``family.labels(layer, component)``, at most ``limit`` of them kept.

    ``labels()`` validates, converts and takes the family's lock on every call, which costs more than
    the observation itself on the per-span path; a known key here is a plain dict lookup. Label values
    must already be capped (``component_label`` & co.), so the keys stay within ``limit``; anything
    beyond it is served by ``labels()`` uncached. Safe from any thread: two threads missing the same
    key both get the family's one child (``labels()`` creates it under its lock), so nothing counts
    twice. A cached child stays the one ``labels()`` returns: e2e-otel never removes children, a
    forked child's multiprocess values re-open their own files on the first write (prometheus_client
    checks the pid), and tests build a new ``E2EMetrics`` (with new caches) instead of resetting one.
    """

    def __init__(self, family: _Child, limit: int) -> None:
        super().__init__()
        self.family = family
        self.limit = limit

    def __missing__(self, labels: tuple[str, ...]) -> _Child:
        child = self.family.labels(*labels)
        if len(self) < self.limit:
            self[labels] = child
        return child


class E2EMetrics:
    """Every e2e-otel metric family (the METRICS CONTRACT), registered on one registry.

    Safe from any thread (derive, record writer, monitor, export and request threads all use it). Every
    layer has its own component cap (``max_labels``; ``frontend``: ``component_budget``) and its own
    error_type cap (``error_type_budget``); workflow types share one cap of ``max_labels``. A value
    beyond its cap becomes ``other``; every value is cut to ``MAX_LABEL_LENGTH``. Always label through
    ``component_label``/``error_type_label``/``workflow_type_label``. The families labelled once per
    span or workflow have a ``ChildCache`` each (``steps_children`` & co.) for those capped values.
    """

    def __init__(self, registry: CollectorRegistry | None = REGISTRY, *, max_labels: int = 200) -> None:
        if max_labels < 1:
            raise ValueError(f"max_labels must be >= 1, got {max_labels!r}")
        self.registry = registry
        self.max_labels = max_labels
        self._components = {layer: LabelCap(component_budget(layer, max_labels)) for layer in LAYERS}
        self._error_types = {layer: LabelCap(error_type_budget(max_labels)) for layer in LAYERS}
        self._workflow_types = LabelCap(max_labels)
        r = registry
        self.step_duration = Histogram(
            f"{PREFIX}_step_duration_seconds", "Duration of workflow steps (spans) by layer and component.",
            ["layer", "component"], buckets=STEP_BUCKETS, registry=r)
        self.steps = Counter(
            f"{PREFIX}_steps", "Workflow steps (spans) ended, by layer, component and status.",
            ["layer", "component", "status"], registry=r)
        self.workflows = Counter(
            f"{PREFIX}_workflows", "Workflows closed, by type and final status.",
            ["workflow_type", "status"], registry=r)
        self.workflow_duration = Histogram(
            f"{PREFIX}_workflow_duration_seconds", "Duration of closed workflows by type.",
            ["workflow_type"], buckets=WORKFLOW_BUCKETS, registry=r)
        self.threshold_breaches = Counter(
            f"{PREFIX}_threshold_breaches", "Threshold rule breaches by layer, metric and severity.",
            ["layer", "metric", "severity"], registry=r)
        self.threshold_value = Gauge(
            f"{PREFIX}_threshold_value", "Configured layer-wide thresholds in base units (seconds, ratio).",
            ["layer", "metric", "severity"], registry=r, multiprocess_mode="livemostrecent")
        self.errors = Counter(
            f"{PREFIX}_errors", "Exceptions recorded on spans, by layer and exception type.",
            ["layer", "error_type"], registry=r)
        self.api_error_ratio = Gauge(
            f"{PREFIX}_api_error_ratio", "Share of API requests that failed (5xx or exception), sliding window.",
            registry=r, multiprocess_mode="livemax")
        self.cache_hit_ratio = Gauge(
            f"{PREFIX}_cache_hit_ratio", "Share of cache lookups that hit, sliding window (1 when idle).",
            registry=r, multiprocess_mode="livemin")
        self.cache_hit_ratio.set(1.0)
        self.memory_usage = Gauge(
            f"{PREFIX}_system_memory_usage_ratio", "System memory in use (0..1).",
            registry=r, multiprocess_mode="livemax")
        self.cpu_usage = Gauge(
            f"{PREFIX}_system_cpu_usage_ratio", "System CPU in use (0..1).",
            registry=r, multiprocess_mode="livemax")
        self.record_queue_depth = Gauge(
            f"{PREFIX}_record_queue_depth", "Spans waiting in the record writer queue.",
            registry=r, multiprocess_mode="livesum")
        self.records_dropped = Counter(
            f"{PREFIX}_records_dropped", "Records dropped before reaching the database, by reason.",
            ["reason"], registry=r)
        self.derive_queue_depth = Gauge(
            f"{PREFIX}_derive_queue_depth", "Ended spans waiting for the derive thread (records, metrics, findings).",
            registry=r, multiprocess_mode="livesum")
        self.derive_dropped = Counter(
            f"{PREFIX}_derive_dropped_spans", "Ended spans never derived into records, metrics or findings "
            "because the derive queue was full (they are still exported).", registry=r)
        self.records_written = Counter(
            f"{PREFIX}_records_written", "Records written to the database, by kind.", ["kind"], registry=r)
        self.exporter_up = Gauge(
            f"{PREFIX}_exporter_up", "1 when the last span export succeeded, 0 when it failed.",
            registry=r, multiprocess_mode="livemin")
        self.exporter_up.set(1)  # no export has failed (also when no exporter is configured)
        self.exported_spans = Counter(
            f"{PREFIX}_exported_spans", "Spans handed to the exporter, by result.", ["result"], registry=r)
        self.breach_signals_dropped = Counter(
            f"{PREFIX}_breach_signals_dropped", "Span breaches never signalled because the pending queue "
            "(1,000) was full; the breach counter still has them.", registry=r)
        self.export_dropped = Counter(
            f"{PREFIX}_export_dropped_spans", "Spans dropped because the SDK's export queue was full.",
            registry=r)
        self.ingest_refused_requests = Counter(
            f"{PREFIX}_ingest_refused_requests", "Browser ingestion requests refused before decoding, by "
            "reason (rate_limit, busy).", ["reason"], registry=r)
        self.ingest_dropped_spans = Counter(
            f"{PREFIX}_ingest_dropped_spans", "Ingested browser spans dropped by a budget, by reason "
            "(new_trace_budget, text_budget, cpu_budget).", ["reason"], registry=r)
        self.slow_queries = Counter(
            f"{PREFIX}_slow_queries", "SQL statements slower than SLOW_QUERY_MS, by component.",
            ["component"], registry=r)
        self.n_plus_one = Counter(
            f"{PREFIX}_n_plus_one", "N+1 query patterns detected, by component.", ["component"], registry=r)
        self.unmatched_requests = Counter(
            f"{PREFIX}_unmatched_requests", "Requests no URL pattern matched or no view answered (never "
            "workflows), by method and status.", ["method", "status"], registry=r)
        self.build_info = Gauge(
            f"{PREFIX}_build_info", "Always 1; labels describe this build.",
            ["version", "service", "environment"], registry=r, multiprocess_mode="max")
        # the per-span and per-workflow children: keys are capped labels, so the limits are never reached
        pairs = component_pairs(max_labels)
        self.step_duration_children = ChildCache(self.step_duration, pairs)
        self.steps_children = ChildCache(self.steps, 2 * pairs)  # status: ok, error
        self.errors_children = ChildCache(self.errors, len(LAYERS) * (error_type_budget(max_labels) + 1))
        self.workflows_children = ChildCache(self.workflows, 2 * (max_labels + 1))  # completed, failed
        self.workflow_duration_children = ChildCache(self.workflow_duration, max_labels + 1)
        self._stats_lock = threading.Lock()
        self._build_labels: tuple[str, str, str] | None = None
        # per source object, weakly: a discarded processor's memo goes with it, and a new processor
        # that happens to get the old one's id() starts from zero instead of inheriting its numbers
        self._last_stats: weakref.WeakKeyDictionary[Any, dict[tuple[str, str], float]] = \
            weakref.WeakKeyDictionary()
        forksafe.register(self)

    def component_label(self, layer: str, component: str) -> str:
        """``component`` as a label value for ``layer``: ``other`` once that layer's cap is full."""
        component = clip(component)
        cap = self._components.get(layer)
        if cap is None:  # not a layer (LabelCap defines __len__, so no ``or`` here)
            cap = self._components["internal"]
        return component if cap.admit(component) else OTHER

    def error_type_label(self, layer: str, error_type: str) -> str:
        error_type = clip(error_type)
        cap = self._error_types.get(layer)
        if cap is None:
            cap = self._error_types["internal"]
        return error_type if cap.admit(error_type) else OTHER

    def workflow_type_label(self, workflow_type: str) -> str:
        workflow_type = clip(workflow_type)
        return workflow_type if self._workflow_types.admit(workflow_type) else OTHER

    def observe_query_finding(self, finding: Any) -> None:
        """``QueryAnalyzer`` listener: count a ``slow_query``/``n_plus_one`` finding by its table
        (the database-layer component, capped like the step metrics). Never raises."""
        try:
            family = {"slow_query": self.slow_queries, "n_plus_one": self.n_plus_one}.get(finding.kind)
            if family is not None:
                table = str(getattr(finding, "table", "") or "<unknown>")
                family.labels(self.component_label("database", table)).inc()
        except Exception:
            logger.debug("e2e-otel: query finding not counted", exc_info=True)

    def set_build_info(self, *, service: str, environment: str) -> None:
        from . import __version__

        self._build_labels = (__version__, service, environment)
        self.build_info.labels(*self._build_labels).set(1)

    def _after_fork_in_child(self) -> None:
        """Fresh lock, and the constant gauges re-applied: in multiprocess mode a child's values start
        from its own, empty file (a 0 in ``exporter_up`` would read as an outage). ``_last_stats`` is
        kept: the child's record processors continue the parent's cumulative numbers. In e2e-otel's
        own directory a new (preforked) worker also forgets the live gauges of workers that died."""
        self._stats_lock = threading.Lock()
        path = multiprocess_dir()
        if path is not None and os.environ.get(AUTO_ENV) == "1":
            try:
                forget_dead_workers(path)
            except OSError:
                logger.debug("e2e-otel: could not clean %s", path, exc_info=True)
        self.exporter_up.set(1)
        self.cache_hit_ratio.set(1.0)
        if self._build_labels is not None:
            self.build_info.labels(*self._build_labels).set(1)

    def sync_record_stats(self, sources: Sequence[tuple[object, dict[str, Any]]]) -> None:
        """Copy record processors' ``stats()`` into the queue/dropped/written metrics.

        ``sources`` are ``(processor, stats)`` pairs. Counters only move forward, so each processor's
        cumulative numbers are applied as deltas against what it reported last time (numbers that
        went down mean a new processor: its counts are added whole). Queue depths are summed.
        """
        depth = 0.0
        with self._stats_lock:
            for source, stats in sources:
                value = stats.get("queue_depth")
                if isinstance(value, (int, float)):
                    depth += value
                try:
                    memos = self._last_stats.setdefault(source, {})
                except TypeError:  # not weak-referenceable: its counts cannot be followed across scrapes
                    continue
                for key, family, label in (("dropped", self.records_dropped, "reason"),
                                           ("written", self.records_written, "kind")):
                    values = stats.get(key)
                    if not isinstance(values, dict):
                        continue
                    for name, total in values.items():
                        if not isinstance(total, (int, float)):
                            continue
                        memo = (key, str(name))
                        last = memos.get(memo, 0.0)
                        delta = total - last if total >= last else total
                        child = family.labels(**{label: str(name)})  # zero series exist too
                        if delta > 0:
                            child.inc(delta)
                        memos[memo] = float(total)
            self.record_queue_depth.set(depth)

    def sync_derive_stats(self, source: object, stats: dict[str, Any]) -> None:
        """Copy the derive queue's ``stats()`` (``FanOutSpanProcessor.stats``) into its two metrics."""
        with self._stats_lock:
            self.derive_queue_depth.set(stats.get("queue_depth", 0))
            dropped = stats.get("dropped", 0)
            try:
                memos = self._last_stats.setdefault(source, {})
            except TypeError:
                return
            last = memos.get(("derive", "dropped"), 0.0)
            delta = dropped - last if dropped >= last else dropped
            if delta > 0:
                self.derive_dropped.inc(delta)
            memos[("derive", "dropped")] = float(dropped)


BREACH_METRICS = 7  # response_time, query_time, render_time, memory_usage, cpu_usage, error_rate, hit_rate


def series_bound(max_labels: int = 200, *, rules: int = 7, drop_reasons: int = 4, written_kinds: int = 5) -> int:
    """The most ``e2e_otel_*`` samples one process can expose (docs/metrics.md derives it).

    ``rules`` is the number of enabled layer-wide threshold rules. Counts the ``_created`` samples of
    single-process mode; multiprocess scrapes have fewer per worker.
    """
    layers = len(LAYERS)
    pairs = component_pairs(max_labels)
    error_pairs = layers * error_type_budget(max_labels) + layers
    database = max_labels + 1  # the database layer's components (+ other)
    types = max_labels + 1
    histogram = len(STEP_BUCKETS) + 1 + 3  # buckets incl. +Inf, _sum, _count, _created
    return (
        histogram * pairs          # step_duration_seconds
        + 2 * 2 * pairs            # steps_total {ok,error} + _created
        + 2 * error_pairs          # errors_total
        + 2 * 2 * database         # slow_queries_total, n_plus_one_total (database-layer components)
        + 2 * 2 * types            # workflows_total {completed,failed}
        + (len(WORKFLOW_BUCKETS) + 4) * types  # workflow_duration_seconds
        + BREACH_METRICS * 2 * 2   # threshold_breaches_total
        + rules * 2                # threshold_value
        + 2 * (drop_reasons + written_kinds + 2)  # records_dropped/written, exported_spans
        + 2 * 3                    # export/derive dropped spans, breach_signals_dropped_total (+ _created)
        + 2 * (2 + 3)              # ingest_refused_requests_total, ingest_dropped_spans_total by reason
        + 8                        # seven plain gauges + build_info
        + 2 * UNMATCHED_SERIES     # unmatched_requests_total (+ _created)
    )


_metrics: E2EMetrics | None = None
_metrics_lock = threading.Lock()


def _new_module_lock_in_child() -> None:
    global _metrics_lock
    _metrics_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_module_lock_in_child)


def get_metrics(max_labels: int | None = None) -> E2EMetrics:
    """The process-wide metrics on the default registry (created on first use)."""
    global _metrics
    if _metrics is None:
        with _metrics_lock:
            if _metrics is None:
                _metrics = E2EMetrics(REGISTRY, max_labels=max_labels or 200)
    return _metrics


class CountingSpanExporter(SpanExporter):
    """Counts export results into ``exported_spans_total`` and sets ``exporter_up``.

    Runs on the SDK's export thread. Wraps the real exporter without changing what it does.
    """

    def __init__(self, inner: SpanExporter, metrics: E2EMetrics | None = None) -> None:
        self.inner = inner
        self._metrics = metrics or get_metrics()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            result = self.inner.export(spans)
        except Exception:
            self._count(False, len(spans))
            raise
        self._count(result is SpanExportResult.SUCCESS, len(spans))
        return result

    def _count(self, ok: bool, n: int) -> None:
        self._metrics.exported_spans.labels(result="success" if ok else "failure").inc(n)
        self._metrics.exporter_up.set(1 if ok else 0)

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.inner.force_flush(timeout_millis)


def sync_runtime_stats() -> None:
    """Pull scrape-time numbers (record and derive queue stats) from the installed runtime."""
    from .bootstrap import get_runtime

    runtime = get_runtime()
    if runtime is None:
        return
    sources = []
    for processor in runtime.derived.processors:
        stats = getattr(processor, "stats", None)
        if callable(stats):
            try:
                sources.append((processor, stats()))
            except Exception:
                logger.exception("e2e-otel: stats() of %r failed", processor)
    metrics = get_metrics()
    if sources:
        metrics.sync_record_stats(sources)
    metrics.sync_derive_stats(runtime.derived, runtime.derived.stats())


def scrape_registry() -> CollectorRegistry:
    """The registry a scrape reads: all workers' files in multiprocess mode, else the default one."""
    path = multiprocess_dir()
    if path is None:
        return REGISTRY
    from prometheus_client import multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=path)
    return registry


def render(accept: str = "") -> tuple[bytes, str]:
    """The exposition text of a scrape and its content type (OpenMetrics when asked for)."""
    sync_runtime_stats()
    encoder, content_type = choose_encoder(accept)
    return encoder(scrape_registry()), content_type


def metrics_view(request):  # type: ignore[no-untyped-def]
    """``GET /metrics``: Prometheus exposition; ``Authorization: Bearer <METRICS_KEY>`` when a key is set."""
    from django.http import HttpResponse, HttpResponseNotAllowed

    from .conf import get_config

    if request.method not in ("GET", "HEAD"):
        return HttpResponseNotAllowed(["GET", "HEAD"])
    config = get_config()
    if not config.METRICS_ENABLED:
        return HttpResponse("metrics are disabled (E2E_OTEL['METRICS_ENABLED'])\n", status=404,
                            content_type="text/plain")
    key = config.METRICS_KEY
    if key:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), key.encode()):
            response = HttpResponse("unauthorized\n", status=401, content_type="text/plain")
            response["WWW-Authenticate"] = 'Bearer realm="metrics"'
            return response
    body, content_type = render(request.headers.get("Accept", ""))
    return HttpResponse(body, content_type=content_type)
