"""Threshold rules cache and the span processor that turns spans into metrics and breaches.

Two threads share the work. ``ThresholdEvaluator.on_end`` (the span-ending thread) does O(1),
lock-light counting against an immutable ``RuleSet``; ``ThresholdMonitor`` (one daemon thread per
process) reloads the rules from the ``PerformanceThreshold`` table, samples memory/CPU, evaluates
the windowed ratios, sends ``threshold_breached`` signals and writes breach snapshots. Only the
monitor thread ever touches the database.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
import weakref
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import SpanKind, StatusCode

from .defaults import DEFAULT_THRESHOLDS, DURATION_METRIC_BY_LAYER
from .metrics import UNMATCHED, E2EMetrics, get_metrics, multiprocess_dir, sync_runtime_stats

logger = logging.getLogger(__name__)

LAYERS = frozenset({"frontend", "api", "database", "cache", "external", "internal", "system"})
#: Span attribute conventions (documented in docs/metrics.md).
ATTR_LAYER = "e2e.layer"
ATTR_COMPONENT = "e2e.component"
ATTR_CACHE_HIT = "e2e.cache.hit"
#: Ratios are only compared with their rules once the window holds this many events, so one failed
#: request out of one does not page anybody.
MIN_WINDOW_EVENTS = 10
WINDOW_SECONDS = 60
SAMPLE_INTERVAL = 5.0
#: At most one PerformanceSnapshot per metric per this many seconds while it stays in breach.
SNAPSHOT_MIN_INTERVAL = 60.0
PENDING_BREACHES = 1000


# --- rules ----------------------------------------------------------------------------------------


def to_base_unit(value: float, unit: str) -> float:
    """Stored units → base units: ms → seconds, percent → ratio; anything else unchanged."""
    unit = (unit or "").strip().lower()
    if unit in ("ms", "millisecond", "milliseconds"):
        return value / 1000.0
    if unit in ("percent", "%", "pct"):
        return value / 100.0
    return value


@dataclass(frozen=True)
class Rule:
    """One threshold in base units. ``direction`` "below" means falling values are bad."""

    layer: str
    metric: str
    component: str
    warning: float
    critical: float
    direction: str = "above"

    def severity(self, value: float) -> str | None:
        """"critical", "warning" or None (no breach)."""
        if self.direction == "below":
            if value < self.critical:
                return "critical"
            return "warning" if value < self.warning else None
        if value > self.critical:
            return "critical"
        return "warning" if value > self.warning else None


class RuleSet:
    """An immutable set of rules; a component-specific rule wins over the layer-wide one."""

    def __init__(self, rules: Iterable[Rule], source: str) -> None:
        self._rules: Mapping[tuple[str, str, str], Rule] = {(r.layer, r.metric, r.component): r for r in rules}
        self.source = source  # "database" | "defaults"

    def lookup(self, layer: str, metric: str, component: str = "") -> Rule | None:
        rules = self._rules
        return rules.get((layer, metric, component)) or rules.get((layer, metric, ""))

    def rules(self) -> list[Rule]:
        return list(self._rules.values())

    def layer_wide(self) -> list[Rule]:
        return [r for r in self._rules.values() if not r.component]

    def __len__(self) -> int:
        return len(self._rules)

    @classmethod
    def defaults(cls) -> RuleSet:
        return cls(
            (Rule(d.layer, d.metric_name, "", to_base_unit(d.warning, d.unit), to_base_unit(d.critical, d.unit),
                  d.direction) for d in DEFAULT_THRESHOLDS),
            source="defaults",
        )


def load_rules(alias: str = "default") -> RuleSet:
    """The seed defaults overlaid with the ``PerformanceThreshold`` rows.

    A row replaces the default with the same (layer, metric, component); a disabled row switches
    that rule off. Layers the table says nothing about keep their defaults, so adding one custom row
    never silently drops the other layers' alerts. Unreadable table → defaults. Runs on the monitor
    thread with instrumentation suppressed, so reloading never makes spans.
    """
    from django.apps import apps

    if not apps.ready:
        return RuleSet.defaults()
    from opentelemetry.instrumentation.utils import suppress_instrumentation

    from .models import PerformanceThreshold

    try:
        with suppress_instrumentation():
            _drop_stale_connection(alias)
            rows = list(PerformanceThreshold.objects.using(alias).values_list(
                "layer", "metric_name", "component", "warning_threshold", "critical_threshold", "direction",
                "unit", "enabled"))
    except Exception as exc:  # noqa: BLE001 - DB down or not migrated: keep alerting on the defaults
        logger.debug("e2e-otel: threshold rules unavailable (%s); using defaults", exc)
        _close_quietly(alias)
        return RuleSet.defaults()
    if not rows:
        return RuleSet.defaults()
    rules = {(r.layer, r.metric, r.component): r for r in RuleSet.defaults().rules()}
    for layer, metric, component, warning, critical, direction, unit, enabled in rows:
        key = (layer, metric, component or "")
        if enabled:
            rules[key] = Rule(layer, metric, component or "", to_base_unit(warning, unit),
                              to_base_unit(critical, unit), direction or "above")
        else:
            rules.pop(key, None)
    return RuleSet(rules.values(), source="database")


def _drop_stale_connection(alias: str) -> None:
    """The monitor thread keeps its connection between rounds; drop it when the server closed it."""
    from django.db import connections

    connection = connections[alias]
    if not connection.in_atomic_block:
        connection.close_if_unusable_or_obsolete()


def _close_quietly(alias: str) -> None:
    try:
        from django.db import connections

        connections[alias].close()
    except Exception:
        logger.debug("e2e-otel: closing the monitor's connection failed", exc_info=True)


# --- span classification --------------------------------------------------------------------------


def _records_classifier():  # type: ignore[no-untyped-def]
    """The record processor's classifier, so the tables and the metrics agree on layer/component."""
    try:
        from .spans_to_records import classify as records_classify
    except ImportError:
        return None
    return records_classify


def _local_classify(span: ReadableSpan) -> tuple[str, str]:
    """Fallback when ``spans_to_records`` is absent: same precedence, fewer conventions."""
    attributes = span.attributes or {}
    layer = attributes.get(ATTR_LAYER)
    db_system = attributes.get("db.system") or attributes.get("db.system.name")
    if not isinstance(layer, str) or not layer:
        if db_system:
            layer = "cache" if db_system in ("redis", "memcached") else "database"
        elif span.kind is SpanKind.SERVER:
            layer = "api"
        elif span.kind is SpanKind.CLIENT and ("http.method" in attributes
                                               or "http.request.method" in attributes):
            layer = "external"
        else:
            layer = "internal"
    component = attributes.get(ATTR_COMPONENT)
    if isinstance(component, str) and component:
        return layer, component
    if layer == "api":
        route = attributes.get("http.route")
        return layer, "/" + route.lstrip("/") if isinstance(route, str) and route else UNMATCHED
    if layer == "database":
        table = attributes.get("db.sql.table") or attributes.get("db.collection.name")
        if not table:
            statement = attributes.get("db.statement") or attributes.get("db.query.text")
            if isinstance(statement, str):
                from .sanitize import sql_operation_and_table

                table = sql_operation_and_table(statement)[1]
        return layer, str(table or db_system or "unknown")
    if layer == "external":
        host = attributes.get("server.address") or attributes.get("net.peer.name")
        return layer, str(host or "<unknown host>")
    return layer, span.name or "unknown"


_RECORDS_CLASSIFY = _records_classifier()


def classify(span: ReadableSpan) -> tuple[str, str]:
    """(layer, component) of a span, as the records have it; components are route templates or
    table names, never raw paths. A span carrying ``e2e.cache.hit`` (and no explicit ``e2e.layer``)
    is a cache step; a layer outside the known set becomes ``internal`` (it is a label value)."""
    if _RECORDS_CLASSIFY is not None:
        layer, component = _RECORDS_CLASSIFY(span)[:2]
    else:
        layer, component = _local_classify(span)
    attributes = span.attributes or {}
    if ATTR_CACHE_HIT in attributes and not attributes.get(ATTR_LAYER):
        layer = "cache"
    if layer not in LAYERS:
        layer = "internal"
    return layer, component


def _is_error(span: ReadableSpan, layer: str) -> bool:
    if span.status.status_code is StatusCode.ERROR:
        return True
    if layer == "api":
        attributes = span.attributes or {}
        code = attributes.get("http.response.status_code", attributes.get("http.status_code"))
        return isinstance(code, int) and code >= 500
    return False


# --- sliding windows ------------------------------------------------------------------------------


class SlidingWindow:
    """Event and "bad event" counts over the last ``seconds``, in one-second buckets.

    ``add`` is O(1) and holds a lock only for a few integer updates (never across I/O); it is called
    on span-ending threads, ``totals`` on the monitor thread.
    """

    def __init__(self, seconds: int = WINDOW_SECONDS, clock=time.monotonic) -> None:  # type: ignore[no-untyped-def]
        self.seconds = seconds
        self._clock = clock
        self._stamp = [-1] * seconds
        self._total = [0] * seconds
        self._bad = [0] * seconds
        self._lock = threading.Lock()

    def add(self, bad: bool) -> None:
        second = int(self._clock())
        index = second % self.seconds
        with self._lock:
            if self._stamp[index] != second:
                self._stamp[index] = second
                self._total[index] = 0
                self._bad[index] = 0
            self._total[index] += 1
            if bad:
                self._bad[index] += 1

    def totals(self) -> tuple[int, int]:
        """(events, bad events) in the window."""
        oldest = int(self._clock()) - self.seconds
        total = bad = 0
        with self._lock:
            for stamp, t, b in zip(self._stamp, self._total, self._bad):
                if stamp > oldest:
                    total += t
                    bad += b
        return total, bad


# --- the span processor ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Breach:
    layer: str
    component: str
    metric: str
    value: float
    severity: str
    correlation_id: str | None


class ThresholdEvaluator(SpanProcessor):
    """Spans → step/error metrics and duration breaches. ``on_end`` runs on the span-ending thread.

    Every recorded span counts, sampled or not (the sampler records what it does not export), so rates
    do not depend on SAMPLE_RATE. ``on_end`` never blocks on I/O and never raises; breaches are queued
    (bounded, oldest dropped) for the monitor thread to signal.
    """

    def __init__(self, metrics: E2EMetrics, *, rules: RuleSet | None = None) -> None:
        self.metrics = metrics
        self.rules: RuleSet = rules or RuleSet.defaults()  # replaced whole, read without a lock
        self.api_window = SlidingWindow()
        self.cache_window = SlidingWindow()
        self.pending: collections.deque[Breach] = collections.deque(maxlen=PENDING_BREACHES)
        self.monitor: ThresholdMonitor | None = None

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        return None

    def on_end(self, span: ReadableSpan) -> None:
        try:
            self._observe(span)
        except Exception:
            logger.debug("e2e-otel: threshold evaluation failed", exc_info=True)

    def _observe(self, span: ReadableSpan) -> None:
        if span.end_time is None or span.start_time is None:
            return
        metrics = self.metrics
        layer, raw_component = classify(span)
        component = metrics.component_label(layer, raw_component)
        seconds = max(0.0, (span.end_time - span.start_time) / 1e9)
        error = _is_error(span, layer)
        metrics.step_duration.labels(layer, component).observe(seconds)
        metrics.steps.labels(layer, component, "error" if error else "ok").inc()
        if error:
            self._count_errors(span, layer)
        if layer == "api":
            self.api_window.add(error)
        attributes = span.attributes or {}
        hit = attributes.get(ATTR_CACHE_HIT)
        if isinstance(hit, bool):
            self.cache_window.add(not hit)
        metric = DURATION_METRIC_BY_LAYER.get(layer)
        if metric is None:
            return
        rule = self.rules.lookup(layer, metric, raw_component)
        severity = rule.severity(seconds) if rule is not None else None
        if severity is not None:
            metrics.threshold_breaches.labels(layer, metric, severity).inc()
            from .propagation import format_correlation_id

            self.pending.append(Breach(layer, component, metric, seconds, severity,
                                       format_correlation_id(span.context.trace_id) if span.context else None))

    def _count_errors(self, span: ReadableSpan, layer: str) -> None:
        counted = False
        for event in span.events:
            if event.name == "exception":
                error_type = (event.attributes or {}).get("exception.type") or "Exception"
                self.metrics.errors.labels(layer, self.metrics.error_type_label(layer, str(error_type))).inc()
                counted = True
        if not counted:
            attributes = span.attributes or {}
            error_type = attributes.get("error.type") or attributes.get(
                "http.response.status_code", attributes.get("http.status_code")) or "error"
            self.metrics.errors.labels(layer, self.metrics.error_type_label(layer, str(error_type))).inc()

    def on_workflow_closed(self, sender: Any = None, session: Any = None, **kwargs: Any) -> None:
        """``signals.workflow_closed`` receiver (record writer thread): workflow counters."""
        try:
            status = str(getattr(session, "status", ""))
            if status not in ("completed", "failed"):
                return
            workflow_type = self.metrics.workflow_type_label(str(getattr(session, "workflow_type", "") or "unknown"))
            self.metrics.workflows.labels(workflow_type, status).inc()
            duration_ms = getattr(session, "duration_ms", None)
            if isinstance(duration_ms, (int, float)):
                self.metrics.workflow_duration.labels(workflow_type).observe(max(0.0, duration_ms / 1000.0))
        except Exception:
            logger.debug("e2e-otel: workflow metrics failed", exc_info=True)

    def reset_after_fork(self) -> None:
        """Fresh windows in a forked child (the parent's counts and locks are not ours)."""
        self.api_window = SlidingWindow()
        self.cache_window = SlidingWindow()
        self.pending = collections.deque(maxlen=PENDING_BREACHES)

    def shutdown(self) -> None:
        if self.monitor is not None:
            self.monitor.stop()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


# --- the background monitor -----------------------------------------------------------------------


class ThresholdMonitor:
    """Rule reloads, resource sampling, ratio evaluation, signals and snapshots. Runs on its own daemon
    thread (``e2e-otel-thresholds``), restarted in forked children; ``tick()`` may also be called
    directly (tests, management commands).
    """

    def __init__(self, evaluator: ThresholdEvaluator, *, alias: str = "default", refresh_interval: float = 30.0,
                 sample_interval: float = SAMPLE_INTERVAL, write_snapshots: bool = True) -> None:
        from .resources import ResourceSampler

        self.evaluator = evaluator
        self.alias = alias
        self.refresh_interval = refresh_interval
        self.sample_interval = min(sample_interval, refresh_interval)
        self.write_snapshots = write_snapshots
        self.sampler = ResourceSampler()
        self._last_refresh = float("-inf")
        self._last_snapshot: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._exported_rules: set[tuple[str, str, str]] = set()
        _MONITORS.add(self)

    # lifecycle
    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="e2e-otel-thresholds", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        self._thread = None

    def _after_fork_in_child(self) -> None:
        running = self._thread is not None
        self._thread = None
        self._last_snapshot = {}
        self.evaluator.reset_after_fork()
        self.evaluator.metrics.reset_after_fork()
        if running:
            self._last_refresh = float("-inf")
            self.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:
                logger.exception("e2e-otel: threshold monitor tick failed")
            self._stop.wait(self.sample_interval)

    # one round
    def tick(self, now: float | None = None) -> list[Breach]:
        """Reload rules when due, sample resources, evaluate ratios; returns the breaches it handled."""
        from django.apps import apps

        now = time.monotonic() if now is None else now
        if apps.ready and now - self._last_refresh >= self.refresh_interval:
            self.refresh_rules()
            self._last_refresh = now
        elif not self._exported_rules:
            self._export_rule_gauges(self.evaluator.rules)  # defaults until the app registry is ready
        metrics = self.evaluator.metrics
        rules = self.evaluator.rules
        found: list[Breach] = []
        if metrics is get_metrics() and multiprocess_dir() is not None:
            sync_runtime_stats()  # other workers' queues reach the shared files between scrapes

        sample = self.sampler.sample()
        metrics.memory_usage.set(sample.memory_ratio)
        metrics.cpu_usage.set(sample.cpu_ratio)
        self._check(found, rules, "system", "memory_usage", sample.memory_ratio)
        self._check(found, rules, "system", "cpu_usage", sample.cpu_ratio)

        total, bad = self.evaluator.api_window.totals()
        error_ratio = bad / total if total else 0.0
        metrics.api_error_ratio.set(error_ratio)
        if total >= MIN_WINDOW_EVENTS:
            self._check(found, rules, "api", "error_rate", error_ratio)

        total, misses = self.evaluator.cache_window.totals()
        hit_ratio = (total - misses) / total if total else 1.0
        metrics.cache_hit_ratio.set(hit_ratio)
        if total >= MIN_WINDOW_EVENTS:
            self._check(found, rules, "cache", "hit_rate", hit_ratio)

        for breach in found:
            metrics.threshold_breaches.labels(breach.layer, breach.metric, breach.severity).inc()
        if self.write_snapshots:
            self._write_snapshots(found, now)
        pending = self.evaluator.pending
        while pending:
            try:
                found.append(pending.popleft())
            except IndexError:
                break
        self._send_signals(found)
        return found

    def refresh_rules(self) -> RuleSet:
        rules = load_rules(self.alias)
        self.evaluator.rules = rules
        self._export_rule_gauges(rules)
        return rules

    def _export_rule_gauges(self, rules: RuleSet) -> None:
        gauge = self.evaluator.metrics.threshold_value
        current: set[tuple[str, str, str]] = set()
        for rule in rules.layer_wide():
            for severity, value in (("warning", rule.warning), ("critical", rule.critical)):
                gauge.labels(rule.layer, rule.metric, severity).set(value)
                current.add((rule.layer, rule.metric, severity))
        for labels in self._exported_rules - current:
            try:
                gauge.remove(*labels)  # single-process only: multiprocess files keep the last value
            except KeyError:
                pass
        self._exported_rules = current

    @staticmethod
    def _check(found: list[Breach], rules: RuleSet, layer: str, metric: str, value: float) -> None:
        rule = rules.lookup(layer, metric)
        severity = rule.severity(value) if rule is not None else None
        if severity is not None:
            found.append(Breach(layer, "", metric, value, severity, None))

    def _write_snapshots(self, breaches: list[Breach], now: float) -> None:
        due = [b for b in breaches if now - self._last_snapshot.get(b.metric, float("-inf")) >= SNAPSHOT_MIN_INTERVAL]
        if not due:
            return
        from django.apps import apps

        if not apps.ready:
            return
        from opentelemetry.instrumentation.utils import suppress_instrumentation

        from .models import PerformanceSnapshot

        units = {"memory_usage": "ratio", "cpu_usage": "ratio", "error_rate": "ratio", "hit_rate": "ratio"}
        try:
            with suppress_instrumentation():
                _drop_stale_connection(self.alias)
                PerformanceSnapshot.objects.using(self.alias).bulk_create([
                    PerformanceSnapshot(layer=b.layer, component=b.component, metric_name=b.metric,
                                        metric_value=b.value, unit=units.get(b.metric, ""),
                                        threshold_status=b.severity, metadata={"source": "threshold_monitor"})
                    for b in due
                ])
        except Exception as exc:  # noqa: BLE001 - DB down: the counter still has the breach
            logger.debug("e2e-otel: breach snapshot not written (%s)", exc)
            _close_quietly(self.alias)
            return
        for breach in due:
            self._last_snapshot[breach.metric] = now

    @staticmethod
    def _send_signals(breaches: list[Breach]) -> None:
        if not breaches:
            return
        from .signals import threshold_breached

        for b in breaches:
            try:
                threshold_breached.send_robust(
                    sender=ThresholdMonitor, layer=b.layer, component=b.component, metric=b.metric,
                    value=b.value, severity=b.severity, correlation_id=b.correlation_id)
            except Exception:
                logger.debug("e2e-otel: threshold_breached receivers failed", exc_info=True)


_MONITORS: weakref.WeakSet[ThresholdMonitor] = weakref.WeakSet()


def _restart_monitors_in_child() -> None:
    for monitor in list(_MONITORS):
        monitor._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_restart_monitors_in_child)


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
