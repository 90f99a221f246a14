"""Endpoint discovery on the real test URLconf, compared with the http.route the instrumentation records."""

from __future__ import annotations

import io
import json
import uuid

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client, override_settings
from opentelemetry.trace import SpanKind

from e2e_otel.discovery import discover_endpoints, unmatched_rules
from e2e_otel.spans_to_records import classify, resolve_workflow_type, step_from_span

AUTH = {"HTTP_AUTHORIZATION": "Bearer test-api-key"}
RULES = {"browse": ["GET /items/<int:pk>/"], "checkout": ["POST /items/*"],
         "typo": ["GET /itmes/*"], "admin_work": ["* /api/v1/debugging/error-logs/*/resolve/*"]}


def _by_route() -> dict[str, object]:
    return {e.route: e for e in discover_endpoints(rules=RULES)}


def _server_span(exporter) -> object:
    (span,) = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.SERVER]
    return span


def test_methods_views_and_rules_of_known_endpoints() -> None:
    routes = _by_route()
    ping = routes["/ping/"]
    assert (ping.view, ping.methods, ping.workflows) == ("tests.testapp.views.ping", ("*",), {})
    detail = routes["/items/<int:pk>/"]
    assert detail.workflows == {"GET": "browse", "POST": "checkout"}  # first rule wins, per method
    health = routes["/api/v1/debugging/system-health/"]
    assert (health.view, health.methods) == ("e2e_otel.api.views.SystemHealthView", ("GET", "HEAD", "OPTIONS"))
    assert health.name == "e2e_otel:system-health"
    # DRF router, two includes deep: the joined regex reads as a template, actions give methods
    resolve = routes["/api/v1/debugging/error-logs/{pk}/resolve/"]
    assert resolve.pattern == "api/v1/debugging/error-logs/(?P<pk>[^/]+)/resolve/$"  # as http.route has it
    assert resolve.methods == ("OPTIONS", "POST")
    assert resolve.view == "e2e_otel.api.views.ErrorLogViewSet"
    # e2e-otel's own API is never a workflow, so no rule names it
    assert (resolve.workflows, resolve.not_workflow) == ({}, "e2e_otel")
    configs = routes["/api/v1/debugging/debug-configurations/{pk}/"]
    assert configs.methods == ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "PUT")
    assert "/api/v1/debugging/reports/" in routes and "/api/v1/debugging/endpoints/" in routes
    assert not [route for route in routes if "(?P" in route or "$" in route]


def test_unmatched_rules_name_the_typo_and_close_routes() -> None:
    unmatched = unmatched_rules(rules=RULES)
    assert [(u.workflow, u.pattern) for u in unmatched] == [
        ("typo", "GET /itmes/*"), ("admin_work", "* /api/v1/debugging/error-logs/*/resolve/*")]
    assert unmatched[0].close[0] == "GET /items/" and unmatched[0].excluded == ()
    assert "POST /api/v1/debugging/error-logs/{pk}/resolve/" in unmatched[1].excluded
    assert unmatched_rules(rules={"ok": ["GET /ping/"]}) == []


def test_routes_that_are_never_workflows_are_flagged() -> None:
    by_name = {e.name: e for e in discover_endpoints(rules={"staff": ["* /admin/*"]})}
    assert by_name["admin:jsi18n"].not_workflow == "ignored"  # IGNORE_PATHS default: the admin site
    assert by_name["admin:auth_user_changelist"].not_workflow == "ignored"
    assert by_name["admin:e2e_otel_errorlog_changelist"].not_workflow == "admin"  # always: our own models
    assert by_name["e2e_otel:metrics"].not_workflow == "e2e_otel"
    assert by_name["admin:jsi18n"].workflows == {}
    opted_in = {e.name: e for e in discover_endpoints(rules={"staff": ["* /admin/*"]}, ignore_paths=[])}
    assert opted_in["admin:jsi18n"].not_workflow is None and opted_in["admin:jsi18n"].workflows["GET"] == "staff"
    assert opted_in["admin:e2e_otel_errorlog_changelist"].not_workflow == "admin"
    ping = next(e for e in discover_endpoints(rules={"p": ["* /ping/"]}, ignore_paths=["POST /ping/"])
                if e.route == "/ping/")
    assert ping.not_workflow is None and "POST" not in ping.workflows and ping.workflows["GET"] == "p"


@pytest.mark.django_db
@pytest.mark.parametrize(("method", "path"), [
    ("get", "/items/7/"), ("post", "/items/7/"), ("get", "/ping/"),
    ("get", f"/api/v1/debugging/workflow-sessions/{uuid.uuid4()}/"),
    ("post", "/api/v1/debugging/error-logs/3/resolve/"), ("get", "/metrics"),
])
def test_discovered_route_equals_recorded_http_route(spans, method: str, path: str) -> None:
    """A real request: the server span's http.route is one of the discovered patterns, and the workflow
    rule discovery reports for it is the one the record pipeline derives from that very span."""
    response = getattr(Client(), method)(path, **AUTH)
    assert response.status_code < 500
    span = _server_span(spans)
    endpoint = {e.pattern: e for e in discover_endpoints(rules=RULES)}[span.attributes["http.route"]]
    step = step_from_span(span)
    if path.startswith(("/api/", "/metrics")):
        assert step is None  # e2e-otel's own endpoints are tooling, never recorded as workflows
        assert classify(span)[1] == endpoint.route  # the component is the discovered template
        return
    assert step.hints.route_key in endpoint.route_keys()
    expected = endpoint.workflows.get(method.upper())
    resolved = resolve_workflow_type([step.hints], RULES)
    assert resolved == ((expected, "rule") if expected else (step.hints.route_key, "route"))
    if path == "/items/7/":
        assert resolved == ({"GET": "browse", "POST": "checkout"}[method.upper()], "rule")


def test_system_check_warns_about_rule_matching_nothing() -> None:
    out = io.StringIO()
    with override_settings(E2E_OTEL={**settings.E2E_OTEL, "WORKFLOWS": {"checkout": ["POST /chekout/*"],
                                                                         "browse": ["GET /items/*"]}}):
        call_command("check", stdout=out, stderr=out)
    text = out.getvalue()
    assert "e2e_otel.W005" in text
    assert "WORKFLOWS rule 'POST /chekout/*' for workflow 'checkout' matches no URL pattern" in text
    assert "HINT: Close routes:" in text and "GET /items/*" not in text
    out = io.StringIO()
    with override_settings(E2E_OTEL={**settings.E2E_OTEL, "WORKFLOWS": {"staff": ["GET /admin/auth/*"]}}):
        call_command("check", stdout=out, stderr=out)
    text = out.getvalue()
    assert "'GET /admin/auth/*' for workflow 'staff' matches only routes that are never workflows (GET " in text
    assert "IGNORE_PATHS" in text
    out = io.StringIO()
    with override_settings(E2E_OTEL={**settings.E2E_OTEL, "WORKFLOWS": {"browse": ["GET /items/*"]}}):
        call_command("check", stdout=out, stderr=out)
    assert "W005" not in out.getvalue()


def test_command_text_and_json(capsys) -> None:
    with override_settings(E2E_OTEL={**settings.E2E_OTEL, "WORKFLOWS": RULES}):
        call_command("discover_endpoints", "--format", "json")
        body = json.loads(capsys.readouterr().out)
        call_command("discover_endpoints")
        text = capsys.readouterr().out
    routes = {e["route"]: e for e in body["endpoints"]}
    assert routes["/items/<int:pk>/"]["workflows"] == {"GET": "browse", "POST": "checkout"}
    assert body["unmatched_rules"][0]["pattern"] == "GET /itmes/*"
    line = next(line for line in text.splitlines() if " /items/<int:pk>/ " in line)
    assert line.split()[:2] == ["*", "/items/<int:pk>/"] and "tests.testapp.views.item_detail" in line
    assert "WORKFLOWS rule 'GET /itmes/*' for workflow 'typo' matches no URL pattern" in text


@pytest.mark.django_db
def test_api_requires_auth_and_lists_endpoints() -> None:
    client = Client()
    url = "/api/v1/debugging/endpoints/"
    assert client.get(url).status_code == 401
    client.force_login(get_user_model().objects.create_user("nonstaff", password="pw-nonstaff-1"))
    assert client.get(url).status_code == 403
    client.logout()
    with override_settings(E2E_OTEL={**settings.E2E_OTEL, "WORKFLOWS": RULES}):
        body = client.get(url, **AUTH).json()
    assert body["count"] == len(body["endpoints"]) > 20
    ping = next(e for e in body["endpoints"] if e["route"] == "/ping/")
    assert ping == {"route": "/ping/", "view": "tests.testapp.views.ping", "name": None, "methods": ["*"],
                    "workflows": {}, "pattern": "ping/", "not_workflow": None}
    assert [u["workflow"] for u in body["unmatched_rules"]] == ["typo", "admin_work"]
    assert "test-api-key" not in json.dumps(body)
