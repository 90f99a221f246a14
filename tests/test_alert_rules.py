"""collector-config/: alert rules (promtool check + unit tests), prometheus.yml, alertmanager.yml, otelcol.yaml."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from e2e_otel.defaults import DEFAULT_THRESHOLDS
from tests.prom import (
    AMTOOL,
    COLLECTOR_DIR,
    DASHBOARD_DIR,
    PROMTOOL,
    RULE_TESTS_FILE,
    RULES_FILE,
    alert_rules,
    has_prometheus,
    load_yaml,
    split_alert_expr,
)

needs_promtool = pytest.mark.skipif(not has_prometheus(), reason="promtool/prometheus not installed")
DASHBOARD_UIDS = {p.stem for p in DASHBOARD_DIR.glob("*.json")}


def run(*argv: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=60, check=False)


# --- promtool ---------------------------------------------------------------------------------------

@pytest.mark.prometheus
@needs_promtool
def test_promtool_check_rules() -> None:
    result = run(PROMTOOL, "check", "rules", RULES_FILE)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


@pytest.mark.prometheus
@needs_promtool
def test_promtool_check_config() -> None:
    result = run(PROMTOOL, "check", "config", COLLECTOR_DIR / "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.prometheus
@needs_promtool
def test_promtool_unit_tests_pass() -> None:
    result = run(PROMTOOL, "test", "rules", RULE_TESTS_FILE)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.mark.prometheus
@needs_promtool
@pytest.mark.parametrize("original, broken", [
    # latency alerts: a 50 % breach share instead of 5 % stops the 21 %/30 % cases from firing
    ("            > 0.05\n        for: 5m\n        labels: {severity: warning, layer: database",
     "            > 0.5\n        for: 5m\n        labels: {severity: warning, layer: database"),
    # the warning must count critical breaches too (the evaluator counts each step once, worst severity)
    ('layer="database", metric="query_time", severity=~"warning|critical"',
     'layer="database", metric="query_time", severity="warning"'),
    # the inverted comparison on a falling threshold
    ('min by (service, environment) (e2e_otel_cache_hit_ratio)\n            <',
     'min by (service, environment) (e2e_otel_cache_hit_ratio)\n            >'),
])
def test_promtool_unit_tests_catch_broken_rules(tmp_path: Path, original: str, broken: str) -> None:
    """The unit tests are able to fail: a copy of the rules with one deliberate bug must not pass."""
    text = RULES_FILE.read_text(encoding="utf-8")
    assert original in text
    (tmp_path / RULES_FILE.name).write_text(text.replace(original, broken, 1), encoding="utf-8")
    shutil.copy(RULE_TESTS_FILE, tmp_path / RULE_TESTS_FILE.name)
    result = run(PROMTOOL, "test", "rules", tmp_path / RULE_TESTS_FILE.name)
    assert result.returncode != 0
    assert "FAILED" in result.stdout + result.stderr


# --- rule content -----------------------------------------------------------------------------------

def test_every_alert_has_severity_annotations_and_dashboard_link() -> None:
    names = [rule["alert"] for rule in alert_rules() if "alert" in rule]
    assert len(names) == len(set(names)), "duplicate alert names"
    for rule in alert_rules():
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["labels"].get("alert_group"), f"{rule['alert']}: alert_group drives inhibition"
        annotations = rule["annotations"]
        assert annotations["summary"].strip() and annotations["description"].strip(), rule["alert"]
        match = re.fullmatch(r"http://localhost:3000/d/([\w-]+)", annotations["dashboard"])
        assert match and match.group(1) in DASHBOARD_UIDS, f"{rule['alert']}: {annotations['dashboard']}"
        suffix = rule["labels"]["severity"].capitalize()
        assert rule["alert"].endswith(suffix), f"{rule['alert']} should end with {suffix}"


@pytest.mark.parametrize("default", DEFAULT_THRESHOLDS, ids=lambda d: f"{d.layer}.{d.metric_name}")
def test_every_default_threshold_has_warning_and_critical_alert(default) -> None:  # type: ignore[no-untyped-def]
    severities = {
        rule["labels"]["severity"]
        for rule in alert_rules()
        if rule["labels"].get("layer") == default.layer and rule["labels"].get("metric") == default.metric_name
    }
    assert severities == {"warning", "critical"}


@pytest.mark.parametrize("topic, pattern", [
    ("workflow failure rate", r'e2e_otel_workflows_total\{status="failed"'),
    ("error spikes", r"e2e_otel_errors_total"),
    ("record drops", r"e2e_otel_records_dropped_total"),
    ("exporter down", r"e2e_otel_exporter_up\)\s*==\s*0"),
    ("exporter failure ratio", r'e2e_otel_exported_spans_total\{result="failure"'),
])
def test_workflow_error_and_pipeline_alerts_exist(topic: str, pattern: str) -> None:
    matching = [rule for rule in alert_rules() if re.search(pattern, rule["expr"])]
    assert matching, f"no alert for {topic}"


def test_alert_expressions_split_into_queryable_operands() -> None:
    """The live test queries each operand; every alert must yield at least one metric operand."""
    for rule in alert_rules():
        operands = split_alert_expr(rule["expr"])
        assert operands, rule["alert"]
        for operand in operands:
            assert re.search(r"e2e_otel_\w+|\bup\{", operand), f"{rule['alert']}: {operand!r}"


def test_unit_tests_have_firing_and_quiet_case_for_every_alert() -> None:
    """Each alert: one evaluation where some series fires, and one series (or time) where none does."""
    tests = load_yaml(RULE_TESTS_FILE)
    assert tests["rule_files"] == [RULES_FILE.name]
    firing: set[str] = set()
    quiet: set[str] = set()
    for group in tests["tests"]:
        services = {re.search(r'service="([^"]+)"', s["series"]).group(1) for s in group["input_series"]}
        for case in group["alert_rule_test"]:
            fired = {a["exp_labels"]["service"] for a in case.get("exp_alerts") or []}
            if fired:
                firing.add(case["alertname"])
            if services - fired:
                quiet.add(case["alertname"])
    names = {rule["alert"] for rule in alert_rules()}
    assert names - firing == set(), "alerts without a firing case"
    assert names - quiet == set(), "alerts without a non-firing case"


# --- alertmanager -----------------------------------------------------------------------------------

ALERTMANAGER = COLLECTOR_DIR / "alertmanager.yml"


@pytest.mark.skipif(AMTOOL is None, reason="amtool (Debian prometheus-alertmanager) not installed")
def test_amtool_check_config() -> None:
    result = run(AMTOOL, "check-config", ALERTMANAGER)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(AMTOOL is None, reason="amtool (Debian prometheus-alertmanager) not installed")
@pytest.mark.parametrize("labels, receiver", [
    (["severity=critical", "alertname=E2EOtelDatabaseQueryTimeCritical"], "pager"),
    (["severity=warning", "alertname=E2EOtelDatabaseQueryTimeWarning"], "team-notifications"),
    (["alertname=Other"], "team-notifications"),
])
def test_amtool_routes_by_severity(labels: list[str], receiver: str) -> None:
    result = run(AMTOOL, "config", "routes", "test", f"--config.file={ALERTMANAGER}", *labels)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == receiver


def test_alertmanager_structure() -> None:
    """Also checked without amtool: every route's receiver exists, critical inhibits warning per layer."""
    config = load_yaml(ALERTMANAGER)
    receivers = {r["name"] for r in config["receivers"]}
    routes = [config["route"], *config["route"].get("routes", [])]
    assert all(route["receiver"] in receivers for route in routes)
    by_matcher = {m: route["receiver"] for route in routes for m in route.get("matchers", [])}
    assert by_matcher['severity="critical"'] != by_matcher['severity="warning"']
    for receiver in config["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            assert hook["url"].startswith("http://alert-webhook:5001/"), hook["url"]
    (inhibit,) = config["inhibit_rules"]
    assert inhibit["source_matchers"] == ['severity="critical"']
    assert inhibit["target_matchers"] == ['severity="warning"']
    assert {"alert_group", "layer", "service", "environment"} <= set(inhibit["equal"])


# --- otel collector ---------------------------------------------------------------------------------

def test_otelcol_pipelines_reference_defined_components() -> None:
    config = load_yaml(COLLECTOR_DIR / "otelcol.yaml")
    connectors = set(config.get("connectors", {}))
    for name, pipeline in config["service"]["pipelines"].items():
        for receiver in pipeline["receivers"]:
            assert receiver in config["receivers"] or receiver in connectors, f"{name}: {receiver}"
        for processor in pipeline.get("processors", []):
            assert processor in config["processors"], f"{name}: {processor}"
        for exporter in pipeline["exporters"]:
            assert exporter in config["exporters"] or exporter in connectors, f"{name}: {exporter}"
    # each connector is both an exporter of one pipeline and a receiver of another
    for connector in connectors:
        pipelines = config["service"]["pipelines"].values()
        assert any(connector in p["exporters"] for p in pipelines)
        assert any(connector in p["receivers"] for p in pipelines)
    for extension in config["service"].get("extensions", []):
        assert extension in config["extensions"]


def test_otelcol_receivers_processors_and_sampling() -> None:
    config = load_yaml(COLLECTOR_DIR / "otelcol.yaml")
    protocols = config["receivers"]["otlp"]["protocols"]
    assert protocols["grpc"]["endpoint"].endswith(":4317")
    assert protocols["http"]["endpoint"].endswith(":4318")
    assert "http://localhost:8000" in protocols["http"]["cors"]["allowed_origins"]
    traces = config["service"]["pipelines"]["traces"]
    # memory_limiter first, batch last (the collector's documented ordering)
    assert traces["processors"][0] == "memory_limiter" and traces["processors"][-1] == "batch"
    assert "tail_sampling" in traces["processors"]
    policies = {p["type"]: p for p in config["processors"]["tail_sampling"]["policies"]}
    assert policies["status_code"]["status_code"]["status_codes"] == ["ERROR"]
    assert policies["latency"]["latency"]["threshold_ms"] > 0
    assert 0 < policies["probabilistic"]["probabilistic"]["sampling_percentage"] < 100
    jaeger = config["exporters"]["otlp/jaeger"]
    assert jaeger["endpoint"] == "jaeger:4317" and jaeger["tls"]["insecure"] is True
    assert traces["exporters"] == ["otlp/jaeger"]


def test_prometheus_yml_scrapes_the_app_with_target_labels() -> None:
    config = load_yaml(COLLECTOR_DIR / "prometheus.yml")
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "e2e-otel"]
    assert job["metrics_path"] == "/metrics"
    (static,) = job["static_configs"]
    assert static["targets"] == ["demo:8000"]
    assert set(static["labels"]) == {"service", "environment"}
    assert config["rule_files"] == ["alert-rules.yml"]
    assert (COLLECTOR_DIR / config["rule_files"][0]).exists()
    # every alert about scraping refers to this job
    for rule in alert_rules():
        for job_name in re.findall(r'job="([^"]+)"', rule["expr"]):
            assert job_name == job["job_name"]
