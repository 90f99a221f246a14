"""``e2e-otel demo`` end to end on SQLite: the CLI in a subprocess, its output and its records.

Also unit tests of the demo's own pieces (faults schedule, DATABASE_URL parsing, summary parsing).
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from e2e_otel.demo.databases import database_from_url
from e2e_otel.demo.shop.faults import RateSchedule, parse_faults
from e2e_otel.demo.summary import parse_prometheus_text
from e2e_otel.demo.traffic import WORKFLOW_TYPES, otlp_payload

REPO = Path(__file__).resolve().parent.parent


def demo_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OTEL_", "E2E_OTEL_", "E2E_DEMO_", "DJANGO_")) and k != "DATABASE_URL"}
    env.update(PYTHONUNBUFFERED="1", XDG_CACHE_HOME=str(tmp_path / "cache"), HOME=str(tmp_path))
    return env


# --- the command, for real -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    tmp = tmp_path_factory.mktemp("demo")
    db = tmp / "demo.sqlite3"
    result = subprocess.run(
        [sys.executable, "-m", "e2e_otel", "demo", "--workflows", "12", "--no-serve", "--port", "0",
         "--db", str(db)],
        check=False, cwd=tmp, env=demo_env(tmp), capture_output=True, text=True, timeout=120,
    )
    return result, db


@pytest.mark.slow
def test_demo_exits_zero_and_prints_every_workflow_type(demo_run) -> None:  # type: ignore[no-untyped-def]
    result, _ = demo_run
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "Demo shop listening on http://127.0.0.1:" in out
    table = out.split("Workflows by type and status", 1)[1].split("Slowest steps per layer", 1)[0]
    rows = {line.split()[0]: line.split()[1:] for line in table.splitlines()[3:] if line.strip()}
    assert set(WORKFLOW_TYPES) <= set(rows), table
    completed, failed, in_progress = (int(x) for x in rows["checkout"][:3])
    assert failed >= 1 and completed >= 1 and in_progress == 0, table
    for wtype in ("login", "product_fetch", "cart_update"):
        assert int(rows[wtype][0]) == 3 and int(rows[wtype][1]) == 0, table
    assert "12 WorkflowSession rows for 12 workflows" in out


@pytest.mark.slow
def test_demo_summary_shows_error_group_breach_and_links(demo_run) -> None:  # type: ignore[no-untyped-def]
    result, _ = demo_run
    out = result.stdout
    errors = out.split("Grouped errors", 1)[1].split("Where to look next", 1)[0]
    match = re.search(r"PaymentDeclined x(\d+) \((\d+) workflow\(s\) of this run\)\s+\[external:", errors)
    assert match and int(match.group(1)) == int(match.group(2)) >= 1, errors
    ids = re.findall(r"correlation ids: (.*)", errors)
    assert ids and re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
                                ids[0].split(",")[0].strip()), errors
    breaches = out.split("Threshold breaches", 1)[1].split("Query findings", 1)[0]
    assert re.search(r'\{layer="api",metric="response_time",severity="(warning|critical)"\} [1-9]', breaches), breaches
    findings = out.split("Query findings", 1)[1].split("Grouped errors", 1)[0]
    assert re.search(r"n_plus_one on shop_category in api/shop/products/: [1-9]", findings), findings
    assert "/admin/" in out and "/metrics" in out and "/api/v1/debugging/" in out
    assert "http://localhost:16686" in out and "Traces stayed local" in out


@pytest.mark.slow
def test_demo_records_agree_with_the_summary(demo_run) -> None:  # type: ignore[no-untyped-def]
    result, db = demo_run
    assert result.returncode == 0
    with sqlite3.connect(db) as conn:
        by_type = dict(conn.execute(
            "SELECT workflow_type, COUNT(*) FROM debugging_workflow_session GROUP BY workflow_type").fetchall())
        failed = conn.execute("SELECT correlation_id FROM debugging_workflow_session "
                              "WHERE workflow_type='checkout' AND status='failed'").fetchall()
        layers = {row[0] for row in conn.execute("SELECT DISTINCT layer FROM debugging_trace_step")}
        error = conn.execute("SELECT error_type, occurrences FROM debugging_error_log "
                             "WHERE error_type LIKE '%PaymentDeclined'").fetchone()
        slow_ok = conn.execute(
            "SELECT MAX(s.duration_ms) FROM debugging_trace_step s JOIN debugging_workflow_session w "
            "ON s.workflow_session_id = w.id WHERE w.workflow_type = 'checkout' AND w.status = 'completed' "
            "AND s.layer = 'api'").fetchone()[0]
        orders = conn.execute("SELECT COUNT(*) FROM shop_order").fetchone()[0]
        stock_sold = conn.execute("SELECT SUM(quantity) FROM shop_orderitem").fetchone()[0] or 0
        stock_left = conn.execute("SELECT SUM(stock) FROM shop_product").fetchone()[0]
    # Exactly the driven workflows: the ingestion POSTs and the /metrics scrape are not workflows.
    assert by_type == {t: 3 for t in WORKFLOW_TYPES}
    assert failed and error is not None and error[1] == len(failed)
    assert {"frontend", "api", "database", "external", "internal"} <= layers
    assert slow_ok >= 600  # the slow-checkout fault hit a checkout that went on to succeed
    assert orders == 3 - len(failed)  # a declined payment rolls the order back ...
    assert stock_left == 24 * 100_000 - stock_sold  # ... and its stock reservation


@pytest.mark.slow
def test_demo_exports_to_otlp_only_when_an_endpoint_is_set(tmp_path: Path, otlp_receiver) -> None:  # type: ignore[no-untyped-def]
    env = demo_env(tmp_path)
    env["E2E_OTEL_OTLP_ENDPOINT"] = otlp_receiver.grpc_endpoint
    result = subprocess.run(
        [sys.executable, "-m", "e2e_otel", "demo", "--workflows", "4", "--no-serve", "--port", "0",
         "--db", str(tmp_path / "otlp.sqlite3")],
        check=False, env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"Traces exported over OTLP to {otlp_receiver.grpc_endpoint}" in result.stdout
    # The process flushed on exit: each workflow's browser and server spans arrived as one trace.
    roots = [s for s in otlp_receiver.spans if s.is_root and s.name in (
        "submit login form", "open catalogue", "click add to cart", "click checkout")]
    assert len(roots) == 4
    for root in roots:
        kinds = {s.kind_name for s in otlp_receiver.spans_for_trace(root.trace_id)}
        assert {"SPAN_KIND_SERVER", "SPAN_KIND_CLIENT"} <= kinds
    statements = [s.attributes["db.statement"] for s in otlp_receiver.spans if "db.statement" in s.attributes]
    assert statements and not any("do_not_honor" in text or "alice" in text for text in statements)


@pytest.mark.slow
def test_demo_refuses_bad_options(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "e2e_otel", "demo", "--faults", "gremlins", "--no-serve"],
                            check=False, env=demo_env(tmp_path), capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "unknown fault 'gremlins'" in result.stderr


# --- pieces ---------------------------------------------------------------------------------------------


def test_rate_schedule_is_deterministic_and_early() -> None:
    schedule = RateSchedule(0.25)
    fired = [n for n in range(1, 13) if schedule.fire()]
    assert fired == [2, 6, 10]
    slow = RateSchedule(0.34, phase=0.0)
    assert [n for n in range(1, 13) if slow.fire()] == [3, 6, 9, 12]
    always = RateSchedule(1.0)
    assert all(always.fire() for _ in range(5))
    never = RateSchedule(0.0)
    assert not any(never.fire() for _ in range(5))
    with pytest.raises(ValueError):
        RateSchedule(1.5)


def test_parse_faults() -> None:
    faults = parse_faults("n_plus_one,payment_failure=0.5")
    assert faults.n_plus_one and not faults.invalid_payload and faults.slow_checkout is None
    assert faults.payment_failure is not None and faults.payment_failure.rate == 0.5
    assert parse_faults("none").enabled == ()
    assert len(parse_faults("all").enabled) == 4
    with pytest.raises(ValueError, match="takes no rate"):
        parse_faults("n_plus_one=0.3")


def test_database_url() -> None:
    db = database_from_url("mysql://shop:p%40ss@db.example:3307/shop_demo")
    assert (db["ENGINE"], db["NAME"], db["USER"], db["PASSWORD"], db["HOST"], db["PORT"]) == (
        "django.db.backends.mysql", "shop_demo", "shop", "p@ss", "db.example", "3307")
    with pytest.raises(ImproperlyConfigured):
        database_from_url("postgres://x@y/z")
    with pytest.raises(ImproperlyConfigured):
        database_from_url("mysql://root@localhost/")


def test_prometheus_text_parsing() -> None:
    text = ('# HELP x\ne2e_otel_threshold_breaches_total{layer="api",metric="response_time",severity="warning"} 3.0\n'
            'e2e_otel_build_info{version="0.1.0"} 1\n')
    samples = parse_prometheus_text(text)
    assert samples[0] == ("e2e_otel_threshold_breaches_total",
                          {"layer": "api", "metric": "response_time", "severity": "warning"}, 3.0)


def test_frontend_payload_is_valid_otlp_json() -> None:
    from e2e_otel.demo.traffic import _Span
    from e2e_otel.otlp_decode import decode_json, to_readable_spans

    root = _Span("0af7651916cd43dd8448eb211c80319c", "click checkout", None, 1, "cart page")
    child = _Span(root.trace_id, "HTTP POST", root.span_id, 3, "cart page", {"http.request.method": "POST"})
    child.end()
    root.end()
    root.error = "POST /api/shop/checkout/ answered 502"
    request = decode_json(json.dumps(otlp_payload([root, child])).encode())
    names = {s.name: s for s in to_readable_spans(request).spans}
    assert set(names) == {"click checkout", "HTTP POST"}
    assert names["HTTP POST"].parent.span_id == int(root.span_id, 16)
    assert names["click checkout"].attributes["e2e.layer"] == "frontend"
    assert not names["click checkout"].status.is_ok
