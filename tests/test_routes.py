"""Route templates (``e2e_otel/routes.py``): the pure converter, and real DRF/re_path routes read as
templates in workflow types, step components, metric labels, discovery and WORKFLOWS rules."""

from __future__ import annotations

import time

import pytest
from django.test import Client, override_settings
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.trace import SpanKind
from prometheus_client import CollectorRegistry

from e2e_otel.discovery import discover_endpoints, unmatched_rules
from e2e_otel.evaluator import ThresholdEvaluator
from e2e_otel.metrics import E2EMetrics
from e2e_otel.routes import MAX_TEMPLATE, _template, normalise_rule, route_template
from e2e_otel.spans_to_records import classify, match_rule, resolve_workflow_type, step_from_span


@pytest.mark.parametrize(("route", "template"), [
    ("api/articles/(?P<slug>[^/.]+)$", "/api/articles/{slug}"),
    ("^(?P<path>.*)$", "/{path}"),
    ("api/articles/(?P<slug>[^/.]+)/$", "/api/articles/{slug}/"),
    ("api/articles\\.(?P<format>[a-z0-9]+)/?$", "/api/articles.{format}"),
    ("^articles/?$", "/articles"),
    ("blog/(?P<year>[0-9]{4})/(\\d+)/(\\w+)/$", "/blog/{year}/{arg1}/{arg2}/"),
    ("staff/(?P<app_label>auth|e2e_otel)/$", "/staff/{app_label}/"),
    ("^(?:en|fr)/home/$", "/*/home/"),
    ("^files/.*$", "/files/*"),
    ("^id/[0-9]+/x$", "/id/*/x"),
    ("^(?i)case(?=x)(?#comment)$", "/case"),
    ("^a(?:/)?$", "/a"),
    ("^(?P<bad-name>x)$", "/{arg1}"),
    # path() routes are templates already: unchanged, a literal dot stays a dot
    ("items/<int:pk>/", "/items/<int:pk>/"),
    ("robots.txt", "/robots.txt"),
    ("api/<str:tenant>/(?P<pk>[^/.]+)/$", "/api/<str:tenant>/{pk}/"),
    ("/already/rooted", "/already/rooted"),
    ("", "/"),
])
def test_route_template(route: str, template: str) -> None:
    assert route_template(route) == template


def test_old_regex_rules_are_normalised_and_globs_left_alone() -> None:
    assert normalise_rule("GET /api/articles/(?P<slug>[^/.]+)$") == "GET /api/articles/{slug}"
    assert normalise_rule("GET /^api/.*$") == "GET /api/*"
    assert normalise_rule("POST /api/v1/checkout/*") == "POST /api/v1/checkout/*"
    assert normalise_rule("* /items/[0-9]*") == "* /items/[0-9]*"  # fnmatch classes are not regexes
    rules = {"read": ["GET /api/articles/(?P<slug>[^/.]+)/$"]}
    assert match_rule("GET /api/articles/{slug}/", rules) == "read"
    assert match_rule("GET /api/articles/", rules) is None


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=3000))
def test_converter_is_total_and_bounded(route: str) -> None:
    template = route_template(route)
    assert isinstance(template, str) and template.startswith("/") and len(template) <= MAX_TEMPLATE
    assert route_template(route) == template  # a pure function of the pattern


_REGEXISH = st.text(alphabet="()[]{}?*+^$\\|.:<>P=!#/-_ab0123456789", max_size=400)


@settings(max_examples=400, deadline=None)
@given(_REGEXISH)
def test_converter_survives_any_mix_of_regex_syntax(route: str) -> None:
    template = route_template(route)
    assert template.startswith("/") and len(template) <= MAX_TEMPLATE
    # groups never leak their pattern: what is left of them is a placeholder
    assert "(?P<" not in template and "(?:" not in template


@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789/_-<>:", max_size=200))
def test_path_routes_are_kept_as_written(route: str) -> None:
    assert route_template(route) == (route if route.startswith("/") else "/" + route)[:MAX_TEMPLATE]


@pytest.mark.parametrize("route", ["(" * 2048, "[" * 2048, "(?:" * 700, "\\" * 2048, "(?P<" * 500,
                                   "a?" * 1024, "." * 2048, "(?P<x>" * 300 + ")" * 300, "x" * 100_000])
def test_converter_is_linear_on_hostile_input(route: str) -> None:
    _template.cache_clear()
    started = time.perf_counter()
    template = route_template(route)
    assert time.perf_counter() - started < 0.05
    assert len(template) <= MAX_TEMPLATE


# --- real routes: DRF DefaultRouter (with and without trailing slash), nested namespaced include, re_path

CASES = [
    ("/api/articles/", "api/articles/$", "/api/articles/"),
    ("/api/articles/hello-world/", "api/articles/(?P<slug>[^/.]+)/$", "/api/articles/{slug}/"),
    ("/api/articles/hello.json", "api/articles/(?P<slug>[^/.]+)\\.(?P<format>[a-z0-9]+)/?$",
     "/api/articles/{slug}.{format}"),
    ("/v2/shop/comments/42", "v2/shop/comments/(?P<pk>[^/.]+)$", "/v2/shop/comments/{pk}"),
    ("/blog/2024/7", "blog/(?P<year>[0-9]{4})/(\\d+)/?$", "/blog/{year}/{arg1}"),
    ("/files/a/b/c.txt", "^files/(?P<path>.*)$", "/files/{path}"),
]


@pytest.mark.django_db
@override_settings(ROOT_URLCONF="tests.urls_traffic")
@pytest.mark.parametrize(("path", "http_route", "template"), CASES)
def test_real_routes_read_as_templates_everywhere(spans, path: str, http_route: str, template: str) -> None:
    response = Client().get(path)
    assert response.status_code == 200, response.content
    (server,) = [s for s in spans.get_finished_spans() if s.kind is SpanKind.SERVER]
    assert server.attributes["http.route"] == http_route  # upstream records the URLconf pattern
    # records: step component and workflow type
    step = step_from_span(server)
    assert step is not None and step.component == template and classify(server)[1] == template
    assert step.hints.route_key == f"GET {template}" and step.name == f"GET {template}"
    assert resolve_workflow_type([step.hints], {}) == (f"GET {template}", "route")
    # a WORKFLOWS rule in the old regex form and one in template form both name it
    assert resolve_workflow_type([step.hints], {"old": [f"GET /{http_route}"]}) == ("old", "rule")
    assert resolve_workflow_type([step.hints], {"new": [f"GET {template}"]}) == ("new", "rule")
    # metric label
    metrics = E2EMetrics(CollectorRegistry())
    ThresholdEvaluator(metrics).on_end(server)
    components = {s.labels["component"] for metric in metrics.registry.collect()
                  if metric.name == "e2e_otel_steps" for s in metric.samples}
    assert components == {template}
    # discovery lists the same template, with the raw pattern beside it
    endpoint = next(e for e in discover_endpoints(rules={"read": [f"GET {template}"]}) if e.pattern == http_route)
    assert endpoint.route == template and endpoint.workflows.get("GET") == "read"


@override_settings(ROOT_URLCONF="tests.urls_traffic")
def test_discovery_has_no_regex_left_and_old_rules_match_something() -> None:
    endpoints = discover_endpoints(rules={})
    assert endpoints and all(e.route.startswith("/") for e in endpoints)
    assert not [e.route for e in endpoints if "(?P" in e.route or e.route.endswith("$") or "^" in e.route]
    names: dict[str | None, list[str]] = {}
    for endpoint in endpoints:
        names.setdefault(endpoint.name, []).append(endpoint.route)
    assert names["v2:shop:comment-detail"] == ["/v2/shop/comments/{pk}", "/v2/shop/comments/{pk}.{format}"]
    assert names["article-detail"] == ["/api/articles/{slug}/", "/api/articles/{slug}.{format}"]
    rules = {"old": ["GET /api/articles/(?P<slug>[^/.]+)/$"], "new": ["GET /v2/shop/comments/{pk}"]}
    assert unmatched_rules(rules=rules) == []
