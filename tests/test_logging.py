"""Log correlation: records carry correlation_id/trace_id/span_id; JsonFormatter emits them."""

from __future__ import annotations

import io
import json
import logging
import sys
import time
import uuid

import pytest
from django.test import Client
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from e2e_otel.logging import JsonFormatter, install_record_factory
from e2e_otel.propagation import format_correlation_id


def test_every_record_inside_a_request_is_correlated(spans, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    correlation_id = str(uuid.uuid4())
    response = Client(raise_request_exception=False).get("/ping/", headers={"X-Correlation-ID": correlation_id})
    assert response["X-Correlation-ID"] == correlation_id
    server = next(s for s in spans.get_finished_spans() if s.kind is SpanKind.SERVER)
    inside = [r for r in caplog.records if r.correlation_id]
    assert any(r.name == "tests.views" for r in inside), [r.name for r in caplog.records]
    for record in inside:
        assert record.correlation_id == correlation_id
        assert record.trace_id == correlation_id.replace("-", "")
        assert len(record.span_id) == 16
    view_record = next(r for r in inside if r.name == "tests.views")
    assert view_record.span_id == f"{server.context.span_id:016x}"
    # the 500 path: django.request logs the exception inside the request's trace
    caplog.clear()
    response = Client(raise_request_exception=False).get("/fail/", headers={"X-Correlation-ID": correlation_id})
    assert response.status_code == 500
    errors = [r for r in caplog.records if r.name == "django.request"]
    assert errors and all(r.correlation_id == correlation_id for r in errors)


def test_records_outside_a_trace_have_empty_fields(caplog) -> None:
    caplog.set_level(logging.INFO, logger="tests.logging")
    logging.getLogger("tests.logging").info("outside")
    (record,) = [r for r in caplog.records if r.name == "tests.logging"]
    assert record.correlation_id == record.trace_id == record.span_id == ""


def test_install_record_factory_is_idempotent() -> None:
    factory = logging.getLogRecordFactory()
    install_record_factory()
    install_record_factory()
    assert logging.getLogRecordFactory() is factory


def _format(record: logging.LogRecord) -> dict:
    line = JsonFormatter().format(record)
    assert "\n" not in line
    return json.loads(line)


def test_json_formatter_carries_correlation_and_extras() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("tests.json")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        with trace.get_tracer("tests").start_as_current_span("job") as span:
            logger.info("paid %s", "order-7", extra={"order_id": 7, "amount": 12.5, "tags": ["a", "b"],
                                                     "when": uuid.UUID(int=5)})
            context = span.get_span_context()
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("failed ünïcode")
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["message"] == "paid order-7"
    assert first["level"] == "INFO" and first["logger"] == "tests.json"
    assert first["correlation_id"] == format_correlation_id(context.trace_id)
    assert first["trace_id"] == f"{context.trace_id:032x}"
    assert first["span_id"] == f"{context.span_id:016x}"
    assert first["order_id"] == 7 and first["amount"] == 12.5 and first["tags"] == ["a", "b"]
    assert first["when"] == str(uuid.UUID(int=5))  # non-JSON values are stringified
    assert first["timestamp"].endswith("+00:00")
    assert second["message"] == "failed ünïcode" and second["correlation_id"] == ""
    assert "ValueError: boom" in second["exception"]


def test_json_formatter_on_a_plain_record() -> None:
    record = logging.LogRecord("x", logging.WARNING, __file__, 1, "hello %d", (3,), None)
    data = _format(record)
    assert data["message"] == "hello 3" and data["level"] == "WARNING"
    assert data["correlation_id"] == data["trace_id"] == data["span_id"] == ""
    assert "args" not in data and "msg" not in data


def test_json_formatter_with_exc_info_tuple() -> None:
    try:
        _ = 1 / 0
    except ZeroDivisionError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "div", None, sys.exc_info())
    assert "ZeroDivisionError" in _format(record)["exception"]


def test_json_formatter_keeps_stack_info() -> None:
    record = logging.getLogger("tests.json").makeRecord("x", logging.INFO, __file__, 1, "m", None, None,
                                                        sinfo="Stack (most recent call last):\n  here")
    assert _format(record)["stack"].endswith("here")


def test_records_of_interleaved_traces_get_their_own_ids() -> None:
    """The factory memoises the previous trace's text forms (one entry): switching traces, back and
    forth, must never hand a record another trace's ids."""
    from e2e_otel import logging as e2e_logging

    install_record_factory()
    factory = logging.getLogRecordFactory()
    tracer = trace.get_tracer("tests")
    first, second = tracer.start_span("first"), tracer.start_span("second")
    for span in (first, first, second, first, second, second):
        with trace.use_span(span):
            record = factory("tests.memo", logging.INFO, __file__, 1, "m", None, None)
        context = span.get_span_context()
        assert record.correlation_id == format_correlation_id(context.trace_id)
        assert record.trace_id == f"{context.trace_id:032x}"
        assert record.span_id == f"{context.span_id:016x}"
        assert e2e_logging._last_trace[0] == context.trace_id  # the memo holds one entry
    record = factory("tests.memo", logging.INFO, __file__, 1, "m", None, None)
    assert record.correlation_id == record.trace_id == record.span_id == ""


# --- records made after the server span ended, while the request is still being handled ----------------


def _not_found_records(caplog, correlation_id: str, path: str = "/no-such-page/") -> list[logging.LogRecord]:
    caplog.clear()
    response = Client().get(path, headers={"X-Correlation-ID": correlation_id})
    assert response.status_code == 404 and response["X-Correlation-ID"] == correlation_id
    return [r for r in caplog.records if r.name == "django.request"]


def test_django_request_not_found_lines_carry_the_request_ids(spans, caplog) -> None:
    """Issue #18.8: Django logs "Not Found" in get_response after the middleware chain, i.e. after the
    OTel middleware ended the server span and detached its context."""
    caplog.set_level(logging.INFO)
    correlation_id = str(uuid.uuid4())
    (record,) = _not_found_records(caplog, correlation_id)
    assert record.getMessage() == "Not Found: /no-such-page/"
    server = next(s for s in spans.get_finished_spans() if s.kind is SpanKind.SERVER)
    assert server.end_time is not None  # the span had ended when the line was written
    assert record.correlation_id == correlation_id
    assert record.trace_id == correlation_id.replace("-", "")
    assert record.span_id == f"{server.context.span_id:016x}"


def test_request_ids_do_not_leak_past_the_request(spans, caplog) -> None:
    caplog.set_level(logging.INFO)
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    assert _not_found_records(caplog, first)[0].correlation_id == first
    logging.getLogger("tests.logging").info("between requests")
    (between,) = [r for r in caplog.records if r.name == "tests.logging"]
    assert between.correlation_id == between.trace_id == between.span_id == ""
    assert _not_found_records(caplog, second)[0].correlation_id == second


def test_bind_request_ignores_an_invalid_context() -> None:
    from opentelemetry.trace import INVALID_SPAN_CONTEXT

    from e2e_otel import logging as e2e_logging

    install_record_factory()
    e2e_logging.bind_request(INVALID_SPAN_CONTEXT)
    record = logging.getLogRecordFactory()("tests.bind", logging.INFO, __file__, 1, "m", None, None)
    assert record.correlation_id == ""
    e2e_logging._unbind_request()


@pytest.mark.slow
def test_runserver_request_and_access_lines_carry_the_correlation_id() -> None:
    """runserver's ``django.server`` line is written after the response, before it is closed."""
    from tests.servers import runserver, subprocess_env

    env = subprocess_env({"DJANGO_SETTINGS_MODULE": "tests.settings_logging", "E2E_TEST_DB": "sqlite"})
    with runserver(env) as server:
        ids = {}
        for path in ("/ping/", "/no-such-page/"):
            correlation_id = str(uuid.uuid4())
            status, headers, _ = server.get(path, {"X-Correlation-ID": correlation_id})
            assert status == (200 if path == "/ping/" else 404), server.logs()
            assert headers["x-correlation-id"] == correlation_id, server.logs()
            ids[path] = correlation_id
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and server.logs().count('"logger": "django.server"') < 2:
            time.sleep(0.1)
        lines = [json.loads(line) for line in server.logs().splitlines() if line.startswith("{")]
    by_logger: dict[str, list[dict]] = {}
    for line in lines:
        by_logger.setdefault(line["logger"], []).append(line)
    access = {line["message"].split()[1]: line for line in by_logger["django.server"]}
    assert access["/ping/"]["correlation_id"] == ids["/ping/"]
    assert access["/no-such-page/"]["correlation_id"] == ids["/no-such-page/"]
    assert access["/no-such-page/"]["span_id"]
    (not_found,) = by_logger["django.request"]
    assert not_found["correlation_id"] == ids["/no-such-page/"]
    (view,) = by_logger["tests.views"]
    assert view["correlation_id"] == ids["/ping/"]


def test_not_found_lines_under_asgi_carry_the_request_ids(spans, caplog) -> None:
    """Under ASGI Django writes the line from a worker thread (``sync_to_async``), which copies the
    request's context, so the bound ids travel with it."""
    from asgiref.sync import async_to_sync
    from django.test import AsyncClient

    caplog.set_level(logging.INFO)
    correlation_id = str(uuid.uuid4())
    response = async_to_sync(AsyncClient().get)("/no-such-page/", headers={"X-Correlation-ID": correlation_id})
    assert response.status_code == 404 and response["X-Correlation-ID"] == correlation_id
    (record,) = [r for r in caplog.records if r.name == "django.request"]
    assert record.correlation_id == correlation_id and len(record.span_id) == 16
