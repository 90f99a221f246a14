"""End-to-end scenarios (seed task 14): the demo shop on MariaDB, driven over real HTTP.

One demo server runs in a subprocess against the pytest-django test database, exporting over OTLP/gRPC
to a real in-process receiver. The test process plays the browser with the demo's traffic driver
(``traceparent`` + baggage on every request, frontend spans posted to the ingestion endpoint), then
reads the records with the ORM, the spans from the receiver and the metrics from ``/metrics``.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import connection
from django.db.models import Count

from e2e_otel.demo.seed import CUSTOMERS
from e2e_otel.demo.summary import parse_prometheus_text
from e2e_otel.demo.traffic import Browser, TrafficDriver, WorkflowRun
from e2e_otel.models import ErrorLog, TraceStep, WorkflowSession
from e2e_otel.testing.otlp_receiver import OTLPReceiver
from tests.servers import ServerProcess, free_port, subprocess_env

pytestmark = [pytest.mark.mysql, pytest.mark.slow]

API_KEY = "scenario-api-key"
INGEST_KEY = "scenario-ingest-key"
PASSWORD = "scenario-customer-pw"
ROOT_SPANS = {"login": "submit login form", "product_fetch": "open catalogue", "cart_update": "click add to cart",
              "checkout": "click checkout"}
SHOP_TABLES = ("shop_orderitem", "shop_order", "shop_cartitem", "shop_cart", "shop_product", "shop_category",
               "authtoken_token")


@dataclass
class Scenario:
    server: ServerProcess
    receiver: OTLPReceiver
    runs: dict[str, WorkflowRun]
    sessions: dict[str, WorkflowSession]
    metrics: str

    def session(self, name: str) -> WorkflowSession:
        return self.sessions[self.runs[name].correlation_id]

    def steps(self, name: str) -> list[TraceStep]:
        return list(TraceStep.objects.filter(workflow_session=self.session(name)).order_by("start_time", "id"))

    def api(self, path: str, key: str | None = API_KEY) -> tuple[int, Any]:
        status, _, body = self.server.get(f"/api/v1/debugging/{path}",
                                          {"Authorization": f"Bearer {key}"} if key else None)
        return status, json.loads(body) if body else None


def _clean_database() -> None:
    """Leave the shared test database as pytest-django made it: no rows, no demo tables."""
    call_command("flush", interactive=False, verbosity=0)
    with connection.cursor() as cursor:
        cursor.execute("SET FOREIGN_KEY_CHECKS = 0")
        for table in SHOP_TABLES:
            cursor.execute(f"DROP TABLE IF EXISTS `{table}`")
        cursor.execute("SET FOREIGN_KEY_CHECKS = 1")
        cursor.execute("DELETE FROM django_migrations WHERE app IN ('shop', 'authtoken')")


def _wait_for_records(runs: list[WorkflowRun], timeout: float = 30.0) -> dict[str, WorkflowSession]:
    """Until every workflow's session is closed and its browser steps are stored (they arrive last)."""
    ids = [r.correlation_id for r in runs]
    deadline = time.monotonic() + timeout
    while True:
        sessions = {str(s.correlation_id): s for s in WorkflowSession.objects.filter(correlation_id__in=ids)}
        frontend = dict(TraceStep.objects.filter(correlation_id__in=ids, layer="frontend").order_by()
                        .values_list("correlation_id").annotate(n=Count("id")))
        done = [r for r in runs if r.correlation_id in sessions
                and sessions[r.correlation_id].status != "in_progress"
                and frontend.get(uuid.UUID(r.correlation_id), 0) >= r.frontend_spans]
        if len(done) == len(runs) or time.monotonic() > deadline:
            return sessions
        time.sleep(0.2)


@pytest.fixture(scope="module")
def scenario(django_db_setup: None, django_db_blocker: Any) -> Iterator[Scenario]:
    with django_db_blocker.unblock():
        if connection.vendor != "mysql":
            pytest.skip("scenario tests need MariaDB/MySQL")
        db = settings.DATABASES["default"]
        database_url = (f"mysql://{db['USER']}:{db['PASSWORD']}@{db['HOST']}:{db['PORT']}/"
                        f"{connection.settings_dict['NAME']}")
        receiver = OTLPReceiver().start()
        port = free_port()
        env = subprocess_env({
            "DATABASE_URL": database_url,
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.grpc_endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            "OTEL_BSP_SCHEDULE_DELAY": "200",
            "E2E_OTEL_API_KEY": API_KEY,
            "E2E_OTEL_INGEST_KEY": INGEST_KEY,
            "E2E_DEMO_CUSTOMER_PASSWORD": PASSWORD,
            # Every checkout is slow; payments fail on the 1st, 3rd, ... attempt.
            "E2E_DEMO_FAULTS": "n_plus_one,slow_checkout=1,payment_failure=0.5,invalid_payload",
        })
        # --reset: the pytest-django test database is not one the demo created.
        server = ServerProcess([sys.executable, "-m", "e2e_otel", "demo", "--port", str(port), "--workflows", "0",
                                "--reset"],
                               port=port, env=env, startup_timeout=90)
        try:
            server.start()
            catalogue = json.loads(server.get("/api/shop/products/?n_plus_one=0")[2])
            driver = TrafficDriver(server.base_url, ingest_key=INGEST_KEY, customers=[CUSTOMERS[0]], password=PASSWORD,
                                   product_ids=[p["id"] for p in catalogue],
                                   category_slugs=sorted({p["category"]["slug"] for p in catalogue}))
            browser: Browser = driver.browsers[0]
            runs = {
                "login": driver.run_workflow("login", browser),
                "product_fetch": driver.run_workflow("product_fetch", browser),
                "cart_update": driver.run_workflow("cart_update", browser),
                "checkout_failed": driver.run_workflow("checkout", browser),
                "cart_update_invalid": driver.run_workflow("cart_update", browser),
                "checkout_ok": driver.run_workflow("checkout", browser),
            }
            sessions = _wait_for_records(list(runs.values()))
            # Both halves of every trace reached the receiver: the browser's spans and the server's.
            receiver.wait_for(lambda spans: all(
                {"SPAN_KIND_SERVER", "SPAN_KIND_CLIENT"} <= {s.kind_name for s in spans if s.trace_id == r.trace_id}
                for r in runs.values()), timeout=20)
            metrics = server.get("/metrics")[2].decode()
            yield Scenario(server, receiver, runs, sessions, metrics)
        finally:
            server.stop()
            server.__exit__(None, None, None)
            receiver.stop()
            _clean_database()


def _layers(steps: list[TraceStep]) -> list[str]:
    return [s.layer for s in steps]


def _assert_plausible(steps: list[TraceStep], session: WorkflowSession) -> None:
    root = steps[0]
    assert root.layer == "frontend" and root.parent_span_id == "", [(s.layer, s.name) for s in steps]
    for step in steps:
        assert step.duration_ms is not None and 0 <= step.duration_ms < 10_000, step
        assert step.start_time >= root.start_time
        assert step.end_time <= root.end_time + timedelta(milliseconds=50)
        assert step.correlation_id == session.correlation_id
    assert session.duration_ms is not None and session.duration_ms >= root.duration_ms * 0.9


@pytest.mark.django_db
def test_login_workflow(scenario: Scenario) -> None:
    run, session = scenario.runs["login"], scenario.session("login")
    assert [c.status for c in run.calls] == [200, 200]
    assert (session.workflow_type, session.status) == ("login", "completed")
    steps = scenario.steps("login")
    _assert_plausible(steps, session)
    assert {"frontend", "api", "database"} <= set(_layers(steps))
    api = [s for s in steps if s.layer == "api"]
    assert [s.component for s in api] == ["/api/shop/auth/login/", "/api/shop/auth/me/"]
    assert api[0].start_time < api[1].start_time
    assert any(s.layer == "database" and s.component == "auth_user" for s in steps)
    names = [s.name for s in steps]
    assert names[0] == "submit login form" and names[-1] == "render account menu", names


@pytest.mark.django_db
def test_product_fetch_workflow_with_n_plus_one(scenario: Scenario) -> None:
    session = scenario.session("product_fetch")
    assert (session.workflow_type, session.status) == ("product_fetch", "completed")
    steps = scenario.steps("product_fetch")
    _assert_plausible(steps, session)
    assert {"frontend", "api", "database"} <= set(_layers(steps))
    category_queries = [s for s in steps if s.layer == "database" and s.component == "shop_category"]
    assert len(category_queries) >= 6  # the list + one query per product: the N+1
    assert [n for n, labels, v in parse_prometheus_text(scenario.metrics)
            if n == "e2e_otel_n_plus_one_total" and v >= 1]


@pytest.mark.django_db
def test_cart_update_workflow_and_invalid_payload(scenario: Scenario) -> None:
    session = scenario.session("cart_update")
    assert (session.workflow_type, session.status) == ("cart_update", "completed")
    _assert_plausible(scenario.steps("cart_update"), session)
    invalid = scenario.runs["cart_update_invalid"]
    assert [c.status for c in invalid.calls] == [400, 201, 200]
    invalid_session = scenario.session("cart_update_invalid")
    # A 400 is the client's mistake: the workflow still completes, and the API step says 4xx.
    assert (invalid_session.workflow_type, invalid_session.status) == ("cart_update", "completed")
    api = [s for s in scenario.steps("cart_update_invalid") if s.layer == "api"]
    assert [s.component for s in api] == ["/api/shop/cart/items/", "/api/shop/cart/items/", "/api/shop/cart/"]


@pytest.mark.django_db
def test_checkout_workflow_is_slow_and_trips_the_threshold(scenario: Scenario) -> None:
    run, session = scenario.runs["checkout_ok"], scenario.session("checkout_ok")
    assert [c.status for c in run.calls] == [201, 200]
    assert (session.workflow_type, session.status, session.workflow_type_source) == (
        "checkout", "completed", "explicit")
    steps = scenario.steps("checkout_ok")
    _assert_plausible(steps, session)
    assert {"frontend", "api", "database", "external", "internal"} <= set(_layers(steps))
    checkout_api = next(s for s in steps if s.layer == "api" and s.component == "/api/shop/checkout/")
    assert checkout_api.duration_ms >= 600
    names = [s.name for s in steps]
    assert names.index("checkout.reserve_stock") < names.index("checkout.shipping_quote") < \
        names.index("payment.charge") < names.index("checkout.create_order")
    breaches = {(labels.get("layer"), labels.get("metric")): value
                for name, labels, value in parse_prometheus_text(scenario.metrics)
                if name == "e2e_otel_threshold_breaches_total"}
    assert breaches.get(("api", "response_time"), 0) >= 2  # both checkouts took > 500 ms


@pytest.mark.django_db
def test_failing_payment_gives_failed_session_and_grouped_error(scenario: Scenario) -> None:
    run, session = scenario.runs["checkout_failed"], scenario.session("checkout_failed")
    assert [c.status for c in run.calls] == [402]
    assert run.calls[0].body["code"] == "payment_declined" and run.failed
    assert (session.workflow_type, session.status) == ("checkout", "failed")
    assert session.error_count >= 1
    steps = scenario.steps("checkout_failed")
    payment = next(s for s in steps if s.layer == "external")
    assert (payment.component, payment.status) == ("payments.demo.invalid", "error")
    groups = list(ErrorLog.objects.filter(error_type__endswith="PaymentDeclined"))
    assert len(groups) == 1, groups  # one group, not one row per occurrence or per span
    assert groups[0].layer == "external" and groups[0].correlation_id == session.correlation_id
    assert "declined" in groups[0].error_message
    failed = {labels.get("workflow_type"): value for name, labels, value in parse_prometheus_text(scenario.metrics)
              if name == "e2e_otel_workflows_total" and labels.get("status") == "failed"}
    assert failed.get("checkout", 0) >= 1


@pytest.mark.django_db
def test_exported_spans_share_the_correlation_id(scenario: Scenario) -> None:
    for name in ("login", "product_fetch", "checkout_failed", "checkout_ok"):
        session = scenario.session(name)
        spans = scenario.receiver.spans_for_trace(session.correlation_id.hex)
        kinds = {s.kind_name for s in spans}
        assert {"SPAN_KIND_SERVER", "SPAN_KIND_CLIENT", "SPAN_KIND_INTERNAL"} <= kinds, (name, kinds)
        roots = [s.name for s in spans if s.is_root]
        assert roots == [ROOT_SPANS[scenario.runs[name].workflow_type]], roots  # the browser's click
        assert any(s.attributes.get("db.system") == "mysql" for s in spans), name
        server = [s for s in spans if s.kind_name == "SPAN_KIND_SERVER"]
        assert all(s.trace_id == session.correlation_id.hex for s in spans)
        assert all(s.parent_span_id for s in server)  # every request is a child of a browser fetch span


@pytest.mark.django_db
def test_health_and_stats_endpoints_after_the_run(scenario: Scenario) -> None:
    status, _ = scenario.api("system-health/", key=None)
    assert status in (401, 403)
    status, health = scenario.api("system-health/")
    assert status == 200 and health["status"] in ("ok", "degraded")
    assert health["database"]["reachable"] is True
    assert health["record_writer"]["available"] is True
    assert health["counts"]["workflow_sessions"] >= len(scenario.runs)
    assert health["counts"]["failed"] >= 1 and health["counts"]["unresolved_errors"] >= 1
    assert health["counts"]["enabled_thresholds"] >= 7  # seeded by setup_debugging_defaults

    status, stats = scenario.api("workflow-sessions/stats/")
    assert status == 200 and stats["by_status"]["failed"] >= 1
    by_type = {row["workflow_type"]: row for row in stats["by_workflow_type"]}
    assert {"login", "product_fetch", "cart_update", "checkout"} <= set(by_type)
    assert by_type["checkout"]["count"] == 2 and by_type["checkout"]["failed"] == 1
    assert by_type["cart_update"]["count"] == 2 and by_type["cart_update"]["failed"] == 0

    cid = scenario.runs["checkout_failed"].correlation_id
    status, detail = scenario.api(f"workflow-sessions/{cid}/")
    assert status == 200 and detail["status"] == "failed" and detail["workflow_type"] == "checkout"

    status, errors = scenario.api("error-logs/summary/")
    assert status == 200
    assert any(g["error_type"].endswith("PaymentDeclined") and g["occurrences"] == 1 for g in errors["groups"])
