"""The summary ``e2e-otel demo`` prints: read back from the records and metrics, never from the driver.

What the driver saw is only used to pick this run's workflows (by correlation id) and to flag
disagreements, so the summary shows what e2e-otel itself recorded. The sections are the debugging
report's (:mod:`e2e_otel.reports`) narrowed to this run's correlation ids. Runs on the CLI's main
thread after ``Runtime.force_flush()``.
"""

from __future__ import annotations

import re
import textwrap
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.error import URLError
from urllib.request import Request, urlopen

from .traffic import WORKFLOW_TYPES, WorkflowRun

_SAMPLE_RE = re.compile(r'^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>[^}]*)\})?\s+(?P<value>\S+)')
_LABEL_RE = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class Links:
    base_url: str
    api_key: str | None
    admin_username: str
    admin_password: str
    customers: Sequence[str]
    customer_password: str
    database: str
    otlp_endpoint: str | None


def parse_prometheus_text(text: str) -> list[tuple[str, dict[str, str], float]]:
    """``(name, labels, value)`` for each sample of a text exposition (enough for our counters)."""
    samples = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE_RE.match(line)
        if match is None:
            continue
        try:
            value = float(match.group("value"))
        except ValueError:
            continue
        samples.append((match.group("name"), dict(_LABEL_RE.findall(match.group("labels") or "")), value))
    return samples


def scrape_metrics(base_url: str, key: str | None = None, timeout: float = 10.0) -> str | None:
    request = Request(base_url.rstrip("/") + "/metrics")
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urlopen(request, timeout=timeout) as response:
            return response.read().decode("utf-8", "replace")
    except (URLError, OSError):
        return None


def wait_for_sessions(correlation_ids: Iterable[str], timeout: float = 15.0) -> int:
    """Flush the runtime and wait until the record writer has stored a session per workflow."""
    from e2e_otel.bootstrap import get_runtime
    from e2e_otel.models import WorkflowSession

    wanted = set(correlation_ids)
    deadline = time.monotonic() + timeout
    found = 0
    while True:
        runtime = get_runtime()
        if runtime is not None:
            runtime.force_flush(timeout=5)
        found = WorkflowSession.objects.filter(correlation_id__in=wanted).exclude(status="in_progress").count()
        if found >= len(wanted) or time.monotonic() >= deadline:
            return found
        time.sleep(0.25)


def connection_vendor() -> str:
    from django.db import connection

    return connection.vendor


def _sqlite_traced() -> bool:
    from e2e_otel.conf import get_config

    return bool(get_config().INSTRUMENT_SQLITE)


def _table(rows: Sequence[Sequence[Any]], header: Sequence[str], indent: str = "  ") -> list[str]:
    cells = [[str(c) for c in header]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = []
    for n, row in enumerate(cells):
        lines.append(indent + "  ".join(c.ljust(w) if i == 0 or not _numeric(c) else c.rjust(w)
                                        for i, (c, w) in enumerate(zip(row, widths, strict=False))).rstrip())
        if n == 0:
            lines.append(indent + "  ".join("-" * w for w in widths))
    return lines


def _numeric(text: str) -> bool:
    return text.replace(".", "", 1).replace("-", "", 1).isdigit()


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def build_summary(runs: Sequence[WorkflowRun], *, started: datetime, elapsed: float, links: Links,
                  metrics_text: str | None) -> str:
    """The sections come from :func:`e2e_otel.reports.build_report` narrowed to this run's correlation
    ids (one implementation); the header, the /metrics counters and the links are the demo's own."""
    from django.utils import timezone

    from e2e_otel.reports import build_report

    report = build_report(since=started, now=timezone.now(), top=3,
                          correlation_ids=[r.correlation_id for r in runs])
    out: list[str] = []
    failed_driver = sum(r.failed for r in runs)
    out.append("")
    out.append(f"e2e-otel demo: {len(runs)} workflows in {elapsed:.1f} s against {links.base_url} "
               f"({links.database}); {failed_driver} failed as seen by the client")

    # --- workflows by type and status
    sessions = report.totals.get("workflows", 0)
    out.append("")
    out.append(f"Workflows by type and status ({sessions} WorkflowSession rows for {len(runs)} workflows)")
    rank = {t: n for n, t in enumerate(WORKFLOW_TYPES)}
    stats = sorted(report.workflows, key=lambda w: (rank.get(w.workflow_type, len(rank)), w.workflow_type))
    rows = [[w.workflow_type, w.completed, w.failed, w.in_progress, _ms(w.p50_ms), _ms(w.p95_ms)] for w in stats]
    out.extend(_table(rows, ["workflow type", "completed", "failed", "in progress", "p50 ms", "p95 ms"])
               if rows else ["  (no workflow sessions recorded: is the record writer running?)"])
    missing = len(runs) - sessions
    if missing > 0:
        out.append(f"  note: {missing} workflow(s) have no session yet (records still queued or dropped)")

    # --- slowest steps per layer
    out.append("")
    out.append("Slowest steps per layer")
    rows = [[s.layer, s.component[:48], s.operation[:40], _ms(s.duration_ms), s.status, s.workflow_type or "?",
             s.correlation_id] for steps in report.slowest_steps.values() for s in steps]
    out.extend(_table(rows, ["layer", "component", "operation", "ms", "status", "workflow", "correlation id"])
               if rows else ["  (no steps recorded)"])

    # --- threshold breaches
    out.append("")
    out.append("Threshold breaches")
    rows = [[b.layer, b.metric_name, b.severity, b.component[:40] or "-", b.count,
             f"{b.min_value:g}..{b.max_value:g} {b.unit}".strip(), b.latest_correlation_id or "-"]
            for b in report.breaches]
    if rows:
        out.extend(_table(rows[:12], ["layer", "metric", "severity", "component", "count", "range",
                                      "latest correlation id"]))
    counters = [(labels, value) for name, labels, value in parse_prometheus_text(metrics_text or "")
                if name == "e2e_otel_threshold_breaches_total" and value > 0]
    if counters:
        out.append("  e2e_otel_threshold_breaches_total (this process, from /metrics):")
        for labels, value in sorted(counters, key=lambda lv: -lv[1]):
            label_text = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
            out.append(f"    {{{label_text}}} {value:g}")
    if not rows and not counters:
        out.append("  (none recorded)")

    # --- query findings (N+1, slow SQL)
    out.append("")
    out.append("Query findings")
    findings = report.query_findings or ()
    grouped: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for finding in findings:
        grouped[(finding["kind"], finding["route"], finding["table"])].append(finding)
    for (kind, route, table), items in sorted(grouped.items(), key=lambda kv: -len(kv[1])):
        worst = max(items, key=lambda f: f["count"])
        out.append(f"  {kind} on {table or '?'} in {route or '?'}: {len(items)} trace(s), up to {worst['count']} "
                   f"queries; e.g. {worst['correlation_id']}")
        out.append(f"    {worst['statement'][:110]}")
        out.append(textwrap.fill(worst["advice"][:600], width=110, initial_indent="    advice: ",
                                 subsequent_indent="            "))
    if report.query_findings is None:
        out.append("  (query analysis is not running in this process)")
    elif not findings and connection_vendor() == "sqlite" and not _sqlite_traced():
        out.append("  (none: SQLite queries are not traced with INSTRUMENT_SQLITE=False)")
    elif not findings:
        out.append("  (none)")

    # --- grouped errors
    out.append("")
    out.append("Grouped errors")
    for error in report.errors[:10]:
        out.append(f"  {error.error_type} x{error.occurrences} ({error.workflow_count} workflow(s) of this run)  "
                   f"[{error.layer}:{error.component}] severity={error.severity} category={error.category or '-'}")
        if error.message:
            out.append(f"    {error.message[:100]}")
        more = " ..." if error.workflow_count > len(error.correlation_ids) else ""
        out.append(f"    correlation ids: {', '.join(error.correlation_ids) or '-'}{more}")
    if not report.errors:
        out.append("  (no errors recorded)")

    # --- where to look next
    base = links.base_url
    out.append("")
    out.append("Where to look next")
    out.append(f"  Admin (workflow waterfalls): {base}/admin/   user {links.admin_username!r}, "
               f"password {links.admin_password!r} (random, printed once)")
    out.append(f"  Shop customers: {', '.join(links.customers)} / password {links.customer_password!r}")
    api = f"{base}/api/v1/debugging"
    out.append(f"  Debugging API (schema: {api}/schema/):")
    out.append(f"    failed checkouts: {api}/workflow-sessions/?workflow_type=checkout&status=failed")
    out.append(f"    one workflow:     {api}/workflow-sessions/<correlation id>/")
    out.append(f"    workflow stats:   {api}/workflow-sessions/stats/")
    out.append(f"    error groups:     {api}/error-logs/summary/")
    out.append(f"    system health:    {api}/system-health/")
    if links.api_key:
        out.append(f"    (send 'Authorization: Bearer {links.api_key}', or log in to the admin first)")
    out.append(f"  Prometheus metrics: {base}/metrics")
    if links.otlp_endpoint:
        out.append(f"  Traces exported over OTLP to {links.otlp_endpoint}")
        out.append("  With the compose stack: Grafana http://localhost:3000  Jaeger http://localhost:16686")
    else:
        out.append("  Traces stayed local (no OTLP endpoint set). Run `docker compose up` and set "
                   "OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4317")
        out.append("  to see them in Grafana http://localhost:3000 and Jaeger http://localhost:16686")
    return "\n".join(out) + "\n"
