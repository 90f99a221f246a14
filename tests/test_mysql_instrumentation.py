"""PyMySQL as Django's MySQL driver: ORM queries become client spans under the server span, once."""

from __future__ import annotations

import uuid

import pytest
from django.db import connection
from django.test import Client
from opentelemetry.trace import SpanKind

from e2e_otel.propagation import format_correlation_id
from tests.testapp.models import Item

pytestmark = [pytest.mark.mysql, pytest.mark.django_db]


def _split(spans):
    finished = spans.get_finished_spans()
    servers = [s for s in finished if s.kind is SpanKind.SERVER]
    db = [s for s in finished if s.kind is SpanKind.CLIENT and (s.attributes or {}).get("db.system")]
    return servers, db


def test_django_uses_pymysql_and_it_is_instrumented() -> None:
    import MySQLdb
    import pymysql
    from opentelemetry.instrumentation.pymysql import PyMySQLInstrumentor

    assert connection.vendor == "mysql"
    assert MySQLdb is pymysql
    assert PyMySQLInstrumentor().is_instrumented_by_opentelemetry


def test_orm_query_is_a_child_of_the_server_span(spans) -> None:
    item = Item.objects.create(name="widget")
    spans.clear()
    secret_pk = item.pk + 987_654_321  # a distinctive value that must not appear in the statement
    correlation_id = str(uuid.uuid4())
    response = Client().get(f"/items/{secret_pk}/", headers={"X-Correlation-ID": correlation_id})
    assert response.status_code == 200
    servers, db = _split(spans)
    assert len(servers) == 1
    server = servers[0]
    assert len(db) == 1, [(s.name, s.attributes) for s in db]  # instrumented exactly once
    query = db[0]
    assert query.parent is not None and query.parent.span_id == server.context.span_id
    assert query.context.trace_id == server.context.trace_id
    assert format_correlation_id(query.context.trace_id) == correlation_id
    attributes = dict(query.attributes)
    assert attributes["db.system"] == "mysql"
    statement = attributes["db.statement"]
    assert statement.startswith("SELECT") and "testapp_item" in statement
    assert "%s" in statement
    assert str(secret_pk) not in statement
    assert all(str(secret_pk) not in str(v) for v in attributes.values())
    assert not any(key.startswith("db.statement.parameters") for key in attributes)


def test_one_span_per_query_in_a_request(spans) -> None:
    Item.objects.bulk_create([Item(name=f"n{i}") for i in range(3)])
    spans.clear()
    response = Client().get("/items/")
    assert response.status_code == 200 and len(response.json()["items"]) == 3
    servers, db = _split(spans)
    assert len(servers) == 1 and len(db) == 1
    assert db[0].parent.span_id == servers[0].context.span_id
