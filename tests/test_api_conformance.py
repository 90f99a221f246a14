"""The debugging API answers as its OpenAPI schema says: schemathesis generates requests from the
schema (valid and invalid ones) and checks every response against it — status codes, content
types, headers and bodies — in process, through the real WSGI handler, middleware and database."""

from __future__ import annotations

import uuid

import pytest
import schemathesis
from django.utils import timezone
from hypothesis import HealthCheck, settings
from schemathesis import checks
from schemathesis.specs.openapi import checks as openapi_checks

from e2e_otel.models import ErrorLog, PerformanceSnapshot, TraceStep, WorkflowSession
from tests.wsgi import application

# What the answers must agree with the schema on, for valid and invalid requests alike. (Whether a
# lenient parser should refuse more, or the schema promise less, is not judged here.)
CHECKS = [checks.not_a_server_error, openapi_checks.status_code_conformance,
          openapi_checks.content_type_conformance, openapi_checks.response_headers_conformance,
          openapi_checks.response_schema_conformance]

API_KEY = "test-api-key"
AUTH = {"Authorization": f"Bearer {API_KEY}"}

schema = schemathesis.openapi.from_wsgi("/api/v1/debugging/schema/", application,
                                        headers={**AUTH, "Accept": "application/vnd.oai.openapi+json"})


@pytest.fixture
def records(transactional_db) -> None:  # type: ignore[no-untyped-def]
    """One session with a step, an error group and a breach, so detail and list answers have bodies."""
    now = timezone.now()
    session = WorkflowSession.objects.create(correlation_id=uuid.UUID(int=0x4BF92F3577B34DA6A3CE929D0E0E4736),
                                             workflow_type="checkout", status="failed", start_time=now,
                                             last_activity=now, end_time=now, duration_ms=12.5)
    TraceStep.objects.create(workflow_session=session, correlation_id=session.correlation_id, layer="api",
                             component="CheckoutView", operation="POST /checkout/", span_id="00f067aa0ba902b7",
                             start_time=now, end_time=now, duration_ms=12.5, status="error")
    ErrorLog.objects.create(correlation_id=session.correlation_id, layer="api", component="CheckoutView",
                            error_type="ValueError", error_message="declined", fingerprint="f" * 32,
                            severity="error")
    PerformanceSnapshot.objects.create(layer="api", metric_name="response_time", metric_value=900,
                                       threshold_status="warning")


@schema.parametrize()
@settings(max_examples=8, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.filter_too_much])
@pytest.mark.django_db(transaction=True)  # each request commits on its own, as in production
def test_responses_conform_to_the_schema(case, records) -> None:  # type: ignore[no-untyped-def]
    case.call_and_validate(headers=AUTH, checks=CHECKS)
