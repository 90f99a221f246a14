"""Seed defaults: the threshold table and the debugging configurations.

``setup_debugging_defaults`` writes these rows; the threshold evaluator also falls back to them when
the table is empty, so a fresh install alerts sensibly before anyone runs the command.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ThresholdDefault:
    metric_name: str
    layer: str
    warning: float
    critical: float
    direction: str  # "above" | "below"
    unit: str
    description: str


#: metric names are the PerformanceThreshold.metric_name values; units as stored in the table.
DEFAULT_THRESHOLDS: tuple[ThresholdDefault, ...] = (
    ThresholdDefault("response_time", "api", 500, 2000, "above", "ms", "API response time"),
    ThresholdDefault("query_time", "database", 100, 500, "above", "ms", "Database query time"),
    ThresholdDefault("render_time", "frontend", 200, 1000, "above", "ms", "Frontend operation time"),
    ThresholdDefault("memory_usage", "system", 80, 95, "above", "percent", "System memory in use"),
    ThresholdDefault("cpu_usage", "system", 70, 90, "above", "percent", "System CPU in use"),
    ThresholdDefault("error_rate", "api", 5, 10, "above", "percent", "API 5xx/exception rate (sliding window)"),
    ThresholdDefault("hit_rate", "cache", 80, 60, "below", "percent", "Cache hit rate (falling is bad)"),
)

#: Step-duration metric name per layer: a span on that layer is compared with this rule.
DURATION_METRIC_BY_LAYER: dict[str, str] = {
    "api": "response_time",
    "database": "query_time",
    "frontend": "render_time",
}

DEFAULT_CONFIGURATIONS: dict[str, dict[str, object]] = {
    "workflow_tracking": {"description": "Derive workflow records from spans", "config_data": {}},
    "query_analysis": {
        "description": "N+1 and slow-query detection",
        "config_data": {"slow_query_ms": 100, "n_plus_one_threshold": 5},
    },
    "frontend_ingestion": {"description": "Accept browser spans on the ingestion endpoint", "config_data": {}},
    "threshold_alerts": {"description": "Evaluate PerformanceThreshold rules", "config_data": {}},
}
