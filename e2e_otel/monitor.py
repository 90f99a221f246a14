"""``ThresholdMonitor``: the one background thread per process that reloads threshold rules, samples
memory/CPU, evaluates the windowed ratios, sends ``threshold_breached`` signals and writes breach
snapshots. It is the only part of the threshold machinery that touches the database."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import TYPE_CHECKING

from . import forksafe
from .metrics import get_metrics, multiprocess_dir, sync_runtime_stats
from .thresholds import Breach, RuleSet, close_quietly, drop_stale_connection, load_rules

if TYPE_CHECKING:
    from .evaluator import ThresholdEvaluator

logger = logging.getLogger(__name__)

#: Ratios are only compared with their rules once the window holds this many events, so one failed
#: request out of one does not page anybody.
MIN_WINDOW_EVENTS = 10
SAMPLE_INTERVAL = 5.0
#: At most one PerformanceSnapshot per metric per this many seconds while it stays in breach.
SNAPSHOT_MIN_INTERVAL = 60.0


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
        forksafe.register(self)  # after the evaluator and metrics: they are fresh when the thread restarts

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
        found.extend(self.evaluator.drain_pending())
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
            with contextlib.suppress(KeyError):
                gauge.remove(*labels)  # single-process only: multiprocess files keep the last value
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
                drop_stale_connection(self.alias)
                PerformanceSnapshot.objects.using(self.alias).bulk_create([
                    PerformanceSnapshot(layer=b.layer, component=b.component, metric_name=b.metric,
                                        metric_value=b.value, unit=units.get(b.metric, ""),
                                        threshold_status=b.severity, metadata={"source": "threshold_monitor"})
                    for b in due
                ])
        except Exception as exc:  # DB down: the counter still has the breach
            logger.debug("e2e-otel: breach snapshot not written (%s)", exc)
            close_quietly(self.alias)
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
