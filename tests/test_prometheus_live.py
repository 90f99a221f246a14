"""Every PromQL expression shipped (alert rules and dashboards) against a real Prometheus scraping a real
2-worker gunicorn app.

Setup (once for the module, < 60 s): the seed PerformanceThreshold rows, two of them lowered so the test
traffic breaches each latency threshold at both severities (api 300/550 ms, database 0.01/2 ms; frontend
keeps its 200/1000 ms default); gunicorn with 2 workers in prometheus_client multiprocess mode, exporting spans over
OTLP to a real receiver, with a 4-slot record queue so bursts drop records; Prometheus scraping ``/metrics``
every second with the ``service``/``environment`` target labels of prometheus.yml. Traffic: ok views
(/ping/, /items/, /raw-sql/), slow ones (/slow/ 0.35 s and 0.6 s), failing ones (/fail/), browser
spans through the ingestion endpoint (frontend layer, 50/300/1500 ms), concurrent bursts.

Then each dashboard expression (variables on "All" = ``.*``, ``$__rate_interval`` = 1m, ``$__range``
= 5m) and each operand of each alert expression (``A > B and C > 0.1`` → A, B, C: the value
compared and the limit when it is a query, see ``tests.prom.split_alert_expr``) must parse and return at
least one series, and every metric any of them reads must have data.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from e2e_otel.defaults import DEFAULT_THRESHOLDS
from e2e_otel.testing.otlp_receiver import OTLPReceiver
from tests.prom import (
    RULES_FILE,
    PrometheusServer,
    alert_rules,
    dashboard_promql,
    has_prometheus,
    metric_names,
    split_alert_expr,
)
from tests.servers import ServerProcess, gunicorn, subprocess_env

pytestmark = [
    pytest.mark.mysql,
    pytest.mark.slow,
    pytest.mark.prometheus,
    # the marker makes pytest-django create the test database; the rows this module needs are written
    # (committed) by the module fixture, before any per-test transaction, and flushed at its end
    pytest.mark.django_db,
    pytest.mark.skipif(not has_prometheus(), reason="prometheus/promtool not installed"),
]

SERVICE, ENVIRONMENT = "e2e-otel-live", "testing"
INGEST_URL = "/api/v1/debugging/otlp/v1/traces"
THRESHOLDS = [  # (metric, layer, warning, critical) in ms, as stored in the table
    ("response_time", "api", 300, 550),
    ("query_time", "database", 0.01, 2),
]

RULE_OPERANDS = [(rule["alert"], operand) for rule in alert_rules() for operand in split_alert_expr(rule["expr"])]
DASHBOARD_EXPRS = dashboard_promql()
ALL_METRICS = sorted(set().union(*(metric_names(e) for _, e in RULE_OPERANDS),
                                 *(metric_names(e) for _, e in DASHBOARD_EXPRS)))


def _browser_spans_json(durations_ms: list[int]) -> bytes:
    now = time.time_ns()
    spans = []
    for duration in durations_ms:
        spans.append({
            "traceId": f"{random.getrandbits(128):032x}", "spanId": f"{random.getrandbits(64):016x}",
            "name": "documentLoad", "kind": 1,
            "startTimeUnixNano": str(now - duration * 1_000_000), "endTimeUnixNano": str(now),
        })
    return json.dumps({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "shop-web"}}]},
        "scopeSpans": [{"scope": {"name": "@opentelemetry/instrumentation-document-load"}, "spans": spans}],
    }]}).encode()


def _post(server: ServerProcess, path: str, body: bytes, headers: dict[str, str]) -> int:
    request = urllib.request.Request(server.base_url + path, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _drive_traffic(server: ServerProcess) -> None:
    ok = ["/ping/", "/items/", "/raw-sql/", "/items/1/"]
    slow = ["/slow/?seconds=0.35", "/slow/?seconds=0.6"] + ["/slow-sql/?seconds=0.01"] * 4
    statuses: dict[str, set[int]] = {}

    def hit(path: str) -> None:
        status, _, _ = server.get(path)
        statuses.setdefault(path.split("?")[0], set()).add(status)

    with ThreadPoolExecutor(max_workers=8) as pool:
        for _ in range(3):  # bursts: 4-slot record queue overflows → records_dropped_total
            list(pool.map(hit, ok * 6 + ["/fail/"] * 3 + slow))
            status = _post(server, INGEST_URL, _browser_spans_json([50, 300, 1500]),
                           {"Content-Type": "application/json", "Origin": "http://localhost:3000",
                            "X-E2E-Ingest-Key": "test-ingest-key"})
            assert status == 200, f"ingestion answered {status}:\n{server.logs()[-3000:]}"
            time.sleep(1.0)
    assert statuses["/ping/"] == {200} and statuses["/fail/"] == {500}, statuses


@pytest.fixture(scope="module")
def prometheus(django_db_setup, django_db_blocker) -> Iterator[PrometheusServer]:  # type: ignore[no-untyped-def]
    from django.core.management import call_command
    from django.db import connection

    from e2e_otel.models import PerformanceThreshold

    with django_db_blocker.unblock():
        if connection.vendor != "mysql":
            pytest.skip("needs MariaDB: the app subprocess shares the test database")
        # the whole seed table, as setup_debugging_defaults writes it (rows replace the defaults, they
        # are not merged with them), with the two latency rules lowered
        lowered = {(layer, metric): (warning, critical) for metric, layer, warning, critical in THRESHOLDS}
        for default in DEFAULT_THRESHOLDS:
            warning, critical = lowered.get((default.layer, default.metric_name), (default.warning, default.critical))
            PerformanceThreshold.objects.update_or_create(
                metric_name=default.metric_name, layer=default.layer, component="",
                defaults={"warning_threshold": warning, "critical_threshold": critical, "unit": default.unit,
                          "direction": default.direction})
        database = connection.settings_dict["NAME"]
    receiver = OTLPReceiver().start()
    multiproc_dir = tempfile.mkdtemp(prefix="e2e-prom-multiproc-")
    conf = os.path.join(multiproc_dir, "gunicorn.conf.py")
    env = subprocess_env({
        "DJANGO_SETTINGS_MODULE": "tests.settings_export",
        "E2E_MYSQL_DATABASE": database,
        "E2E_SERVICE_NAME": SERVICE,
        "E2E_TEST_OTEL_OVERRIDES": json.dumps({"RECORD_QUEUE_SIZE": 4, "THRESHOLD_REFRESH_INTERVAL": 1}),
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.grpc_endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        "PROMETHEUS_MULTIPROC_DIR": os.path.join(multiproc_dir, "metrics"),
    })
    server = gunicorn(env, workers=2)
    server.argv += ["-c", conf]
    try:
        with open(conf, "w", encoding="utf-8") as fh:
            fh.write("from e2e_otel.gunicorn import child_exit, on_starting  # noqa: F401\n")
        with server:
            config = {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "scrape_configs": [{
                    "job_name": "e2e-otel", "metrics_path": "/metrics",
                    "static_configs": [{"targets": [f"127.0.0.1:{server.port}"],
                                        "labels": {"service": SERVICE, "environment": ENVIRONMENT}}],
                }],
            }
            with PrometheusServer(config, rule_files=[RULES_FILE]) as prom:
                for path in ("/ping/", "/items/"):  # warm both workers up; thresholds load within 1 s
                    for _ in range(4):
                        server.get(path)
                time.sleep(2.0)
                _drive_traffic(server)
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline and _missing_metrics(prom):
                    server.get("/ping/")
                    time.sleep(1.0)
                prom.app_logs = server.logs  # type: ignore[attr-defined]
                yield prom
    finally:
        receiver.stop()
        with django_db_blocker.unblock():
            call_command("flush", interactive=False, verbosity=0)
        _rmtree(multiproc_dir)


def _rmtree(path: str) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def _missing_metrics(prom: PrometheusServer) -> list[str]:
    return [name for name in ALL_METRICS if not _series(prom, f'group({{__name__="{name}"}})')]


def _series(prom: PrometheusServer, expr: str) -> list[dict[str, Any]]:
    answer = prom.query(expr)
    assert answer["status"] == "success", f"{expr}\n→ {answer.get('errorType')}: {answer.get('error')}"
    return answer["data"]["result"]


def test_the_app_is_scraped_with_target_labels(prometheus: PrometheusServer) -> None:
    (target,) = prometheus.targets_up()
    assert target["labels"]["service"] == SERVICE and target["labels"]["environment"] == ENVIRONMENT
    (up,) = _series(prometheus, f'up{{job="e2e-otel", service="{SERVICE}", environment="{ENVIRONMENT}"}}')
    assert up["value"][1] == "1"


@pytest.mark.parametrize("metric", ALL_METRICS)
def test_every_metric_used_has_data(prometheus: PrometheusServer, metric: str) -> None:
    assert _series(prometheus, f'group({{__name__="{metric}", service="{SERVICE}"}})'), (
        f"{metric}: no series after the test traffic")


@pytest.mark.parametrize("alert, operand", RULE_OPERANDS, ids=[f"{a}:{i}" for i, (a, _) in enumerate(RULE_OPERANDS)])
def test_alert_rule_operand_returns_series(prometheus: PrometheusServer, alert: str, operand: str) -> None:
    result = _series(prometheus, operand)
    assert result, f"{alert}: no series for {operand}"
    for series in result:
        if "service" in series["metric"]:
            assert series["metric"]["service"] == SERVICE


@pytest.mark.parametrize("query, expr", DASHBOARD_EXPRS, ids=[f"{q.dashboard}:{q.panel}" for q, _ in DASHBOARD_EXPRS])
def test_dashboard_expression_returns_series(prometheus: PrometheusServer, query: Any, expr: str) -> None:
    assert _series(prometheus, expr), f"{query}: no series for {expr}"


def test_slow_database_steps_breach_and_the_alert_condition_holds(prometheus: PrometheusServer) -> None:
    """The live counterpart of the promtool test: DB steps above the (lowered) critical query_time
    threshold are counted, and the critical alert's expression is true for this app."""
    (rule,) = [r for r in alert_rules() if r["alert"] == "E2EOtelDatabaseQueryTimeCritical"]
    breaches = _series(prometheus, 'sum(e2e_otel_threshold_breaches_total{layer="database", severity="critical"})')
    assert breaches and float(breaches[0]["value"][1]) > 0
    assert _series(prometheus, rule["expr"]), "the DB critical alert condition is not met"
    # the same rule, loaded from alert-rules.yml by this Prometheus, is pending (its `for:` is 2m)
    alerts = _series(prometheus, f'ALERTS{{alertname="{rule["alert"]}", service="{SERVICE}"}}')
    assert alerts and alerts[0]["metric"]["alertstate"] in ("pending", "firing")
    assert alerts[0]["metric"]["severity"] == "critical" and alerts[0]["metric"]["layer"] == "database"


def test_every_rule_evaluates_without_error(prometheus: PrometheusServer) -> None:
    """Runtime errors (e.g. many-to-many matching) only show when the rules run on real series."""
    groups = prometheus.api("rules")["data"]["groups"]
    rules = {rule["name"]: rule for group in groups for rule in group["rules"]}
    assert set(rules) == {rule["alert"] for rule in alert_rules()}
    unhealthy = {name: rule.get("lastError") for name, rule in rules.items() if rule["health"] != "ok"}
    assert not unhealthy
