"""e2e-otel's own traffic, the admin site, static files and unmatched requests are never workflows
(``e2e_otel/traffic.py``, marked by ``CorrelationMiddleware``): real requests through the Django test
client against the live runtime and its record writer (MariaDB)."""

from __future__ import annotations

import re

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import Client, override_settings
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client import REGISTRY

from e2e_otel.bootstrap import get_runtime
from e2e_otel.conf import resolve
from e2e_otel.correlation import internal_requests_in_flight
from e2e_otel.models import ErrorLog, TraceStep, WorkflowSession
from e2e_otel.routes import DEFAULT_IGNORE_PATHS
from e2e_otel.traffic import TrafficFilter, expand_patterns

pytestmark = [pytest.mark.mysql, pytest.mark.django_db(transaction=True)]


def _flush() -> None:
    runtime = get_runtime()
    assert runtime is not None and runtime.force_flush(10)


def _total(name: str, **labels: str) -> float:
    """Sum of a counter's samples (optionally only those with ``labels``) on the default registry."""
    total = 0.0
    for metric in REGISTRY.collect():
        for sample in metric.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def _internal_marks(spans) -> dict[str, str | None]:
    return {f"{s.context.trace_id:032x}": s.attributes.get("e2e.internal")
            for s in spans.get_finished_spans() if s.kind is SpanKind.SERVER}


def _cid(response) -> str:
    return response["X-Correlation-ID"].replace("-", "")


def _admin_browsing(client: Client, prefix: str) -> list:
    """Two admin logins and the pages a changelist loads, then the favicon and a static file (404s)."""
    responses = []
    for _ in range(2):
        responses.append(client.get(f"{prefix}login/"))
        responses.append(client.post(f"{prefix}login/", {"username": "boss", "password": "pw-for-tests-1",
                                                          "next": prefix}))
        assert responses[-1].status_code == 302, responses[-1].content[:300]
    responses += [client.get(prefix), client.get(f"{prefix}auth/user/"), client.get(f"{prefix}jsi18n/"),
                  client.get(f"{prefix}e2e_otel/workflowsession/"), client.get(f"{prefix}e2e_otel/")]
    assert [r.status_code for r in responses[4:]] == [200] * 5
    responses += [client.get("/favicon.ico"), client.get("/static/admin/css/base.css"),
                  client.get("/nope/42/")]
    assert [r.status_code for r in responses[-3:]] == [404] * 3
    return responses


@pytest.fixture
def boss() -> None:
    get_user_model().objects.create_user("boss", password="pw-for-tests-1", is_staff=True, is_superuser=True)


@pytest.mark.parametrize(("urlconf", "prefix"), [("tests.urls", "/admin/"), ("tests.urls_traffic", "/staff/")])
def test_admin_and_unmatched_traffic_writes_no_workflow(spans, boss, urlconf: str, prefix: str) -> None:
    with override_settings(ROOT_URLCONF=urlconf):
        _flush()
        before = _total("e2e_otel_workflows_total")
        unmatched_before = _total("e2e_otel_unmatched_requests_total", method="GET", status="404")
        responses = _admin_browsing(Client(), prefix)
        _flush()
        assert WorkflowSession.objects.count() == 0
        assert TraceStep.objects.count() == 0 and ErrorLog.objects.count() == 0
        assert _total("e2e_otel_workflows_total") == before
        assert _total("e2e_otel_unmatched_requests_total", method="GET", status="404") == unmatched_before + 3
        marks = _internal_marks(spans)
        assert all(marks[_cid(r)] for r in responses), marks
        assert marks[_cid(responses[-1])] == "unmatched"
        assert marks[_cid(responses[7])] == "admin"  # an e2e-otel model's changelist: always its own
        assert not internal_requests_in_flight()
        # the app's own requests are still workflows, and counted
        app = Client().get("/ping/" if urlconf == "tests.urls" else "/api/articles/")
        _flush()
        assert [str(c).replace("-", "") for c in WorkflowSession.objects.values_list("correlation_id", flat=True)] \
            == [_cid(app)]
        assert _total("e2e_otel_workflows_total") == before + 1


def test_queries_of_a_custom_404_page_are_left_out_too(spans) -> None:
    with override_settings(ROOT_URLCONF="tests.urls_traffic"):
        response = Client().get("/no/such/page/")
        assert response.status_code == 404 and b"items" in response.content
        _flush()
    assert WorkflowSession.objects.count() == 0
    ended = [s for s in spans.get_finished_spans() if f"{s.context.trace_id:032x}" == _cid(response)]
    assert {s.kind for s in ended} >= {SpanKind.SERVER, SpanKind.CLIENT}  # the page queried the database
    assert all(s.attributes.get("e2e.internal") == "unmatched" for s in ended)


def test_opting_in_records_the_hosts_admin_but_never_e2e_otels_own(spans, boss) -> None:
    client = Client()
    client.force_login(get_user_model().objects.get(username="boss"))
    patterns = [p for p in DEFAULT_IGNORE_PATHS if p != "{admin}*"]
    with override_settings(E2E_OTEL={**settings.E2E_OTEL, "IGNORE_PATHS": patterns}):
        users = client.get("/admin/auth/user/")
        own = client.get("/admin/e2e_otel/errorlog/")
        app_index = client.get("/admin/e2e_otel/")
        jsi18n = client.get("/admin/jsi18n/")
        _flush()
    assert [users.status_code, own.status_code, app_index.status_code, jsi18n.status_code] == [200] * 4
    recorded = {str(c).replace("-", "") for c in WorkflowSession.objects.values_list("correlation_id", flat=True)}
    assert recorded == {_cid(users), _cid(jsi18n)}
    types = set(WorkflowSession.objects.values_list("workflow_type", flat=True))
    assert types == {"GET /admin/auth/user/", "GET /admin/jsi18n/"}


def test_a_failing_ignored_request_stays_visible_as_a_span_and_in_the_error_metrics(spans) -> None:
    rules = {**settings.E2E_OTEL, "IGNORE_PATHS": [*DEFAULT_IGNORE_PATHS, "GET /fail/"]}
    errors_before = _total("e2e_otel_errors_total", layer="api")
    with override_settings(E2E_OTEL=rules):
        client = Client(raise_request_exception=False)
        response = client.get("/fail/")
        _flush()
    assert response.status_code == 500
    assert WorkflowSession.objects.count() == 0 and ErrorLog.objects.count() == 0
    (server,) = [s for s in spans.get_finished_spans() if s.kind is SpanKind.SERVER]
    assert server.attributes["e2e.internal"] == "ignored" and server.status.status_code is StatusCode.ERROR
    assert any(event.name == "exception" for event in server.events)  # exported with the exception
    assert _total("e2e_otel_errors_total", layer="api") > errors_before


# --- the filter itself (pure) ---------------------------------------------------------------------


def test_placeholders_expand_and_a_root_prefix_never_ignores_the_site() -> None:
    expanded = expand_patterns(DEFAULT_IGNORE_PATHS, admin=["/staff/", "/ops/admin/"], static="/assets/",
                               media="/")
    assert expanded == ("/staff/*", "/ops/admin/*", "/assets/*", "/favicon.ico", "/robots.txt")
    assert expand_patterns(["POST {admin}login/"], admin=["/staff/"], static=None, media=None) == \
        ("POST /staff/login/",)
    assert expand_patterns(["{static}*"], admin=[], static=None, media=None) == ()


def test_filter_matches_templates_methods_and_old_regex_patterns() -> None:
    traffic = TrafficFilter(["/staff/*", "GET /healthz", "* /api/internal/(?P<pk>[^/.]+)/$", "/static/*"])
    assert traffic.ignored("GET", "staff/auth/user/") and traffic.ignored("POST", "staff/login/")
    assert traffic.ignored("GET", "healthz") and not traffic.ignored("POST", "healthz")
    assert traffic.ignored("DELETE", "api/internal/(?P<pk>[^/.]+)/$")
    assert traffic.ignored("GET", "^static/(?P<path>.*)$")  # django.conf.urls.static.static()
    assert not traffic.ignored("GET", "stafff/") and not traffic.ignored("GET", "api/articles/")


@pytest.mark.parametrize("bad", ["admin/*", "GET admin/", "", 42])
def test_bad_patterns_are_config_errors(bad: object) -> None:
    config = resolve({"IGNORE_PATHS": ["/ok/*", bad]}, environ={})
    assert [e.key for e in config.errors] == ["IGNORE_PATHS"]
    assert config.IGNORE_PATHS == DEFAULT_IGNORE_PATHS
    assert re.search("METHOD /path/glob", config.errors[0].message)


@given(st.one_of(st.text(max_size=20), st.integers(), st.none(), st.booleans(), st.floats()))
def test_unmatched_request_labels_stay_in_their_bounded_sets(value: object) -> None:
    from e2e_otel.metrics import UNMATCHED_SERIES, UNMATCHED_STATUSES, method_label, status_label
    from e2e_otel.routes import HTTP_METHODS

    statuses = {str(code) for code in UNMATCHED_STATUSES} | {f"{n}xx" for n in range(1, 6)} | {"none"}
    assert method_label(value) in HTTP_METHODS | {"_OTHER"}
    assert status_label(value) in statuses
    assert (len(HTTP_METHODS) + 1) * len(statuses) == UNMATCHED_SERIES
