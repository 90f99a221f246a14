"""Threshold rules: units, the immutable ``RuleSet`` cache and its loader from ``PerformanceThreshold``.

The rest of the threshold machinery lives next door, one job per module: ``windows.py`` (sliding
ratio windows), ``evaluator.py`` (``ThresholdEvaluator``, the span processor, and
``build_metrics_processor``) and ``monitor.py`` (``ThresholdMonitor``, the background thread).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .defaults import DEFAULT_THRESHOLDS

logger = logging.getLogger(__name__)


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
    """One threshold in base units. ``direction`` "below" means falling values are bad. Immutable,
    so any thread may read it."""

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


@dataclass(frozen=True)
class Breach:
    """One threshold breach, queued by the derive thread or found by the monitor thread."""

    layer: str
    component: str
    metric: str
    value: float
    severity: str
    correlation_id: str | None


class RuleSet:
    """An immutable set of rules; a component-specific rule wins over the layer-wide one.

    Built on the monitor thread and swapped in whole, so the derive thread reads it without a lock.
    """

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
            drop_stale_connection(alias)
            rows = list(PerformanceThreshold.objects.using(alias).values_list(
                "layer", "metric_name", "component", "warning_threshold", "critical_threshold", "direction",
                "unit", "enabled"))
    except Exception as exc:  # DB down or not migrated: keep alerting on the defaults
        logger.debug("e2e-otel: threshold rules unavailable (%s); using defaults", exc)
        close_quietly(alias)
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


def drop_stale_connection(alias: str) -> None:
    """The monitor thread keeps its connection between rounds; drop it when the server closed it."""
    from django.db import connections

    connection = connections[alias]
    if not connection.in_atomic_block:
        connection.close_if_unusable_or_obsolete()


def close_quietly(alias: str) -> None:
    try:
        from django.db import connections

        connections[alias].close()
    except Exception:
        logger.debug("e2e-otel: closing the monitor's connection failed", exc_info=True)
