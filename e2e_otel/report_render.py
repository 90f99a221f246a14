"""Renderers of a :class:`~e2e_otel.reports.Report`: terminal text, Markdown and JSON.

Kept apart from the queries so each stays small; pure string building, runs on the caller's thread.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict
from datetime import datetime
from typing import Any

from .reports import Report

__all__ = ["FORMATS", "render", "render_json", "render_markdown", "render_text", "report_dict"]

_WORKFLOW_HEADER = ("workflow type", "total", "completed", "failed", "in progress", "failure rate",
                    "p50 ms", "p95 ms")
_STEP_HEADER = ("layer", "component", "operation", "ms", "status", "workflow", "correlation id")
_BREACH_HEADER = ("severity", "layer", "metric", "component", "count", "min", "max", "unit",
                  "latest correlation id")
_ERROR_HEADER = ("occurrences", "error type", "severity", "layer", "component", "category",
                 "last seen", "correlation ids")
_FINDING_HEADER = ("kind", "table", "route", "queries", "max ms", "correlation id", "statement")


def report_dict(report: Report) -> dict[str, Any]:
    """JSON-ready dict (ISO 8601 datetimes)."""
    return _jsonable(asdict(report))


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def render_json(report: Report) -> str:
    return json.dumps(report_dict(report), indent=2, sort_keys=False) + "\n"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _sections(report: Report) -> list[tuple[str, Sequence[str], list[list[str]], str]]:
    """(title, header, rows, text when empty) for every section, shared by text and Markdown."""
    workflows = [[w.workflow_type, str(w.total), str(w.completed), str(w.failed), str(w.in_progress),
                  f"{w.failure_rate:.1%}", _ms(w.p50_ms), _ms(w.p95_ms)] for w in report.workflows]
    steps = [[s.layer, s.component[:60], s.operation[:40], _ms(s.duration_ms), s.status, s.workflow_type[:40],
              s.correlation_id] for rows in report.slowest_steps.values() for s in rows]
    breaches = [[b.severity, b.layer, b.metric_name, b.component[:50] or "-", str(b.count), f"{b.min_value:g}",
                 f"{b.max_value:g}", b.unit or "-", b.latest_correlation_id or "-"] for b in report.breaches]
    errors = [[str(e.occurrences), e.error_type[:50], e.severity, e.layer, e.component[:50] or "-",
               e.category or "-", e.last_seen.isoformat(timespec="seconds"), ", ".join(e.correlation_ids) or "-"]
              for e in report.errors]
    if report.query_findings is None:
        findings: list[list[str]] = []
        no_findings = "(query findings are not stored: E2E_OTEL['RECORDS_ENABLED'] is off)"
    else:
        findings = [[f["kind"], f["table"] or "?", f["route"] or "?", str(f["count"]), _ms(f["max_ms"]),
                     f["correlation_id"], f["statement"][:80]] for f in report.query_findings]
        no_findings = "(none)"
    return [
        ("Workflows by type", _WORKFLOW_HEADER, workflows, "(no workflow sessions)"),
        ("Slowest steps per layer", _STEP_HEADER, steps, "(no steps)"),
        ("Threshold breaches", _BREACH_HEADER, breaches, "(none)"),
        ("Unresolved error groups", _ERROR_HEADER, errors, "(none)"),
        ("Query findings (N+1 / slow SQL)", _FINDING_HEADER, findings, no_findings),
    ]


def _title(report: Report) -> str:
    t = report.totals
    return (f"e2e-otel debugging report {report.since.isoformat(timespec='seconds')} .. "
            f"{report.until.isoformat(timespec='seconds')}: {t.get('workflows', 0)} workflows, "
            f"{t.get('failed', 0)} failed, {t.get('in_progress', 0)} in progress")


def _numeric(text: str) -> bool:
    return text.rstrip("%").replace(".", "", 1).replace("-", "", 1).isdigit()


def _table(header: Sequence[str], rows: list[list[str]]) -> list[str]:
    cells = [list(header), *rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = []
    for n, row in enumerate(cells):
        lines.append("  " + "  ".join(c.rjust(w) if n and _numeric(c) else c.ljust(w)
                                      for c, w in zip(row, widths, strict=False)).rstrip())
        if n == 0:
            lines.append("  " + "  ".join("-" * w for w in widths))
    return lines


def render_text(report: Report) -> str:
    """A terminal report: one aligned table per section."""
    out = [_title(report)]
    for title, header, rows, empty in _sections(report):
        out += ["", title]
        out += _table(header, rows) if rows else [f"  {empty}"]
    if report.query_findings:
        out += ["", "Advice"]
        out += [f"  {f['kind']} on {f['table'] or '?'}: {f['advice']}" for f in report.query_findings[:5]]
    return "\n".join(out) + "\n"


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ") or " "


def render_markdown(report: Report) -> str:
    """GitHub-flavoured Markdown: paste into a ticket or a pull request."""
    out = [f"# {_title(report)}"]
    for title, header, rows, empty in _sections(report):
        out += ["", f"## {title}", ""]
        if not rows:
            out.append(f"_{empty}_")
            continue
        out.append("| " + " | ".join(header) + " |")
        out.append("|" + "|".join("---:" if _numeric(rows[0][i]) else "---" for i in range(len(header))) + "|")
        out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    if report.query_findings:
        out += ["", "### Advice", ""]
        out += [f"- **{f['kind']}** on `{f['table'] or '?'}`: {_md_cell(f['advice'])}"
                for f in report.query_findings[:5]]
    return "\n".join(out) + "\n"


FORMATS: dict[str, Callable[[Report], str]] = {
    "text": render_text, "markdown": render_markdown, "json": render_json,
}


def render(report: Report, fmt: str) -> str:
    """``ValueError`` for an unknown format."""
    try:
        renderer = FORMATS[fmt]
    except KeyError:
        raise ValueError(f"unknown report format {fmt!r}: expected one of {', '.join(FORMATS)}") from None
    return renderer(report)
