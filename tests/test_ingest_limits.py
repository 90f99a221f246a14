"""Ingestion cannot hurt the app: burst, decode slots, new-trace, text and CPU budgets, and bodies
(chunked, multi-member gzip) read within the same limits."""

from __future__ import annotations

import gzip
import http.client
import io
import json
import random
import threading
import time
from typing import Any

import pytest
from django.core.handlers.wsgi import LimitedStream
from django.test import Client, RequestFactory
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1 import trace_pb2
from prometheus_client import REGISTRY

from e2e_otel import ingest
from e2e_otel.conf import get_config
from e2e_otel.ingest_budget import UNSCANNED, DecodeBudget
from e2e_otel.otlp_decode import DROP_CPU, DROP_TEXT, to_readable_spans
from e2e_otel.ratelimit import ConcurrencyGate, NewTraceBudget
from tests.test_ingest import (
    KEY,
    NS,
    ORIGIN,
    PB,
    URL,
    browser_payload,
    e2e_settings,
    frontend_spans,
    kv,
    new_trace_id,
    post,
)


@pytest.fixture(autouse=True)
def _fresh_limits():
    ingest.reset_rate_limits()
    yield
    ingest.reset_rate_limits()


def _response(response: Any) -> ExportTraceServiceResponse:
    assert response.status_code == 200, response.content
    return ExportTraceServiceResponse.FromString(response.content)


def _metric(name: str, reason: str) -> float:
    return REGISTRY.get_sample_value(f"e2e_otel_{name}_total", {"reason": reason}) or 0.0


def _traces_payload(trace_ids: list[int], *, attributes: list[Any] | None = None) -> ExportTraceServiceRequest:
    """One small span per trace id."""
    now = time.time_ns()
    spans = [trace_pb2.Span(trace_id=t.to_bytes(16, "big"), span_id=(random.getrandbits(63) | 1).to_bytes(8, "big"),
                            name="documentLoad", start_time_unix_nano=now - NS, end_time_unix_nano=now,
                            attributes=attributes or [])
             for t in trace_ids]
    return ExportTraceServiceRequest(resource_spans=[trace_pb2.ResourceSpans(
        resource=Resource(attributes=[kv("service.name", "shop-web")]),
        scope_spans=[trace_pb2.ScopeSpans(spans=spans)])])


# --- request rate: small burst, per-second refill ------------------------------------------------------


def test_default_burst_is_small_not_a_minutes_worth(spans):
    body = browser_payload(new_trace_id()).SerializeToString()
    before = _metric("ingest_refused_requests", "rate_limit")
    statuses = [post(body).status_code for _ in range(8)]
    assert statuses == [200] * 5 + [429] * 3
    assert _metric("ingest_refused_requests", "rate_limit") - before == 3


# --- decode slots ----------------------------------------------------------------------------------------


def test_decodes_beyond_the_concurrency_cap_get_503_at_once(spans):
    trace_id = new_trace_id()
    body = browser_payload(trace_id).SerializeToString()
    gate = ingest._guards_for(get_config()).decodes
    assert gate.limit == 2
    assert gate.try_enter() and gate.try_enter()  # two decodes in progress
    try:
        started = time.monotonic()
        response = post(body)
        assert time.monotonic() - started < 1.0  # answered, not queued
        assert response.status_code == 503
        assert response["Retry-After"] == "1"
        assert response["Access-Control-Allow-Origin"] == ORIGIN
        assert frontend_spans(spans, trace_id) == []
    finally:
        gate.leave()
        gate.leave()
    assert post(body).status_code == 200  # slots given back, also after a rejected payload
    assert post(b"garbage").status_code == 400
    assert gate.try_enter() and gate.try_enter()
    gate.leave()
    gate.leave()


class _BlockingStream(io.RawIOBase):
    """A request body that stalls until released: a slow upload holding a decode slot."""

    def __init__(self, data: bytes, release: threading.Event) -> None:
        self._data = io.BytesIO(data)
        self._release = release

    def read(self, size: int = -1) -> bytes:  # type: ignore[override]
        self._release.wait(10)
        return self._data.read(size)


def test_real_concurrent_uploads_hold_the_slots():
    body = browser_payload(new_trace_id()).SerializeToString()
    release = threading.Event()
    factory = RequestFactory()

    def request(stream: io.RawIOBase | None = None) -> Any:
        req = factory.post(URL, data=body, content_type=PB,
                           headers={"X-E2E-Ingest-Key": KEY, "Origin": ORIGIN})
        if stream is not None:
            req._stream = stream  # type: ignore[attr-defined]
        return req

    results: list[int] = []
    threads = [threading.Thread(target=lambda: results.append(
        ingest.ingest_traces(request(_BlockingStream(body, release))).status_code)) for _ in range(2)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 5
    gate = ingest._guards_for(get_config()).decodes
    while time.monotonic() < deadline and gate.in_use < 2:  # both uploads hold a slot
        time.sleep(0.01)
    try:
        assert ingest.ingest_traces(request()).status_code == 503
    finally:
        release.set()
        for thread in threads:
            thread.join(10)
    assert results == [200, 200]


def test_concurrency_gate_never_blocks():
    gate = ConcurrencyGate(1)
    assert gate.try_enter()
    started = time.monotonic()
    assert not gate.try_enter()
    assert time.monotonic() - started < 0.1
    gate.leave()
    with pytest.raises(ValueError):
        gate.leave()  # bounded: a double release is a bug, not an extra slot
    with pytest.raises(ValueError):
        ConcurrencyGate(0)


# --- new traces (workflow sessions) per client per minute ------------------------------------------------------


def test_spans_of_traces_beyond_the_new_trace_budget_are_dropped_reported_and_counted(spans):
    traces = [new_trace_id() for _ in range(5)]
    before = _metric("ingest_dropped_spans", "new_trace_budget")
    with e2e_settings(INGEST_NEW_TRACES_PER_MINUTE=3):
        result = _response(post(_traces_payload(traces).SerializeToString()))
        assert result.partial_success.rejected_spans == 2
        assert "INGEST_NEW_TRACES_PER_MINUTE" in result.partial_success.error_message
        kept = [t for t in traces if frontend_spans(spans, t)]
        assert kept == traces[:3]
        # a kept trace goes on (a page's later batch); a new one is still refused
        again = _response(post(_traces_payload([traces[0], new_trace_id()]).SerializeToString()))
        assert again.partial_success.rejected_spans == 1
        assert len(frontend_spans(spans, traces[0])) == 2
        # another client has a budget of its own
        other = Client().post(URL, data=_traces_payload([traces[4]]).SerializeToString(), content_type=PB,
                              headers={"X-E2E-Ingest-Key": KEY, "Origin": ORIGIN}, REMOTE_ADDR="192.0.2.9")
        assert _response(other).partial_success.rejected_spans == 0
    assert _metric("ingest_dropped_spans", "new_trace_budget") - before == 3


def test_new_trace_budget_slides_with_the_minute():
    now = [0.0]
    budget = NewTraceBudget(per_minute=2, clock=lambda: now[0])
    a, b, c = b"a" * 16, b"b" * 16, b"c" * 16
    assert budget.admit("x", [a, b, c]) == {a, b}
    now[0] = 30.0
    assert budget.admit("x", [a, c]) == {a}  # a is known, c still over budget
    now[0] = 61.0
    assert budget.admit("x", [c]) == {c}  # a and b left the window
    with pytest.raises(ValueError):
        NewTraceBudget(per_minute=0)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 30), st.lists(st.integers(0, 40), max_size=8), st.floats(0, 30)),
                max_size=40))
def test_new_trace_budget_invariants(requests):
    """Whatever clients send: no client opens more than the budget in any 60 s, memory stays bounded."""
    now = [0.0]
    budget = NewTraceBudget(per_minute=3, max_entries=20, clock=lambda: now[0])
    opened: dict[int, list[tuple[float, bytes]]] = {}
    for client, ids, step in requests:
        now[0] += step
        offered = [i.to_bytes(16, "big") for i in ids]
        admitted = budget.admit(str(client), offered)
        assert admitted <= set(offered)
        known = {t for stamp, t in opened.get(client, []) if stamp > now[0] - 60}
        for trace_id in admitted - known:
            opened.setdefault(client, []).append((now[0], trace_id))
        recent = [t for stamp, t in opened.get(client, []) if stamp > now[0] - 60]
        assert len(set(recent)) <= 3 or budget.entries < sum(len(v) for v in opened.values())
        assert budget.entries <= 20


# --- string and CPU budgets: bounded work before and in the masker -----------------------------------


def test_text_past_the_request_budget_is_never_masked_and_its_spans_are_dropped():
    scrubbed: list[str] = []

    def scrub(text: str) -> str:
        scrubbed.append(text)
        return text

    payload = _traces_payload([new_trace_id() for _ in range(10)], attributes=[kv("http.url", "u" * 300)])
    budget = DecodeBudget(max_text_chars=1000, cpu_seconds=10, max_value_seconds=10, scrub=scrub)
    batch = to_readable_spans(payload, budget=budget)
    assert len(batch.spans) == 3  # "shop-web" + 4 x ("documentLoad" + 300 characters) is past 1000
    assert batch.dropped == {DROP_TEXT: 7}
    assert sum(map(len, scrubbed)) <= 1000


def test_cpu_budget_stops_conversion_between_spans():
    ticks = iter(range(1000))
    budget = DecodeBudget(max_text_chars=10**6, cpu_seconds=3.5, max_value_seconds=10, free_spans=0,
                          clock=lambda: float(next(ticks)))  # one "second" per clock read
    batch = to_readable_spans(_traces_payload([new_trace_id() for _ in range(10)]), budget=budget)
    assert len(batch.spans) == 3
    assert batch.dropped == {DROP_CPU: 7}


def test_a_value_too_costly_to_mask_is_redacted_not_scrubbed_again_downstream():
    clock = [0.0]

    def slow_scrub(text: str) -> str:
        clock[0] += 0.005 if "q" in text else 0.00001
        return text

    costly, fine = "q" * 300, "https://shop.example/" + "p" * 400
    payload = _traces_payload([new_trace_id()], attributes=[kv("a", costly), kv("b", fine)])
    budget = DecodeBudget(max_text_chars=10**6, cpu_seconds=10, max_value_seconds=0.001, scrub=slow_scrub,
                          clock=lambda: clock[0])
    batch = to_readable_spans(payload, budget=budget)
    assert dict(batch.spans[0].attributes or {})["a"] == UNSCANNED
    assert dict(batch.spans[0].attributes or {})["b"] == fine
    assert batch.unscanned_values == 1


HOSTILE = ("secret" * 700)[:4096]  # ~9 ms for the masker: each "secret" walks back over the run


def test_token_like_text_is_redacted_once_instead_of_masked_three_times(spans):
    """The attack of issue #18: 4 KiB of secret-looking words per attribute, the real masker."""
    url = "https://shop.example/checkout?" + "&".join(f"item{i}=sku-{i:05d}" for i in range(200))
    trace_id = new_trace_id()
    payload = _traces_payload([trace_id], attributes=[kv(f"k{i}", HOSTILE) for i in range(3)]
                              + [kv("http.url", url[:4096])])
    result = _response(post(payload.SerializeToString()))
    assert "3 attribute value(s) too costly to scan" in result.partial_success.error_message
    (span,) = frontend_spans(spans, trace_id)
    attributes = dict(span.attributes or {})
    assert {attributes[f"k{i}"] for i in range(3)} == {UNSCANNED}
    assert attributes["http.url"] == url[:4096]  # ordinary long text is kept as it was


def test_masker_never_sees_a_string_full_of_secret_looking_words():
    scrubbed: list[str] = []
    budget = DecodeBudget(max_text_chars=10**6, cpu_seconds=10, max_value_seconds=10, max_secret_words=32,
                          scrub=lambda text: scrubbed.append(text) or text)
    words = "https://x.example/?" + "&".join(f"token{i}=v" for i in range(32))  # 32 words: masked as usual
    assert budget.text(words) == words
    assert budget.text(("span" * 100)[:300]) == UNSCANNED  # "pan" x 75, the masker's worst case
    assert budget.text("Pan" + "Secret" * 60) == UNSCANNED  # any case
    assert scrubbed == [words]
    assert budget.unscanned_values == 2


def test_one_request_costs_at_most_its_cpu_budget(spans):
    traces = [new_trace_id() for _ in range(512)]
    payload = _traces_payload(traces, attributes=[kv(f"n{i}", i) for i in range(128)])
    before = _metric("ingest_dropped_spans", "cpu_budget")
    started = time.thread_time()
    with e2e_settings(INGEST_NEW_TRACES_PER_MINUTE=1000):
        result = _response(post(gzip.compress(payload.SerializeToString()), **{"Content-Encoding": "gzip"}))
    spent = time.thread_time() - started
    # unbounded: 65,536 attributes converted here (~100 ms), then derived, exported and stored
    assert spent < get_config().INGEST_CPU_BUDGET_MS / 1000 + 0.03
    assert "INGEST_CPU_BUDGET_MS" in result.partial_success.error_message
    dropped = result.partial_success.rejected_spans
    assert 0 < dropped < 512
    assert sum(1 for t in traces if frontend_spans(spans, t)) == 512 - dropped
    assert _metric("ingest_dropped_spans", "cpu_budget") - before == dropped


def test_value_length_is_capped_before_masking(spans):
    trace_id = new_trace_id()
    with e2e_settings(INGEST_MAX_VALUE_LENGTH=100):
        result = _response(post(_traces_payload([trace_id], attributes=[kv("a", "x" * 500)]).SerializeToString()))
    assert "truncated" in result.partial_success.error_message
    assert dict(frontend_spans(spans, trace_id)[0].attributes or {})["a"] == "x" * 100


def test_text_budget_end_to_end(spans):
    traces = [new_trace_id() for _ in range(6)]
    before = _metric("ingest_dropped_spans", "text_budget")
    with e2e_settings(INGEST_MAX_TEXT_CHARS=2048):
        result = _response(post(_traces_payload(traces, attributes=[kv("v", "y" * 700)]).SerializeToString()))
    assert result.partial_success.rejected_spans == 4
    assert "INGEST_MAX_TEXT_CHARS" in result.partial_success.error_message
    assert [bool(frontend_spans(spans, t)) for t in traces] == [True, True] + [False] * 4
    assert _metric("ingest_dropped_spans", "text_budget") - before == 4


# --- bodies: chunked, multi-member gzip ----------------------------------------------------------------------


def _unsized_request(body: bytes, *, terminated: bool, **headers: str) -> Any:
    request = RequestFactory().post(URL, data=body, content_type=PB, headers={
        "X-E2E-Ingest-Key": KEY, "Origin": ORIGIN, "Transfer-Encoding": "chunked", **headers})
    # what Django builds for a request without Content-Length: a body stream of length 0
    del request.META["CONTENT_LENGTH"]
    request.META["wsgi.input"] = io.BytesIO(body)
    request.META["wsgi.input_terminated"] = terminated
    request._stream = LimitedStream(request.META["wsgi.input"], 0)
    return request


def test_chunked_body_is_read_within_the_size_limit(spans):
    trace_id = new_trace_id()
    body = browser_payload(trace_id).SerializeToString()
    response = ingest.ingest_traces(_unsized_request(body, terminated=True))
    assert response.status_code == 200, response.content
    assert len(frontend_spans(spans, trace_id)) == 2

    big = browser_payload(new_trace_id(), extra_spans=40).SerializeToString()
    with e2e_settings(INGEST_MAX_BODY_BYTES=1024):
        assert ingest.ingest_traces(_unsized_request(big, terminated=True)).status_code == 413

    gzipped = gzip.compress(body)
    response = ingest.ingest_traces(_unsized_request(gzipped, terminated=True, **{"Content-Encoding": "gzip"}))
    assert response.status_code == 200


def test_chunked_body_the_server_cannot_delimit_is_refused_with_411(spans):
    trace_id = new_trace_id()
    body = browser_payload(trace_id).SerializeToString()
    response = ingest.ingest_traces(_unsized_request(body, terminated=False))
    assert response.status_code == 411
    assert frontend_spans(spans, trace_id) == []


def _members(*messages: ExportTraceServiceRequest) -> bytes:
    # Serialised protobuf messages concatenate into one whose repeated fields are joined.
    return b"".join(gzip.compress(m.SerializeToString()) for m in messages)


def test_every_gzip_member_is_decoded(spans):
    first, second = new_trace_id(), new_trace_id()
    body = _members(browser_payload(first), browser_payload(second))
    result = _response(post(body, **{"Content-Encoding": "gzip"}))
    assert result.partial_success.rejected_spans == 0
    assert len(frontend_spans(spans, first)) == 2
    assert len(frontend_spans(spans, second)) == 2


def test_gzip_members_share_one_decompressed_limit(spans):
    member = gzip.compress(b"\xff" * 2048)  # 2 KiB each when inflated
    with e2e_settings(INGEST_MAX_DECOMPRESSED_BYTES=4096):
        assert post(member * 2, **{"Content-Encoding": "gzip"}).status_code == 400  # 4 KiB: size ok, not OTLP
        response = post(member * 3, **{"Content-Encoding": "gzip"})
    assert response.status_code == 413


def test_trailing_garbage_after_a_gzip_member_is_refused(spans):
    trace_id = new_trace_id()
    body = gzip.compress(browser_payload(trace_id).SerializeToString()) + b"not gzip"
    assert post(body, **{"Content-Encoding": "gzip"}).status_code == 400
    assert frontend_spans(spans, trace_id) == []


@settings(max_examples=80, deadline=None)
@given(st.lists(st.binary(max_size=3000), min_size=1, max_size=5), st.binary(max_size=40))
def test_gunzip_is_exact_or_refuses(chunks, tail):
    """Any concatenation of members (plus junk) inflates to exactly their bytes or is refused with 4xx."""
    body = b"".join(gzip.compress(chunk) for chunk in chunks) + tail
    limit = 8192
    try:
        data = ingest._gunzip(body, limit)
    except ingest._Reject as reject:
        assert reject.status in (400, 413)
        assert tail or sum(map(len, chunks)) > limit
    else:
        assert data == b"".join(chunks) + (gzip.decompress(tail) if tail else b"")


# --- OTLP/JSON (what the OTel JS exporter sends by default) is built within the budget too ------------


def test_json_is_parsed_span_by_span_within_the_cpu_budget():
    from e2e_otel.otlp_decode import decode_json
    from tests.test_ingest import to_otlp_json

    body = to_otlp_json(_traces_payload([new_trace_id() for _ in range(10)], attributes=[kv("a", "b")]))
    ticks = iter(range(1000))
    budget = DecodeBudget(max_text_chars=10**6, cpu_seconds=3.5, max_value_seconds=10, free_spans=0,
                          clock=lambda: float(next(ticks)))
    message = decode_json(body, max_spans=512, budget=budget)
    assert sum(len(ss.spans) for rs in message.resource_spans for ss in rs.scope_spans) == 3
    batch = to_readable_spans(message, budget=budget)  # one budget per request: it is spent already
    assert batch.spans == []
    assert batch.dropped == {DROP_CPU: 10}


def test_json_endpoint_reports_spans_left_unparsed(spans):
    from tests.test_ingest import to_otlp_json

    traces = [new_trace_id() for _ in range(512)]
    body = to_otlp_json(_traces_payload(traces, attributes=[kv(f"n{i}", i) for i in range(24)]))
    started = time.thread_time()
    with e2e_settings(INGEST_NEW_TRACES_PER_MINUTE=1000, INGEST_MAX_BODY_BYTES=4 * 1024 * 1024,
                      INGEST_MAX_DECOMPRESSED_BYTES=4 * 1024 * 1024, INGEST_CPU_BUDGET_MS=10):
        response = post(body, content_type="application/json")
    spent = time.thread_time() - started
    assert response.status_code == 200, response.content
    result = json.loads(response.content)["partialSuccess"]
    assert int(result["rejectedSpans"]) > 0
    assert "INGEST_CPU_BUDGET_MS" in result["errorMessage"]
    assert sum(1 for t in traces if frontend_spans(spans, t)) == 512 - int(result["rejectedSpans"])
    assert spent < 0.2  # json.loads and the span count run before the budget can stop anything


# --- a refused body is read to its end, so the server can keep the connection ----------------------------


def test_refused_bodies_within_the_limit_are_discarded():
    body = browser_payload(new_trace_id(), extra_spans=500).SerializeToString()
    assert len(body) > 64 * 1024  # more than gunicorn drains by itself
    factory = RequestFactory()

    def refused(**extra: Any) -> Any:
        request = factory.post(URL, data=body, content_type=PB, headers={"Origin": ORIGIN, **extra})
        response = ingest.ingest_traces(request)
        return response.status_code, request.read()

    assert refused(**{"X-E2E-Ingest-Key": "wrong"}) == (401, b"")
    with e2e_settings(INGEST_MAX_BODY_BYTES=1024 * 1024):
        for _ in range(5):
            refused(**{"X-E2E-Ingest-Key": KEY})
        assert refused(**{"X-E2E-Ingest-Key": KEY}) == (429, b"")
    # declared over the limit: not read at all (the server closes that connection)
    ingest.reset_rate_limits()
    with e2e_settings(INGEST_MAX_BODY_BYTES=4096):
        status, rest = refused(**{"X-E2E-Ingest-Key": KEY})
    assert (status, len(rest)) == (413, len(body))


def test_refused_chunked_body_is_discarded_up_to_the_limit():
    body = browser_payload(new_trace_id()).SerializeToString()
    request = _unsized_request(body, terminated=True, **{"X-E2E-Ingest-Key": "wrong"})
    assert ingest.ingest_traces(request).status_code == 401
    assert request.META["wsgi.input"].read() == b""


def test_a_pause_inside_a_small_batch_costs_the_browser_nothing():
    """A garbage collection (or a first import) charged to a 10-span request does not drop its spans."""
    budget = DecodeBudget(max_text_chars=10**6, cpu_seconds=0.04, max_value_seconds=10,
                          clock=iter([0.0] + [5.0] * 100).__next__)
    batch = to_readable_spans(_traces_payload([new_trace_id() for _ in range(10)]), budget=budget)
    assert len(batch.spans) == 10 and batch.dropped == {}


# --- over real HTTP (gunicorn): chunked and multi-member bodies arrive; a refusal keeps the connection ---


@pytest.mark.slow
@pytest.mark.mysql
@pytest.mark.django_db(transaction=True)
def test_gunicorn_chunked_and_multi_member_bodies_and_keepalive_after_429(otlp_receiver):
    from django.db import connection

    from tests.servers import BIN_DIR, ServerProcess, free_port, subprocess_env

    env = subprocess_env({
        "DJANGO_SETTINGS_MODULE": "tests.settings_export",
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_receiver.http_base_endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "E2E_MYSQL_DATABASE": connection.settings_dict["NAME"],
    })
    chunked_trace, first, second = new_trace_id(), new_trace_id(), new_trace_id()
    headers = {"Content-Type": PB, "Origin": ORIGIN, "X-E2E-Ingest-Key": KEY}
    port = free_port()
    # gthread: the sync worker closes every connection anyway, so keep-alive needs threads
    argv = [str(BIN_DIR / "gunicorn"), "tests.wsgi:application", "-b", f"127.0.0.1:{port}", "-w", "1",
            "-k", "gthread", "--threads", "2", "--graceful-timeout", "3", "--timeout", "30"]
    with ServerProcess(argv, port=port, env=env) as server:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)

        def send(body: Any, extra: dict[str, str], **options: Any) -> int:
            conn.request("POST", URL, body=body, headers={**headers, **extra}, **options)
            response = conn.getresponse()
            response.read()
            return response.status

        payload = browser_payload(chunked_trace).SerializeToString()
        pieces = iter([payload[:100], payload[100:]])
        assert send(pieces, {}, encode_chunked=True) == 200, server.logs()
        assert send(_members(browser_payload(first), browser_payload(second)), {"Content-Encoding": "gzip"}) == 200
        big = browser_payload(new_trace_id(), extra_spans=500).SerializeToString()
        assert len(big) > 64 * 1024
        statuses = [send(big, {}) for _ in range(6)]
        assert statuses[-1] == 429, statuses
        sock = conn.sock
        assert sock is not None
        assert send(big, {}) == 429
        assert conn.sock is sock  # the refused body was read: the server kept the connection
        conn.close()
        for trace_id in (chunked_trace, first, second):
            otlp_receiver.wait_for(lambda spans, t=f"{trace_id:032x}": sum(
                1 for s in spans if s.trace_id == t and s.attributes.get("e2e.layer") == "frontend") >= 2,
                timeout=15)
