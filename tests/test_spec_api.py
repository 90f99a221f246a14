"""The specification's examples of the span API, run verbatim against the live runtime (issue #11)."""

from __future__ import annotations

import inspect
import uuid
from types import SimpleNamespace
from typing import Any

import pytest
from django.contrib.auth import get_user_model

from e2e_otel.bootstrap import get_runtime
from e2e_otel.models import ErrorLog, PerformanceSnapshot, TraceStep, WorkflowSession
from e2e_otel.workflows import ErrorLogger, PerformanceMonitor, WorkflowTracer

pytestmark = [pytest.mark.mysql, pytest.mark.django_db(transaction=True)]


def flush() -> None:
    runtime = get_runtime()
    assert runtime is not None and runtime.force_flush(10)


def test_signatures_are_visible_to_tools() -> None:
    assert "workflow_session" in inspect.signature(WorkflowTracer.add_trace_step).parameters
    assert "metric_value" in inspect.signature(PerformanceMonitor().record_metric).parameters
    assert {"error_message", "user", "request"} <= set(inspect.signature(ErrorLogger.log_error).parameters)
    assert {"exception", "user", "request"} <= set(inspect.signature(ErrorLogger.log_exception).parameters)


def test_static_examples_of_the_specification(spans: Any) -> None:
    user_instance = get_user_model().objects.create_user("spec-user", password="pw-not-secret")
    cid = str(uuid.uuid4())
    # --- verbatim from the specification (000), 'uuid-string' replaced by a real one --------------
    session = WorkflowTracer.start_workflow(
        workflow_type='user_login',
        correlation_id=cid,
        user=user_instance,
        metadata={'source': 'web'}
    )
    WorkflowTracer.add_trace_step(
        correlation_id=cid,
        layer='frontend',
        component='LoginForm',
        operation='submit',
        metadata={'form_data': {'remember': True}}
    )
    WorkflowTracer.complete_workflow(
        correlation_id=cid,
        status='completed',
        metadata={'result': 'success'}
    )
    failed = str(uuid.uuid4())
    WorkflowTracer.start_workflow('product_search', failed)
    WorkflowTracer.add_trace_step(failed, 'api', 'ProductViewSet', 'list')
    WorkflowTracer.fail_workflow(
        correlation_id=failed,
        error_message='Authentication failed',
        metadata={'error_code': 401}
    )
    # ------------------------------------------------------------------------------------------------
    assert session.correlation_id == cid
    assert {"workflow user_login", "workflow product_search"} <= {s.name for s in spans.get_finished_spans()}
    flush()
    row = WorkflowSession.objects.get(correlation_id=uuid.UUID(cid))
    assert (row.workflow_type, row.status, row.user_id) == ("user_login", "completed", str(user_instance.pk))
    assert row.metadata["source"] == "web" and row.metadata["result"] == "success"
    # The specification drops the step's handle: completing the workflow ends the step too.
    assert TraceStep.objects.filter(workflow_session=row, layer="frontend", component="LoginForm",
                                    operation="submit").exists()
    failed_row = WorkflowSession.objects.get(correlation_id=uuid.UUID(failed))
    assert failed_row.status == "failed" and failed_row.metadata["error_code"] == 401


def test_instance_and_error_examples_of_the_specification(spans: Any) -> None:
    user = get_user_model().objects.create_user("spec-shopper", password="pw-not-secret")
    request = SimpleNamespace(user=user, correlation_id=str(uuid.uuid4()), method="POST", path="/api/products/",
                              META={"REMOTE_ADDR": "127.0.0.1", "HTTP_AUTHORIZATION": "Bearer tok-secret"},
                              COOKIES={"sessionid": "cookie-secret"}, body=b"password=hunter2")
    # --- verbatim from the specification (001) ------------------------------------------------------
    tracer = WorkflowTracer()
    workflow = tracer.start_workflow(
        workflow_type='login',
        user=request.user,
        metadata={'ip_address': request.META.get('REMOTE_ADDR')}
    )
    step = tracer.add_trace_step(
        workflow_session=workflow,
        layer='api',
        component='AuthViewSet',
        operation='authenticate'
    )
    tracer.complete_trace_step(step, metadata={'success': True})
    PerformanceMonitor.record_metric(
        layer='api',
        component='ProductViewSet',
        metric_name='response_time',
        metric_value=150.0,
        correlation_id=request.correlation_id
    )
    ErrorLogger.log_error(
        layer='api',
        component='ProductViewSet',
        error_type='ValidationError',
        error_message='Invalid product data',
        correlation_id=request.correlation_id,
        user=request.user
    )
    try:
        raise LookupError("product 42 vanished")
    except LookupError as e:
        ErrorLogger.log_exception(
            exception=e,
            layer='api',
            component='ProductViewSet',
            correlation_id=request.correlation_id,
            user=request.user,
            request=request
        )
    # ------------------------------------------------------------------------------------------------
    tracer.complete_workflow(workflow)
    assert step.correlation_id == workflow.correlation_id
    exported = str([(s.attributes, [e.attributes for e in s.events]) for s in spans.get_finished_spans()])
    for secret in ("tok-secret", "cookie-secret", "hunter2"):
        assert secret not in exported
    flush()
    login = WorkflowSession.objects.get(correlation_id=uuid.UUID(workflow.correlation_id))
    assert login.user_id == str(user.pk) and login.metadata["ip_address"] == "127.0.0.1"
    assert TraceStep.objects.filter(workflow_session=login, component="AuthViewSet", operation="authenticate").exists()
    cid = uuid.UUID(request.correlation_id)
    snapshot = PerformanceSnapshot.objects.get(correlation_id=cid)
    assert (snapshot.metric_name, snapshot.metric_value, snapshot.component) == (
        "response_time", 150.0, "ProductViewSet")
    errors = {e.error_type: e for e in ErrorLog.objects.filter(correlation_id=cid)}
    assert errors["ValidationError"].error_message == "Invalid product data"
    assert errors["ValidationError"].user_id == str(user.pk)
    raised = errors["LookupError"]
    assert "raise LookupError" in raised.stack_trace and raised.component == "ProductViewSet"
    assert raised.metadata["request_method"] == "POST" and raised.metadata["request_path"] == "/api/products/"
    for secret in ("tok-secret", "cookie-secret", "hunter2"):
        assert secret not in str(raised.metadata)


@pytest.mark.django_db(transaction=False)
def test_synonyms_are_one_argument_each() -> None:
    with pytest.raises(TypeError, match="metric_value"):
        PerformanceMonitor.record_metric(layer="api", component="c", metric_name="m")
    with pytest.raises(TypeError, match="both"):
        ErrorLogger.log_error("E", "m", error_message="other")
    with pytest.raises(TypeError, match="layer"):
        WorkflowTracer.add_trace_step(correlation_id=str(uuid.uuid4()), component="c", operation="o")
    with pytest.raises(ValueError):
        WorkflowTracer.add_trace_step(str(uuid.uuid4()), "api", "c", "o", workflow_session=str(uuid.uuid4()))
