"""docker-compose.yml without Docker: mounts exist, ports don't clash, every referenced host is a service,
images are pinned, every service has a health check and waits for its dependencies' health."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.prom import COLLECTOR_DIR, PROVISIONING_DIR, load_yaml
from tests.servers import REPO_ROOT

COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
EXPECTED_SERVICES = {"mysql", "otel-collector", "jaeger", "prometheus", "alertmanager", "grafana", "demo"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_yaml(COMPOSE_FILE)


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def bind_mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(host path, container path) of the service's bind mounts (named volumes excluded)."""
    mounts = []
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith((".", "/")):
            mounts.append((source, target))
    return mounts


def test_all_services_defined(services: dict[str, dict[str, Any]]) -> None:
    assert set(services) >= EXPECTED_SERVICES


def test_every_bind_mount_exists(compose: dict[str, Any], services: dict[str, dict[str, Any]]) -> None:
    named = set(compose.get("volumes", {}))
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith((".", "/")):
                assert source in named, f"{name}: undeclared named volume {source}"
        for source, _ in bind_mounts(service):
            assert (REPO_ROOT / source).resolve().exists(), f"{name}: {source} does not exist"


def test_configs_are_mounted_where_the_services_read_them(services: dict[str, dict[str, Any]]) -> None:
    mounts = {name: dict(bind_mounts(s)) for name, s in services.items()}
    assert mounts["prometheus"]["./collector-config/prometheus.yml"] == "/etc/prometheus/prometheus.yml"
    # rule_files are relative to prometheus.yml: the rules must sit next to it in the container
    rules_target = mounts["prometheus"]["./collector-config/alert-rules.yml"]
    for rule_file in load_yaml(COLLECTOR_DIR / "prometheus.yml")["rule_files"]:
        assert rules_target == f"/etc/prometheus/{rule_file}"
    assert "--config.file=/etc/prometheus/prometheus.yml" in services["prometheus"]["command"]
    assert mounts["alertmanager"]["./collector-config/alertmanager.yml"] == "/etc/alertmanager/alertmanager.yml"
    assert "--config.file=/etc/alertmanager/alertmanager.yml" in services["alertmanager"]["command"]
    collector_target = mounts["otel-collector"]["./collector-config/otelcol.yaml"]
    assert f"--config={collector_target}" in services["otel-collector"]["command"]
    assert mounts["grafana"]["./grafana/provisioning"] == "/etc/grafana/provisioning"
    (provider,) = load_yaml(PROVISIONING_DIR / "dashboards" / "e2e-otel.yml")["providers"]
    assert mounts["grafana"]["./grafana/dashboards"] == provider["options"]["path"]
    assert mounts["mysql"]["./grafana/mysql-init"] == "/docker-entrypoint-initdb.d"


def test_host_ports_do_not_clash(services: dict[str, dict[str, Any]]) -> None:
    seen: dict[str, str] = {}
    for name, service in services.items():
        for mapping in service.get("ports", []):
            parts = str(mapping).split(":")
            assert len(parts) >= 2, f"{name}: publish with an explicit host port, got {mapping}"
            host_port = parts[-2]
            assert host_port not in seen, f"host port {host_port}: {name} and {seen[host_port]}"
            seen[host_port] = name


def test_images_are_pinned(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        if "build" in service:
            continue
        image = service["image"]
        repo, _, tag = image.rpartition(":")
        assert repo and tag and "/" not in tag, f"{name}: {image} has no tag"
        # a release number (mendhak/http-https-echo publishes plain integers), never latest/stable/...
        assert re.fullmatch(r"v?\d+(\.\d+)*", tag), f"{name}: {image} is not pinned to a version"
    assert services["mysql"]["image"].startswith("mysql:8.4")


def test_every_service_has_a_healthcheck_and_waits_for_healthy_dependencies(
        services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        test = service.get("healthcheck", {}).get("test")
        assert test and test[0] in ("CMD", "CMD-SHELL"), f"{name}: no health check"
        for dependency, spec in service.get("depends_on", {}).items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            assert spec["condition"] == "service_healthy", f"{name} -> {dependency}"


def referenced_hosts() -> dict[str, set[str]]:
    """Host names each config file sends traffic to."""
    hosts: dict[str, set[str]] = {}
    prometheus = load_yaml(COLLECTOR_DIR / "prometheus.yml")
    targets = [t for job in prometheus["scrape_configs"] for sc in job.get("static_configs", []) for t in sc["targets"]]
    targets += [
        t for am in prometheus["alerting"]["alertmanagers"] for sc in am["static_configs"] for t in sc["targets"]
    ]
    hosts["prometheus.yml"] = {t.rsplit(":", 1)[0] for t in targets}
    otelcol = load_yaml(COLLECTOR_DIR / "otelcol.yaml")
    hosts["otelcol.yaml"] = {
        urlsplit(f"//{e['endpoint']}" if "://" not in e["endpoint"] else e["endpoint"]).hostname
        for e in otelcol["exporters"].values() if not e["endpoint"].startswith("0.0.0.0")
    }
    datasources = [ds for p in (PROVISIONING_DIR / "datasources").glob("*.y*ml") for ds in load_yaml(p)["datasources"]]
    hosts["grafana datasources"] = {
        urlsplit(ds["url"] if "://" in ds["url"] else f"//{ds['url']}").hostname for ds in datasources
    }
    alertmanager = load_yaml(COLLECTOR_DIR / "alertmanager.yml")
    hosts["alertmanager.yml"] = {
        urlsplit(hook["url"]).hostname for r in alertmanager["receivers"] for hook in r.get("webhook_configs", [])
    }
    return hosts


def test_every_host_the_configs_reference_is_a_service(services: dict[str, dict[str, Any]]) -> None:
    hosts = referenced_hosts()
    assert hosts["prometheus.yml"] >= {"demo", "alertmanager"}
    assert "jaeger" in hosts["otelcol.yaml"]
    assert hosts["grafana datasources"] >= {"prometheus", "jaeger", "mysql"}
    for source, names in hosts.items():
        unknown = names - set(services) - {"localhost"}
        assert not unknown, f"{source} references undefined services {unknown}"


def test_demo_service_is_wired_to_mysql_and_the_collector(services: dict[str, dict[str, Any]]) -> None:
    demo = services["demo"]
    assert demo["build"] == "."
    env = demo["environment"]
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector:4317"
    db = urlsplit(env["DATABASE_URL"].replace("${MYSQL_PASSWORD:-e2e-otel}", "pw"))
    assert db.scheme == "mysql" and db.hostname == "mysql" and db.path == "/e2e_otel"
    assert db.path.lstrip("/") == services["mysql"]["environment"]["MYSQL_DATABASE"]
    # the labels Prometheus puts on the demo's series match what the app reports about itself
    (job,) = [j for j in load_yaml(COLLECTOR_DIR / "prometheus.yml")["scrape_configs"] if j["job_name"] == "e2e-otel"]
    labels = job["static_configs"][0]["labels"]
    assert labels["service"] == env["OTEL_SERVICE_NAME"]
    assert labels["environment"] == env["E2E_OTEL_ENVIRONMENT"]


def test_dockerfile_copies_existing_paths_and_runs_the_demo() -> None:
    dockerfile = (REPO_ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert re.findall(r"^FROM (\S+)", dockerfile, re.MULTILINE) == ["python:3.11-slim"]
    for line in dockerfile.splitlines():
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (REPO_ROOT / source).exists(), f"Dockerfile copies missing {source}"
    assert 'CMD ["e2e-otel", "demo", "--host", "0.0.0.0"' in dockerfile
    assert (REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8").count('e2e-otel = "e2e_otel.__main__:main"') == 1


def test_docs_describe_the_stack() -> None:
    doc = (Path(REPO_ROOT) / "docs" / "full-stack.md").read_text(encoding="utf-8")
    assert "docker compose up" in doc
    for url in ("http://localhost:3000", "http://localhost:16686", "http://localhost:9090", "http://localhost:9093"):
        assert url in doc
