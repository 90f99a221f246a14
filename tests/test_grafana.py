"""grafana/: provisioning and dashboards, checked structurally, and every SQL panel run on MariaDB."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from tests.prom import (
    DASHBOARD_DIR,
    PROVISIONING_DIR,
    dashboard_queries,
    dashboards,
    datasource_uid,
    iter_panels,
    load_yaml,
)

EXPECTED_UIDS = {"e2e-health", "e2e-workflows", "e2e-performance", "e2e-errors"}
BUILTIN_DATASOURCES = {"-- Grafana --", "-- Mixed --", "-- Dashboard --"}
_USED_VARIABLE = re.compile(r"\$\{([\w.]+)(?::\w+)?\}|\$([A-Za-z_]\w*)|\[\[(\w+)\]\]")


def provisioned_datasources() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for path in sorted((PROVISIONING_DIR / "datasources").glob("*.y*ml")):
        for ds in load_yaml(path)["datasources"]:
            assert ds["uid"] not in found, f"duplicate data source uid {ds['uid']}"
            found[ds["uid"]] = ds
    return found


def strings(node: Any) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for value in node.values() for s in strings(value)]
    if isinstance(node, list):
        return [s for value in node for s in strings(value)]
    return []


def datasource_refs(node: Any) -> list[str]:
    """Every ``datasource`` reference anywhere in a dashboard (panels, targets, variables, annotations)."""
    refs: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "datasource" and value is not None:
                uid = datasource_uid(value)
                assert uid, f"datasource without uid: {value!r}"
                refs.append(uid)
            else:
                refs.extend(datasource_refs(value))
    elif isinstance(node, list):
        for value in node:
            refs.extend(datasource_refs(value))
    return refs


# --- provisioning -----------------------------------------------------------------------------------

def test_datasources_have_the_stable_uids() -> None:
    sources = provisioned_datasources()
    assert {"prometheus", "jaeger", "mysql"} <= set(sources)
    assert sources["prometheus"]["type"] == "prometheus" and sources["prometheus"]["url"] == "http://prometheus:9090"
    assert sources["jaeger"]["type"] == "jaeger" and sources["jaeger"]["url"] == "http://jaeger:16686"
    mysql = sources["mysql"]
    assert mysql["type"] == "mysql" and mysql["url"] == "mysql:3306"
    assert mysql["user"] == "grafana_reader"
    assert mysql["jsonData"]["database"] == "e2e_otel"
    # no literal password in the repository: Grafana expands it from the environment
    assert mysql["secureJsonData"]["password"].startswith("$")
    assert sum(1 for ds in sources.values() if ds.get("isDefault")) == 1


def test_dashboard_provider_points_at_the_mounted_folder() -> None:
    (provider,) = load_yaml(PROVISIONING_DIR / "dashboards" / "e2e-otel.yml")["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards/e2e-otel"


def test_mysql_reader_is_select_only() -> None:
    script = (PROVISIONING_DIR.parent / "mysql-init" / "grafana-reader.sh").read_text(encoding="utf-8")
    grants = re.findall(r"GRANT\s+(.+?)\s+ON", script)
    assert grants == ["SELECT"]


# --- dashboards -------------------------------------------------------------------------------------

def test_dashboards_are_valid_json_with_unique_stable_uids() -> None:
    found = dashboards()
    uids = [d["uid"] for d in found.values()]
    assert len(uids) == len(set(uids))
    assert set(uids) == EXPECTED_UIDS
    for path, dash in found.items():
        assert path.stem == dash["uid"], f"{path.name}: file named after its uid"
        assert dash["refresh"] in ("5s", "10s")
        assert dash["title"].startswith("e2e-otel / ")
        ids = [p["id"] for p in iter_panels(dash["panels"])]
        assert len(ids) == len(set(ids)), f"{path.name}: duplicate panel ids"
        assert "id" not in dash or dash["id"] is None, "provisioned dashboards must not pin a database id"


@pytest.mark.parametrize("path", sorted(DASHBOARD_DIR.glob("*.json")), ids=lambda p: p.stem)
def test_every_datasource_reference_is_provisioned(path) -> None:  # type: ignore[no-untyped-def]
    dash = dashboards()[path]
    known = set(provisioned_datasources()) | BUILTIN_DATASOURCES
    refs = datasource_refs(dash)
    assert refs
    assert set(refs) <= known, set(refs) - known
    for panel in iter_panels(dash["panels"]):
        if panel["type"] != "row":
            assert panel.get("datasource"), f"{panel['title']}: panel without data source"
            assert panel["targets"], f"{panel['title']}: panel without queries"


@pytest.mark.parametrize("path", sorted(DASHBOARD_DIR.glob("*.json")), ids=lambda p: p.stem)
def test_every_variable_used_is_defined(path) -> None:  # type: ignore[no-untyped-def]
    dash = dashboards()[path]
    defined = {v["name"] for v in dash["templating"]["list"]}
    assert {"service", "environment", "workflow_type"} <= defined
    used = set()
    for text in strings({k: v for k, v in dash.items() if k != "templating"}) + strings(dash["templating"]):
        for match in _USED_VARIABLE.finditer(text):
            name = next(g for g in match.groups() if g)
            if not name.startswith("__"):
                used.add(name.split(".")[0])
    assert used - defined == set(), f"undefined variables: {used - defined}"
    # every repeat refers to a multi-value variable
    for panel in iter_panels(dash["panels"]):
        if panel.get("repeat"):
            (var,) = [v for v in dash["templating"]["list"] if v["name"] == panel["repeat"]]
            assert var.get("multi") or var.get("includeAll")


@pytest.mark.parametrize("path", sorted(DASHBOARD_DIR.glob("*.json")), ids=lambda p: p.stem)
def test_grid_positions_fit_and_do_not_overlap(path) -> None:  # type: ignore[no-untyped-def]
    dash = dashboards()[path]
    cells: dict[tuple[int, int], str] = {}
    for panel in iter_panels(dash["panels"]):
        pos = panel["gridPos"]
        assert pos["w"] >= 1 and pos["h"] >= 1 and pos["x"] >= 0 and pos["y"] >= 0, panel["title"]
        assert pos["x"] + pos["w"] <= 24, f"{panel['title']}: wider than the 24-column grid"
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


def test_correlation_ids_link_to_jaeger() -> None:
    """Every SQL table that shows a trace_id links it to the Jaeger trace view."""
    checked = 0
    for dash in dashboards().values():
        for panel in iter_panels(dash["panels"]):
            sql = " ".join(t.get("rawSql", "") for t in panel.get("targets", []))
            if '"trace_id"' not in sql:
                continue
            links = [
                link["url"]
                for override in panel["fieldConfig"]["overrides"]
                if override["matcher"] == {"id": "byName", "options": "trace_id"}
                for prop in override["properties"] if prop["id"] == "links"
                for link in prop["value"]
            ]
            assert links == ["http://localhost:16686/trace/${__value.raw}"], panel["title"]
            checked += 1
    assert checked >= 3


def test_performance_dashboard_draws_threshold_lines_and_quantiles() -> None:
    (perf,) = [d for d in dashboards().values() if d["uid"] == "e2e-performance"]
    exprs = [t["expr"] for p in iter_panels(perf["panels"]) for t in p.get("targets", [])]
    for q in ("0.5", "0.95", "0.99"):
        assert any(f"histogram_quantile({q}," in e and "e2e_otel_step_duration_seconds_bucket" in e for e in exprs)
    for severity in ("warning", "critical"):
        assert any(f'e2e_otel_threshold_value{{severity="{severity}"' in e for e in exprs)


# --- SQL panels on the migrated schema ----------------------------------------------------------------

def sql_queries() -> list:  # type: ignore[type-arg]
    return [q for q in dashboard_queries() if q.datasource == "mysql"]


def render_sql(text: str, start: str, end: str) -> str:
    """Expand the Grafana macros and variables the panels use, as Grafana does for MySQL."""
    text = re.sub(r"\$__timeFilter\(([\w.]+)\)", rf"\1 BETWEEN '{start}' AND '{end}'", text)
    text = text.replace("$workflow_type", "'checkout','browse'").replace("$slow_ms", "1000")
    assert "$" not in text, f"unexpanded macro or variable in {text!r}"
    return text


@pytest.fixture
def seeded(db):  # type: ignore[no-untyped-def]
    from e2e_otel.models import ErrorLog, TraceStep, WorkflowSession

    now = timezone.now()
    failed = WorkflowSession.objects.create(
        correlation_id=uuid.uuid4(), workflow_type="checkout", status="failed", start_time=now - timedelta(minutes=3),
        end_time=now - timedelta(minutes=2), duration_ms=350.0, step_count=2, error_count=1)
    slow = WorkflowSession.objects.create(
        correlation_id=uuid.uuid4(), workflow_type="browse", status="completed", start_time=now - timedelta(minutes=4),
        duration_ms=4200.0, step_count=1)
    WorkflowSession.objects.create(  # neither failed nor slow: not listed
        correlation_id=uuid.uuid4(), workflow_type="checkout", status="completed",
        start_time=now - timedelta(minutes=1), duration_ms=20.0)
    TraceStep.objects.create(
        workflow_session=failed, correlation_id=failed.correlation_id, span_id="a" * 16, layer="database",
        component="shop_order", operation="INSERT", start_time=now - timedelta(minutes=3), duration_ms=12.0,
        status="error")
    ErrorLog.objects.create(
        correlation_id=failed.correlation_id, layer="api", component="POST /checkout/", error_type="PaymentDeclined",
        error_message="card declined", fingerprint="f" * 64, occurrences=3, resolved=False,
        last_seen=now - timedelta(minutes=5))
    ErrorLog.objects.create(
        correlation_id=slow.correlation_id, layer="database", error_type="OperationalError", fingerprint="e" * 64,
        resolved=True, last_seen=now - timedelta(minutes=1))
    return {"failed": failed, "slow": slow, "start": (now - timedelta(hours=1)).strftime("%Y-%m-%d %H:%M:%S"),
            "end": (now + timedelta(minutes=1)).strftime("%Y-%m-%d %H:%M:%S")}


def run_sql(text: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    with connection.cursor() as cursor:
        cursor.execute(text)
        columns = [c[0] for c in cursor.description]
        return columns, list(cursor.fetchall())


@pytest.mark.mysql
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("query", sql_queries(), ids=lambda q: f"{q.dashboard}:{q.panel}")
def test_sql_panel_runs_on_mariadb_and_returns_the_seeded_rows(query, seeded) -> None:  # type: ignore[no-untyped-def]
    assert connection.vendor == "mysql"
    columns, rows = run_sql(render_sql(query.text, seeded["start"], seeded["end"]))
    assert rows, f"no rows from {query}"
    if "trace_id" in columns:
        ids = {row[columns.index("trace_id")] for row in rows}
        assert ids <= {seeded["failed"].correlation_id.hex, seeded["slow"].correlation_id.hex}
        assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids), ids


@pytest.mark.mysql
@pytest.mark.django_db(transaction=True)
def test_failed_or_slow_sessions_table_lists_exactly_those(seeded) -> None:  # type: ignore[no-untyped-def]
    (query,) = [q for q in sql_queries() if q.panel == "Failed or slow workflow sessions"]
    columns, rows = run_sql(render_sql(query.text, seeded["start"], seeded["end"]))
    listed = {(r[columns.index("workflow")], r[columns.index("status")], r[columns.index("trace_id")]) for r in rows}
    assert listed == {("checkout", "failed", seeded["failed"].correlation_id.hex),
                      ("browse", "completed", seeded["slow"].correlation_id.hex)}


@pytest.mark.mysql
@pytest.mark.django_db(transaction=True)
def test_error_groups_list_unresolved_first(seeded) -> None:  # type: ignore[no-untyped-def]
    (query,) = [q for q in sql_queries() if q.panel == "Error groups: unresolved first"]
    columns, rows = run_sql(render_sql(query.text, seeded["start"], seeded["end"]))
    states = [r[columns.index("state")] for r in rows]
    # the open group was last seen earlier than the resolved one, yet comes first
    assert states == ["open", "resolved"]
    assert rows[0][columns.index("occurrences")] == 3
