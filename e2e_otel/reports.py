"""Debugging reports: what went wrong and what was slow over a time window, read from the record tables.

Pure functions over the span-derived tables (query findings included: every process's
``QueryAnalyzer`` stores them through the record writer), so the CLI (``manage.py debugging_report``),
the API (``reports/``) and the demo summary can share one implementation. Every query is bounded
(top-N, capped duration samples) and the percentiles are computed in Python, so it behaves the same
on MySQL and SQLite. Runs on the caller's thread.

Renderers (text, Markdown, JSON) live in :mod:`e2e_otel.report_render`.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

__all__ = [
    "BreachGroup",
    "ErrorGroup",
    "Report",
    "StepRow",
    "WorkflowTypeStats",
    "build_report",
    "parse_since",
    "percentile",
]

#: Durations fetched per workflow type for p50/p95 (the most recent ones); bounds memory and time.
DURATION_SAMPLE = 5000
MAX_WORKFLOW_TYPES = 50
MAX_GROUPS = 20
_RECENT_IDS = 5
_SINCE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
MAX_SINCE = timedelta(days=3650)


@dataclass(frozen=True)
class WorkflowTypeStats:
    workflow_type: str
    total: int
    completed: int
    failed: int
    in_progress: int
    failure_rate: float  # failed / (completed + failed): in-progress sessions have no outcome yet
    p50_ms: float | None
    p95_ms: float | None
    sampled: int  # how many durations p50/p95 were computed from


@dataclass(frozen=True)
class StepRow:
    layer: str
    component: str
    operation: str
    duration_ms: float
    status: str
    workflow_type: str
    correlation_id: str


@dataclass(frozen=True)
class BreachGroup:
    layer: str
    metric_name: str
    component: str
    severity: str  # warning | critical
    count: int
    min_value: float
    max_value: float
    unit: str
    last_seen: datetime
    latest_correlation_id: str | None


@dataclass(frozen=True)
class ErrorGroup:
    error_type: str
    layer: str
    component: str
    severity: str
    category: str
    occurrences: int
    first_seen: datetime
    last_seen: datetime
    message: str  # scrubbed again and cut short: reports get pasted into tickets
    correlation_ids: tuple[str, ...]  # newest first, at most _RECENT_IDS
    workflow_count: int = 0  # distinct workflows (correlation ids) with this error in the window


@dataclass(frozen=True)
class Report:
    since: datetime
    until: datetime
    workflows: tuple[WorkflowTypeStats, ...]
    slowest_steps: dict[str, tuple[StepRow, ...]]  # layer -> top N, slowest first
    breaches: tuple[BreachGroup, ...]
    errors: tuple[ErrorGroup, ...]
    query_findings: tuple[dict[str, Any], ...] | None  # None: findings are not stored (RECORDS_ENABLED off)
    totals: dict[str, int] = field(default_factory=dict)


def parse_since(text: str) -> timedelta:
    """``"24h"`` → ``timedelta(hours=24)``; units s, m, h, d, w. ``ValueError`` with the value otherwise."""
    match = _SINCE_RE.match(text or "")
    if match is None or float(match.group(1)) <= 0:
        raise ValueError(f"invalid duration {text!r}: expected a positive number and a unit s|m|h|d|w, e.g. 24h")
    try:  # bounded: "now - since" must stay a datetime (1000000d, 99999999999w overflow)
        window = timedelta(**{_UNITS[match.group(2)]: float(match.group(1))})
    except OverflowError:
        window = None
    if window is None or window > MAX_SINCE:
        raise ValueError(f"invalid duration {text!r}: at most {MAX_SINCE.days} days")
    return window


def percentile(values: Sequence[float], pct: float) -> float | None:
    """Nearest-rank percentile (always one of ``values``); ``None`` for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100.0 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def build_report(*, since: timedelta | datetime, now: datetime | None = None, top: int = 5,
                 using: str | None = None, correlation_ids: Collection[str] | None = None) -> Report:
    """The report for ``[now - since, now]`` (or from an absolute ``since``) on database ``using``.

    ``correlation_ids`` narrows it to those workflows (the demo reports on the run it drove): sessions,
    steps, query findings and breach snapshots by their correlation id, error groups that occurred in
    one of them. Snapshots without a correlation id (system gauges) belong to no workflow and stay,
    bounded by the window. ``ValueError`` for an id that is not a UUID/trace id.
    """
    from django.utils import timezone

    from .conf import get_config

    until = now or timezone.now()
    start = until - since if isinstance(since, timedelta) else since
    alias = using or get_config().DATABASE_ALIAS
    ids = None if correlation_ids is None else frozenset(_as_uuid(c) for c in correlation_ids)
    workflows = _workflow_stats(alias, start, until, ids)
    return Report(
        since=start,
        until=until,
        workflows=workflows,
        slowest_steps=_slowest_steps(alias, start, until, top, ids),
        breaches=_breaches(alias, start, until, ids),
        errors=_errors(alias, start, until, ids),
        query_findings=_query_findings(alias, start, until, ids),
        totals={
            "workflows": sum(w.total for w in workflows),
            "failed": sum(w.failed for w in workflows),
            "in_progress": sum(w.in_progress for w in workflows),
        },
    )


def _as_uuid(value: object) -> uuid.UUID:
    try:
        return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
    except ValueError:
        raise ValueError(f"invalid correlation id {value!r}") from None


def _workflow_stats(alias: str, start: datetime, until: datetime,
                    ids: frozenset[uuid.UUID] | None) -> tuple[WorkflowTypeStats, ...]:
    from django.db.models import Count, Q

    from .models import WorkflowSession, WorkflowStatus

    sessions = WorkflowSession.objects.using(alias).filter(start_time__gte=start, start_time__lte=until)
    if ids is not None:
        sessions = sessions.filter(correlation_id__in=ids)
    rows = list(
        sessions.order_by().values("workflow_type").annotate(
            total=Count("id"),
            completed=Count("id", filter=Q(status=WorkflowStatus.COMPLETED)),
            failed=Count("id", filter=Q(status=WorkflowStatus.FAILED)),
            in_progress=Count("id", filter=Q(status=WorkflowStatus.IN_PROGRESS)),
        ).order_by("-total", "workflow_type")[:MAX_WORKFLOW_TYPES]
    )
    stats = []
    for row in rows:
        durations = list(
            sessions.filter(workflow_type=row["workflow_type"], duration_ms__isnull=False)
            .exclude(status=WorkflowStatus.IN_PROGRESS)
            .order_by("-start_time").values_list("duration_ms", flat=True)[:DURATION_SAMPLE]
        )
        finished = row["completed"] + row["failed"]
        stats.append(WorkflowTypeStats(
            workflow_type=row["workflow_type"], total=row["total"], completed=row["completed"],
            failed=row["failed"], in_progress=row["in_progress"],
            failure_rate=(row["failed"] / finished) if finished else 0.0,
            p50_ms=percentile(durations, 50), p95_ms=percentile(durations, 95), sampled=len(durations),
        ))
    return tuple(stats)


def _slowest_steps(alias: str, start: datetime, until: datetime, top: int,
                   ids: frozenset[uuid.UUID] | None) -> dict[str, tuple[StepRow, ...]]:
    from .models import Layer, TraceStep

    steps = TraceStep.objects.using(alias).filter(start_time__gte=start, start_time__lte=until,
                                                  duration_ms__isnull=False)
    if ids is not None:
        steps = steps.filter(correlation_id__in=ids)
    result: dict[str, tuple[StepRow, ...]] = {}
    for layer in Layer.values:
        rows = steps.filter(layer=layer).order_by("-duration_ms", "id").values(
            "component", "operation", "duration_ms", "status", "correlation_id",
            "workflow_session__workflow_type")[:top]
        found = tuple(StepRow(layer=layer, component=r["component"], operation=r["operation"],
                              duration_ms=float(r["duration_ms"]), status=r["status"],
                              workflow_type=r["workflow_session__workflow_type"] or "",
                              correlation_id=str(r["correlation_id"])) for r in rows)
        if found:
            result[layer] = found
    return result


def _breaches(alias: str, start: datetime, until: datetime,
              ids: frozenset[uuid.UUID] | None) -> tuple[BreachGroup, ...]:
    from django.db.models import Count, Max, Min, Q

    from .models import PerformanceSnapshot, ThresholdStatus

    snapshots = PerformanceSnapshot.objects.using(alias).filter(
        timestamp__gte=start, timestamp__lte=until,
        threshold_status__in=[ThresholdStatus.WARNING, ThresholdStatus.CRITICAL])
    if ids is not None:
        snapshots = snapshots.filter(Q(correlation_id__in=ids) | Q(correlation_id__isnull=True))
    rows = list(
        snapshots.order_by().values("layer", "metric_name", "component", "threshold_status", "unit")
        .annotate(count=Count("id"), low=Min("metric_value"), high=Max("metric_value"), last=Max("timestamp"))
        # "critical" sorts before "warning": critical groups first, then the most frequent
        .order_by("threshold_status", "-count", "layer", "metric_name", "component")[:MAX_GROUPS]
    )
    groups = []
    for r in rows:
        latest = (snapshots.filter(layer=r["layer"], metric_name=r["metric_name"], component=r["component"],
                                   threshold_status=r["threshold_status"], correlation_id__isnull=False)
                  .order_by("-timestamp", "-id").values_list("correlation_id", flat=True).first())
        groups.append(BreachGroup(
            layer=r["layer"], metric_name=r["metric_name"], component=r["component"],
            severity=r["threshold_status"], count=r["count"], min_value=float(r["low"]),
            max_value=float(r["high"]), unit=r["unit"], last_seen=r["last"],
            latest_correlation_id=str(latest) if latest else None))
    return tuple(groups)


def _errors(alias: str, start: datetime, until: datetime,
            ids: frozenset[uuid.UUID] | None) -> tuple[ErrorGroup, ...]:
    from django.db.models import Exists, OuterRef, Q

    from .models import ErrorLog, StepStatus, TraceStep
    from .sanitize import Sanitizer

    scrub = _sanitizer() or Sanitizer()
    error_steps = TraceStep.objects.using(alias).filter(status=StepStatus.ERROR, start_time__gte=start,
                                                        start_time__lte=until)
    rows = ErrorLog.objects.using(alias).filter(resolved=False, last_seen__gte=start, last_seen__lte=until)
    if ids is not None:
        error_steps = error_steps.filter(correlation_id__in=ids)
        # an open group's latest occurrence may come from elsewhere: one of its error steps counts too
        rows = rows.filter(Q(correlation_id__in=ids) | Exists(error_steps.filter(
            layer=OuterRef("layer"), component=OuterRef("component"))))
    groups = []
    for error in rows.order_by("-occurrences", "-last_seen", "-id")[:MAX_GROUPS]:
        own = error.correlation_id if error.correlation_id and (ids is None or error.correlation_id in ids) \
            else None
        cids: list[str] = [str(own)] if own else []
        same = error_steps.filter(layer=error.layer, component=error.component)
        recent = same.order_by("-start_time", "-id").values_list("correlation_id", flat=True)[:_RECENT_IDS * 4]
        for cid in recent:
            if str(cid) not in cids and len(cids) < _RECENT_IDS:
                cids.append(str(cid))
        others = same.exclude(correlation_id=own) if own else same
        workflow_count = others.values("correlation_id").distinct().count() + (1 if own else 0)
        message = scrub.scrub_text(" ".join((error.error_message or "").split())[:300])
        groups.append(ErrorGroup(
            error_type=error.error_type, layer=error.layer, component=error.component, severity=error.severity,
            category=error.category, occurrences=error.occurrences, first_seen=error.timestamp,
            last_seen=error.last_seen, message=message[:200], correlation_ids=tuple(cids),
            workflow_count=workflow_count))
    return tuple(groups)


def _sanitizer() -> Any:
    from .bootstrap import get_runtime

    runtime = get_runtime()
    return runtime.sanitizer if runtime is not None else None


def _query_findings(alias: str, start: datetime, until: datetime,
                    ids: frozenset[uuid.UUID] | None) -> tuple[dict[str, Any], ...] | None:
    """Stored findings (every process's) detected in the window, N+1 first, then most repeated and
    slowest; ``None`` when findings are not stored (``RECORDS_ENABLED`` off)."""
    from .conf import get_config
    from .models import FindingKind, QueryFinding

    if not get_config().RECORDS_ENABLED:
        return None
    rows = QueryFinding.objects.using(alias).filter(created_at__gte=start, created_at__lte=until)
    if ids is not None:
        rows = rows.filter(correlation_id__in=ids)
    keep = ("kind", "route", "table", "operation", "count", "total_ms", "max_ms", "correlation_id",
            "statement", "advice")
    found = []
    for kind in (FindingKind.N_PLUS_ONE, FindingKind.SLOW_QUERY):  # (kind, created_at) index, then sort
        found += [row.as_dict() for row in rows.filter(kind=kind).order_by("-count", "-max_ms", "-id")[:MAX_GROUPS]]
    return tuple({k: f[k] for k in keep} for f in found[:MAX_GROUPS])
