"""Correlation IDs are the W3C trace id: headers, continuation, X-Correlation-ID seeding, rejection.

Runs the real Django stack in-process (test client through the instrumented middleware chain) and
asserts on the spans the live runtime ended (``spans`` fixture).
"""

from __future__ import annotations

import logging
import re
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest
from django.test import Client
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from e2e_otel import get_correlation_id, inject_headers
from e2e_otel.propagation import format_correlation_id

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
TRACERESPONSE_RE = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-0[0-3]$")
WATCHED_LOGGERS = ("", "django", "django.request", "django.server", "opentelemetry", "e2e_otel", "tests")


@pytest.fixture
def client() -> Client:
    return Client(raise_request_exception=False)


def _server_spans(spans) -> list:
    return [s for s in spans.get_finished_spans() if s.kind is SpanKind.SERVER]


def _only_server_span(spans):
    servers = _server_spans(spans)
    assert len(servers) == 1, [s.name for s in spans.get_finished_spans()]
    return servers[0]


def _assert_headers_match_span(response, span) -> str:
    correlation_id = response["X-Correlation-ID"]
    assert UUID_RE.match(correlation_id), correlation_id
    assert correlation_id == format_correlation_id(span.context.trace_id)
    match = TRACERESPONSE_RE.match(response["traceresponse"])
    assert match, response["traceresponse"]
    assert match.group(1) == f"{span.context.trace_id:032x}"
    assert match.group(2) == f"{span.context.span_id:016x}"
    assert "X-Correlation-ID" in response["Access-Control-Expose-Headers"]
    return correlation_id


@pytest.mark.parametrize(("path", "status"), [("/ping/", 200), ("/does-not-exist/", 404), ("/fail/", 500)])
def test_every_response_carries_correlation_headers(client, spans, path, status) -> None:
    response = client.get(path)
    assert response.status_code == status
    _assert_headers_match_span(response, _only_server_span(spans))


def test_request_correlation_id_in_views(client, spans) -> None:
    response = client.get("/ping/")
    assert response.json()["correlation_id"] == response["X-Correlation-ID"]
    assert _only_server_span(spans).parent is None  # a fresh root trace


def test_incoming_traceparent_is_continued(client, spans) -> None:
    trace_hex, parent_hex = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    response = client.get("/ping/", headers={"traceparent": f"00-{trace_hex}-{parent_hex}-01",
                                             "X-Correlation-ID": str(uuid.uuid4())})
    server = _only_server_span(spans)
    assert f"{server.context.trace_id:032x}" == trace_hex
    assert server.parent is not None and server.parent.is_remote
    assert f"{server.parent.span_id:016x}" == parent_hex
    assert _assert_headers_match_span(response, server) == "4bf92f35-77b3-4da6-a3ce-929d0e0e4736"
    assert response.json()["correlation_id"] == "4bf92f35-77b3-4da6-a3ce-929d0e0e4736"


@pytest.mark.parametrize(
    "incoming",
    ["3F2504E0-4F89-11D3-9A0C-0305E82C3301", "3f2504e04f8911d39a0c0305e82c3301"],
)
def test_x_correlation_id_becomes_the_trace_id(client, spans, incoming) -> None:
    response = client.get("/ping/", headers={"X-Correlation-ID": incoming})
    server = _only_server_span(spans)
    assert f"{server.context.trace_id:032x}" == "3f2504e04f8911d39a0c0305e82c3301"
    assert server.parent is None
    assert _assert_headers_match_span(response, server) == "3f2504e0-4f89-11d3-9a0c-0305e82c3301"


def test_reused_correlation_id_gives_one_trace(client, spans) -> None:
    correlation_id = str(uuid.uuid4())
    for _ in range(3):
        assert client.get("/ping/", headers={"X-Correlation-ID": correlation_id})["X-Correlation-ID"] \
            == correlation_id
    servers = _server_spans(spans)
    assert len(servers) == 3
    assert {format_correlation_id(s.context.trace_id) for s in servers} == {correlation_id}
    assert len({s.context.span_id for s in servers}) == 3


BAD_VALUES = [
    "not-a-uuid",
    "00000000-0000-0000-0000-000000000000",
    "0" * 32,
    "3f2504e0-4f89-11d3-9a0c-0305e82c3301" + "ab",
    "3f2504e04f8911d39a0c0305e82c3301" * 8,
    "3f2504e0-4f89-11d3-9a0c-0305e82c330\x07",
    "3f2504e0-4f89-11d3-9a0c-0305e82c33\t1",
    "\uff13f2504e0-4f89-11d3-9a0c-0305e82c3301",  # full-width digit
    "ünïcødé-correlation",
    "3f2504e0-4f89-11d3-9a0c-0305e82c3301\r\nSet-Cookie: pwned=1",
    "{3f2504e0-4f89-11d3-9a0c-0305e82c3301}",
    "urn:uuid:3f2504e0-4f89-11d3-9a0c-0305e82c3301",
    " 3f2504e0-4f89-11d3-9a0c-0305e82c3301",
]


@pytest.mark.parametrize("bad", BAD_VALUES)
def test_invalid_correlation_ids_start_a_fresh_trace_and_are_never_echoed_or_logged(
        client, spans, caplog, bad) -> None:
    for name in WATCHED_LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name)
    response = client.get("/ping/", headers={"X-Correlation-ID": bad})
    server = _only_server_span(spans)
    correlation_id = _assert_headers_match_span(response, server)
    assert server.parent is None
    assert f"{server.context.trace_id:032x}" != "3f2504e04f8911d39a0c0305e82c3301"
    assert correlation_id != "00000000-0000-0000-0000-000000000000"
    # never echoed: not in any response header or the body
    for header, value in response.items():
        assert bad not in value and "pwned" not in value, header
    assert bad.encode("utf-8", "replace") not in response.content
    assert "pwned" not in str(response.cookies)
    # never logged raw, whatever the logger or level
    assert caplog.records, "the view logs; the capture must see it"
    for record in caplog.records:
        text = record.getMessage() + repr(record.args) + repr(record.__dict__)
        assert bad not in text, (record.name, record.getMessage())
        assert "pwned" not in text
    # and not put on the span (exported attributes)
    for span in spans.get_finished_spans():
        assert all(bad not in str(v) for v in (span.attributes or {}).values())


def test_get_correlation_id_outside_and_inside_a_trace() -> None:
    assert get_correlation_id() is None
    tracer = trace.get_tracer("tests")
    with tracer.start_as_current_span("work") as span:
        correlation_id = get_correlation_id()
        assert correlation_id == format_correlation_id(span.get_span_context().trace_id)
        assert get_correlation_id(span) == correlation_id


def test_inject_headers_carries_traceparent_and_correlation_id() -> None:
    assert inject_headers({}) == {}
    tracer = trace.get_tracer("tests")
    with tracer.start_as_current_span("outgoing") as span:
        context = span.get_span_context()
        headers = {"accept": "application/json"}
        returned = inject_headers(headers)
        assert returned is headers and headers["accept"] == "application/json"
        assert headers["traceparent"] == (
            f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags) & 3:02x}"
        )
        assert headers["X-Correlation-ID"] == format_correlation_id(context.trace_id)


class _RecordingHandler(BaseHTTPRequestHandler):
    received: ClassVar[list[dict[str, str]]] = []

    def do_GET(self) -> None:
        self.received.append({k.lower(): v for k, v in self.headers.items()})
        body = b"ok"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def downstream() -> Iterator[tuple[str, list[dict[str, str]]]]:
    received: list[dict[str, str]] = []
    handler = type("Handler", (_RecordingHandler,), {"received": received})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/downstream", received
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("manual", [False, True])
def test_outgoing_requests_call_carries_the_trace(client, spans, downstream, manual) -> None:
    url, received = downstream
    correlation_id = str(uuid.uuid4())
    params = {"url": url, **({"inject": "1"} if manual else {})}
    response = client.get("/call-out/", params, headers={"X-Correlation-ID": correlation_id})
    assert response.status_code == 200 and response.json()["status"] == 200
    assert response.json()["correlation_id"] == correlation_id
    assert len(received) == 1
    traceparent = received[0]["traceparent"]
    assert traceparent.split("-")[1] == correlation_id.replace("-", "")
    # instrumented `requests`: a CLIENT span in the same trace, and it is the downstream's parent
    clients = [s for s in spans.get_finished_spans() if s.kind is SpanKind.CLIENT and s.name == "GET"]
    assert len(clients) == 1
    assert f"{clients[0].context.span_id:016x}" == traceparent.split("-")[2]
    assert clients[0].parent.span_id == _only_server_span(spans).context.span_id
    if manual:
        assert received[0]["x-correlation-id"] == correlation_id


def test_invalid_traceparent_falls_back_to_x_correlation_id(client, spans) -> None:
    correlation_id = str(uuid.uuid4())
    response = client.get("/ping/", headers={"traceparent": "00-" + "0" * 32 + "-00f067aa0ba902b7-01",
                                             "X-Correlation-ID": correlation_id})
    server = _only_server_span(spans)
    assert server.parent is None
    assert _assert_headers_match_span(response, server) == correlation_id


def test_asgi_handler_gets_the_same_contract(spans) -> None:
    from asgiref.sync import async_to_sync
    from django.test import AsyncClient

    correlation_id = str(uuid.uuid4())
    response = async_to_sync(AsyncClient().get)("/ping/", headers={"X-Correlation-ID": correlation_id})
    assert response.status_code == 200
    assert response.json()["correlation_id"] == correlation_id
    _assert_headers_match_span(response, _only_server_span(spans))


@pytest.mark.django_db(transaction=True)
def test_e2e_otel_own_pages_are_marked_internal_and_not_recorded(spans) -> None:
    from django.contrib.auth import get_user_model
    from django.test import Client

    from e2e_otel.bootstrap import get_runtime
    from e2e_otel.models import WorkflowSession

    staff = get_user_model().objects.create_user("staff", password="pw-for-tests", is_staff=True,
                                                 is_superuser=True)
    client = Client()
    client.force_login(staff)
    admin = client.get("/admin/e2e_otel/workflowsession/")
    scrape = client.get("/metrics")
    app = client.get("/ping/")
    assert (admin.status_code, scrape.status_code, app.status_code) == (200, 200, 200)
    servers = {s.context.trace_id: s for s in spans.get_finished_spans() if s.kind.name == "SERVER"}
    internal = {f"{tid:032x}": s.attributes.get("e2e.internal") for tid, s in servers.items()}
    assert internal[admin["X-Correlation-ID"].replace("-", "")] == "admin"
    assert internal[scrape["X-Correlation-ID"].replace("-", "")]  # "metrics"
    assert internal[app["X-Correlation-ID"].replace("-", "")] is None
    from e2e_otel.correlation import internal_requests_in_flight

    assert not internal_requests_in_flight()  # every internal request that began has ended
    runtime = get_runtime()
    assert runtime is not None and runtime.force_flush(10)
    recorded = {str(c) for c in WorkflowSession.objects.values_list("correlation_id", flat=True)}
    assert app["X-Correlation-ID"] in recorded
    assert admin["X-Correlation-ID"] not in recorded and scrape["X-Correlation-ID"] not in recorded


@pytest.mark.parametrize(("existing", "expected"), [
    (None, "X-Correlation-ID, traceresponse"),
    ("", "X-Correlation-ID, traceresponse"),
    (" , ", "X-Correlation-ID, traceresponse"),
    ("ETag", "ETag, X-Correlation-ID, traceresponse"),
    ("ETag, x-correlation-id", "ETag, x-correlation-id, traceresponse"),
    ("TRACERESPONSE,X-Correlation-ID", "TRACERESPONSE, X-Correlation-ID"),
])
def test_middleware_headers_keep_existing_expose_headers(existing: str | None, expected: str) -> None:
    """The response headers come from the span current when the request entered the middleware."""
    from django.http import HttpRequest, HttpResponse

    from e2e_otel.correlation import CorrelationMiddleware, traceresponse_value

    def view(request: HttpRequest) -> HttpResponse:
        response = HttpResponse("ok")
        if existing is not None:
            response["Access-Control-Expose-Headers"] = existing
        return response

    middleware = CorrelationMiddleware(view)
    request = HttpRequest()
    with trace.get_tracer("tests").start_as_current_span("server") as span:
        response = middleware(request)
    context = span.get_span_context()
    assert request.correlation_id == response["X-Correlation-ID"] == format_correlation_id(context.trace_id)
    assert response["traceresponse"] == traceresponse_value(context)
    assert TRACERESPONSE_RE.match(response["traceresponse"])
    assert response["Access-Control-Expose-Headers"] == expected


def test_middleware_outside_a_trace_sets_no_headers() -> None:
    from django.http import HttpRequest, HttpResponse

    from e2e_otel.correlation import CorrelationMiddleware

    request = HttpRequest()
    response = CorrelationMiddleware(lambda request: HttpResponse("ok"))(request)
    assert request.correlation_id is None
    assert not any(response.has_header(name) for name in
                   ("X-Correlation-ID", "traceresponse", "Access-Control-Expose-Headers"))


def test_asgi_requests_get_the_same_internal_marks(spans) -> None:
    from asgiref.sync import async_to_sync
    from django.test import AsyncClient

    client = AsyncClient()
    missing = async_to_sync(client.get)("/nope/7/")
    admin = async_to_sync(client.get)("/admin/jsi18n/")  # redirects to the login: routed, still the admin
    app = async_to_sync(client.get)("/ping/")
    assert (missing.status_code, admin.status_code, app.status_code) == (404, 302, 200)
    marks = {f"{s.context.trace_id:032x}": s.attributes.get("e2e.internal")
             for s in spans.get_finished_spans() if s.kind is SpanKind.SERVER}
    assert [marks[r["X-Correlation-ID"].replace("-", "")] for r in (missing, admin, app)] == \
        ["unmatched", "ignored", None]
    from e2e_otel.correlation import internal_requests_in_flight

    assert not internal_requests_in_flight()


@pytest.mark.parametrize(("span_name", "reaches_view", "mark"), [
    ("GET ping/", False, "unmatched"),  # routed, but a middleware answered before any view
    ("GET ping/", True, None),
    ("GET", True, None),  # the instrumentation could not name it, yet it resolves (a nameless "" route)
])
def test_requests_no_view_answered_are_unmatched(span_name: str, reaches_view: bool, mark: str | None) -> None:
    from django.http import HttpResponse
    from django.test import RequestFactory
    from django.urls import resolve
    from opentelemetry.sdk.trace import TracerProvider

    from e2e_otel.correlation import CorrelationMiddleware

    def get_response(request):  # type: ignore[no-untyped-def]
        if reaches_view:
            request.resolver_match = resolve("/ping/")
            middleware.process_view(request, request.resolver_match.func, (), {})
        return HttpResponse("ok")

    middleware = CorrelationMiddleware(get_response)
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span(span_name, kind=SpanKind.SERVER) as span:
        middleware(RequestFactory().get("/ping/"))
    assert span.attributes.get("e2e.internal") == mark
