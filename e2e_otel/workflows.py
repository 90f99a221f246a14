"""The seeds' Python API, built on spans: ``WorkflowTracer``, ``workflow()``, ``ErrorLogger``,
``PerformanceMonitor``.

Everything here runs on the caller's thread and only creates, annotates and ends spans; the
``WorkflowSpanProcessor`` turns those into records on the writer thread, so Jaeger and the tables
agree and no call here touches the database.

>>> handle = WorkflowTracer.start_workflow("checkout", user=request.user)     # doctest: +SKIP
>>> step = WorkflowTracer.add_trace_step(handle, "external", "payment-gateway", "charge")
>>> WorkflowTracer.complete_trace_step(step, {"amount_cents": 1200})
>>> WorkflowTracer.complete_workflow(handle.correlation_id)
"""

from __future__ import annotations

import functools
import inspect
import threading
import types
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar

from opentelemetry import context as context_api
from opentelemetry import trace
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.trace import Span, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from . import __version__
from .propagation import (
    CORRELATION_TRACE_ID_KEY,
    CorrelationIdGenerator,
    format_correlation_id,
    parse_correlation_id,
)
from .spans_to_records import (
    ATTR_COMPONENT,
    ATTR_LAYER,
    ATTR_METADATA_PREFIX,
    ATTR_OPERATION,
    ATTR_WORKFLOW_MESSAGE,
    ATTR_WORKFLOW_METADATA,
    ATTR_WORKFLOW_STATUS,
    ATTR_WORKFLOW_TYPE,
    ATTR_WORKFLOW_USER,
    EVENT_METRIC,
    EVENT_WORKFLOW_STATUS,
)

__all__ = ["ErrorLogger", "PerformanceMonitor", "StepHandle", "WorkflowHandle", "WorkflowTracer", "workflow"]

F = TypeVar("F", bound=Callable[..., Any])
P = ParamSpec("P")
R = TypeVar("R")
S = TypeVar("S", bound="_SpanFactory")

LAYERS = ("frontend", "api", "database", "cache", "external", "internal", "system")
SEVERITIES = ("debug", "info", "warning", "error", "critical")
WORKFLOW_STATUSES = ("completed", "failed")
MAX_OPEN_WORKFLOWS = 10_000
_SCOPE = "e2e_otel.workflows"
_ids = RandomIdGenerator()


def _attr_value(value: Any) -> Any:
    """An OTel-compatible attribute value (primitives kept, everything else as text)."""
    if isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return list(value)
    return str(value)


def _prefixed(prefix: str, metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    return {f"{prefix}{key}": _attr_value(value) for key, value in (metadata or {}).items()}


def _user_id(user: Any) -> str | None:
    if user is None:
        return None
    if getattr(user, "is_anonymous", False):
        return None
    for name in ("pk", "id"):
        value = getattr(user, name, None)
        if value is not None:
            return str(value)
    return str(user)


def _trace_id_of(target: Any) -> int | None:
    """Trace id of a correlation id (str/UUID), a ``WorkflowHandle``/``StepHandle`` or a WorkflowSession."""
    if target is None:
        return None
    if isinstance(target, int) and not isinstance(target, bool):
        return target
    value = getattr(target, "correlation_id", target)
    if isinstance(value, uuid.UUID):
        return value.int
    trace_id = parse_correlation_id(str(value))
    if trace_id is None:
        raise ValueError(f"not a correlation id (UUID / 32 hex digits): {value!r}")
    return trace_id


# Root spans of workflows started outside a request, kept open until complete/fail (all instances
# share them, so a workflow started by one WorkflowTracer can be completed by another).
_open: OrderedDict[int, Span] = OrderedDict()
_open_lock = threading.Lock()


# Steps of those workflows still open, so that closing the workflow also ends the steps nobody
# ended (the specification's examples drop the step handle). Bounded per workflow.
_open_steps: dict[int, list[Span]] = {}
MAX_TRACKED_STEPS = 1_000


def _register(trace_id: int, span: Span) -> None:
    evicted: Span | None = None
    evicted_steps: list[Span] = []
    with _open_lock:
        _open[trace_id] = span
        if len(_open) > MAX_OPEN_WORKFLOWS:
            evicted_id, evicted = _open.popitem(last=False)
            evicted_steps = _open_steps.pop(evicted_id, [])
    if evicted is not None:  # a workflow nobody completed: end it so its records close
        _end_steps(evicted_steps)
        evicted.set_attribute("e2e.workflow.evicted", True)
        evicted.end()


def _open_span(trace_id: int, *, pop: bool = False) -> Span | None:
    with _open_lock:
        return _open.pop(trace_id, None) if pop else _open.get(trace_id)


def _track_step(trace_id: int, span: Span) -> None:
    with _open_lock:
        if trace_id in _open:
            steps = _open_steps.setdefault(trace_id, [])
            if len(steps) < MAX_TRACKED_STEPS:
                steps.append(span)


def _pop_steps(trace_id: int) -> list[Span]:
    with _open_lock:
        return _open_steps.pop(trace_id, [])


def _end_steps(steps: list[Span]) -> None:
    for step in steps:
        if step.is_recording():  # not ended by complete_trace_step
            step.set_attribute("e2e.step.closed_by_workflow", True)
            step.end()


@dataclass(frozen=True)
class WorkflowHandle:
    """What ``start_workflow`` returns; pass it (or its ``correlation_id``) to the other calls."""

    correlation_id: str
    workflow_type: str
    span: Span | None = field(default=None, repr=False, compare=False)


@dataclass
class StepHandle:
    """An open step (a span). ``with`` makes it the current span for the block."""

    span: Span = field(repr=False)
    correlation_id: str
    layer: str
    component: str
    operation: str
    _token: object | None = field(default=None, repr=False)

    def __enter__(self) -> StepHandle:
        self._token = context_api.attach(trace.set_span_in_context(self.span))
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._token is not None:
            context_api.detach(self._token)  # type: ignore[arg-type]
            self._token = None
        if exc is not None:
            self.span.record_exception(exc)
            self.span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
        self.span.end()


class _Hybrid(Generic[S, P, R]):
    """Method usable on the class (bound to a shared default instance) and on an instance.

    Typed with ``ParamSpec`` so that mypy and IDEs see the method's real parameters in both forms.
    """

    def __init__(self, func: Callable[Concatenate[S, P], R]) -> None:
        self.func = func
        functools.update_wrapper(self, func)  # type: ignore[arg-type]

    def __get__(self, obj: S | None, owner: type[S]) -> Callable[P, R]:
        target = obj if obj is not None else owner._shared()
        return types.MethodType(self.func, target)


class _SpanFactory:
    """Tracer access shared by the API classes; a ``tracer_provider`` makes tests independent of the
    global provider."""

    _default: Any = None

    def __init__(self, tracer_provider: trace.TracerProvider | None = None) -> None:
        self._provider = tracer_provider

    @classmethod
    def _shared(cls: type[S]) -> S:
        if cls.__dict__.get("_default") is None:
            cls._default = cls()
        return cls._default  # type: ignore[no-any-return]

    @property
    def provider(self) -> trace.TracerProvider:
        return self._provider or trace.get_tracer_provider()

    @property
    def tracer(self) -> trace.Tracer:
        return self.provider.get_tracer(_SCOPE, __version__)

    def _start_in_trace(self, name: str, trace_id: int | None, attributes: Mapping[str, Any],
                        kind: SpanKind = SpanKind.INTERNAL) -> Span:
        """A new span in trace ``trace_id``: child of its open workflow root or of the current span
        when that trace is current, else a new local root carrying that trace id."""
        current = trace.get_current_span()
        current_ctx = current.get_span_context()
        if trace_id is None or (current_ctx.is_valid and current_ctx.trace_id == trace_id):
            return self.tracer.start_span(name, kind=kind, attributes=attributes)
        root = _open_span(trace_id)
        if root is not None:
            # Steps carry the workflow type too, so the session is typed before its root ends.
            root_type = (getattr(root, "attributes", None) or {}).get(ATTR_WORKFLOW_TYPE)
            if root_type:
                attributes = {**attributes, ATTR_WORKFLOW_TYPE: root_type}
            return self.tracer.start_span(name, context=trace.set_span_in_context(root), kind=kind,
                                          attributes=attributes)
        return self._start_root(name, trace_id, attributes, kind)

    def _start_root(self, name: str, trace_id: int, attributes: Mapping[str, Any],
                    kind: SpanKind = SpanKind.INTERNAL) -> Span:
        if isinstance(getattr(self.provider, "id_generator", None), CorrelationIdGenerator):
            # Our id generator turns the correlation key into the root's trace id (no fake parent).
            ctx = context_api.set_value(CORRELATION_TRACE_ID_KEY, trace_id, context_api.Context())
            token = context_api.attach(ctx)
            try:
                span = self.tracer.start_span(name, context=ctx, kind=kind, attributes=attributes)
            finally:
                context_api.detach(token)
            if span.get_span_context().trace_id == trace_id:
                return span
            span.end()
        # Any other provider: a remote parent carrying the trace id (its span id exists nowhere).
        parent = SpanContext(trace_id=trace_id, span_id=_ids.generate_span_id(), is_remote=True,
                             trace_flags=TraceFlags(TraceFlags.SAMPLED))
        ctx = trace.set_span_in_context(trace.NonRecordingSpan(parent), context_api.Context())
        return self.tracer.start_span(name, context=ctx, kind=kind, attributes=attributes)


class WorkflowTracer(_SpanFactory):
    """Workflow/step API of the seeds; every method works as ``WorkflowTracer.m(...)`` and on an
    instance (``WorkflowTracer(tracer_provider=...)``). Runs on the caller's thread, spans only."""

    @_Hybrid
    def start_workflow(self, workflow_type: str, correlation_id: Any = None, user: Any = None,
                       metadata: Mapping[str, Any] | None = None) -> WorkflowHandle:
        """Tag the current trace as ``workflow_type`` (inside a request), or start a new workflow
        root span (outside one; trace id = ``correlation_id`` when given) kept open until
        ``complete_workflow``/``fail_workflow``."""
        if not workflow_type or not isinstance(workflow_type, str):
            raise ValueError(f"workflow_type must be a non-empty string, got {workflow_type!r}")
        trace_id = _trace_id_of(correlation_id)
        attributes: dict[str, Any] = {ATTR_WORKFLOW_TYPE: workflow_type[:100],
                                      **_prefixed(ATTR_WORKFLOW_METADATA, metadata)}
        user_id = _user_id(user)
        if user_id:
            attributes[ATTR_WORKFLOW_USER] = user_id
        current = trace.get_current_span()
        ctx = current.get_span_context()
        if ctx.is_valid and current.is_recording() and (trace_id is None or trace_id == ctx.trace_id):
            current.set_attributes(attributes)
            current.add_event("workflow.start", {ATTR_WORKFLOW_TYPE: workflow_type[:100]})
            return WorkflowHandle(format_correlation_id(ctx.trace_id), workflow_type)
        if trace_id is None:
            span = self.tracer.start_span(f"workflow {workflow_type}", context=context_api.Context(),
                                          attributes=attributes)
        else:
            span = self._start_root(f"workflow {workflow_type}", trace_id, attributes)
        span.add_event("workflow.start", {ATTR_WORKFLOW_TYPE: workflow_type[:100]})
        span_trace_id = span.get_span_context().trace_id
        _register(span_trace_id, span)
        return WorkflowHandle(format_correlation_id(span_trace_id), workflow_type, span)

    @_Hybrid
    def add_trace_step(self, correlation_id: Any = None, layer: str | None = None, component: str | None = None,
                       operation: str | None = None, metadata: Mapping[str, Any] | None = None, *,
                       workflow_session: Any = None) -> StepHandle:
        """Start a step span (``e2e.layer``/component/operation); end it with ``complete_trace_step``.

        The workflow is ``correlation_id`` or ``workflow_session`` (a correlation id, a handle from
        ``start_workflow`` or a WorkflowSession); with neither, the step joins the current trace.
        ``layer``, ``component`` and ``operation`` are required."""
        # None marks "not given" (keyword callers may leave any out); an empty component is a value
        for name, given in (("layer", layer), ("component", component), ("operation", operation)):
            if given is None:
                raise TypeError(f"add_trace_step() missing required argument: {name!r}")
        if layer not in LAYERS:
            raise ValueError(f"layer must be one of {', '.join(LAYERS)}; got {layer!r}")
        trace_id = _one_trace_id(correlation_id, workflow_session)
        attributes = {ATTR_LAYER: layer, ATTR_COMPONENT: str(component)[:190],
                      ATTR_OPERATION: str(operation)[:190], **_prefixed(ATTR_METADATA_PREFIX, metadata)}
        span = self._start_in_trace(f"{component} {operation}", trace_id, attributes)
        _track_step(span.get_span_context().trace_id, span)
        return StepHandle(span, format_correlation_id(span.get_span_context().trace_id), layer,
                          str(component), str(operation))

    @_Hybrid
    def complete_trace_step(self, step: StepHandle, metadata: Mapping[str, Any] | None = None,
                            status: str = "ok") -> None:
        """End a step; ``status="error"`` marks it failed."""
        if status not in ("ok", "error"):
            raise ValueError(f"status must be 'ok' or 'error', got {status!r}")
        if metadata:
            step.span.set_attributes(_prefixed(ATTR_METADATA_PREFIX, metadata))
        if status == "error":
            step.span.set_status(Status(StatusCode.ERROR))
        step.span.end()

    @_Hybrid
    def complete_workflow(self, correlation_id: Any, status: str = "completed",
                          metadata: Mapping[str, Any] | None = None) -> None:
        """Close the workflow explicitly; its recorded status then wins over span-derived status."""
        if status not in WORKFLOW_STATUSES:
            raise ValueError(f"status must be one of {', '.join(WORKFLOW_STATUSES)}; got {status!r}")
        self._finish(correlation_id, status, None, metadata)

    @_Hybrid
    def fail_workflow(self, correlation_id: Any, error_message: str,
                      metadata: Mapping[str, Any] | None = None) -> None:
        """Close the workflow as failed with ``error_message`` (sanitised before storage)."""
        self._finish(correlation_id, "failed", error_message, metadata)

    def _finish(self, correlation_id: Any, status: str, message: str | None,
                metadata: Mapping[str, Any] | None) -> None:
        trace_id = _trace_id_of(correlation_id)
        if trace_id is None:
            raise ValueError("correlation_id is required")
        attributes: dict[str, Any] = {ATTR_WORKFLOW_STATUS: status, **_prefixed(ATTR_WORKFLOW_METADATA, metadata)}
        if message:
            attributes[ATTR_WORKFLOW_MESSAGE] = str(message)
        root = _open_span(trace_id, pop=True)
        if root is not None:
            _end_steps(_pop_steps(trace_id))
            root.add_event(EVENT_WORKFLOW_STATUS, attributes)
            if status == "failed":
                root.set_status(Status(StatusCode.ERROR, message or "workflow failed"))
            root.end()
            return
        current = trace.get_current_span()
        ctx = current.get_span_context()
        if ctx.is_valid and current.is_recording() and ctx.trace_id == trace_id:
            current.add_event(EVENT_WORKFLOW_STATUS, attributes)
            return
        span = self._start_root(f"workflow.{status}", trace_id, {})
        span.add_event(EVENT_WORKFLOW_STATUS, attributes)
        span.end()


class _WorkflowScope:
    """One entry of ``workflow(name)``: a span made current for the block (caller's thread/task)."""

    def __init__(self, factory: _SpanFactory, name: str, correlation_id: Any, user: Any,
                 metadata: Mapping[str, Any] | None) -> None:
        self._factory = factory
        self._name = name
        self._trace_id = _trace_id_of(correlation_id)
        self._user = _user_id(user)
        self._metadata = metadata
        self._span: Span | None = None
        self._token: object | None = None

    def __enter__(self) -> WorkflowHandle:
        attributes: dict[str, Any] = {ATTR_WORKFLOW_TYPE: self._name[:100],
                                      **_prefixed(ATTR_WORKFLOW_METADATA, self._metadata)}
        if self._user:
            attributes[ATTR_WORKFLOW_USER] = self._user
        span = self._factory._start_in_trace(f"workflow {self._name}", self._trace_id, attributes)
        span.add_event("workflow.start", {ATTR_WORKFLOW_TYPE: self._name[:100]})
        self._span = span
        self._token = context_api.attach(trace.set_span_in_context(span))
        return WorkflowHandle(format_correlation_id(span.get_span_context().trace_id), self._name, span)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._token is not None:
            context_api.detach(self._token)  # type: ignore[arg-type]
        span = self._span
        if span is None:
            return
        if exc is not None:
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
        span.end()


class workflow:
    """Context manager and decorator (sync and async) that runs code as workflow ``name``.

    Inside a request it adds a ``workflow <name>`` span that types the request's trace; outside one
    it starts a new trace (id = ``correlation_id`` when given) that closes when the block ends. An
    exception is recorded on the span and propagates.
    """

    def __init__(self, name: str, *, correlation_id: Any = None, user: Any = None,
                 metadata: Mapping[str, Any] | None = None,
                 tracer_provider: trace.TracerProvider | None = None) -> None:
        if not name or not isinstance(name, str):
            raise ValueError(f"workflow name must be a non-empty string, got {name!r}")
        _trace_id_of(correlation_id)  # validate early
        self.name = name
        self._args = (correlation_id, user, metadata)
        self._factory = _SpanFactory(tracer_provider) if tracer_provider else WorkflowTracer._shared()
        self._scopes: list[_WorkflowScope] = []

    def _scope(self) -> _WorkflowScope:
        return _WorkflowScope(self._factory, self.name, *self._args)

    def __enter__(self) -> WorkflowHandle:
        scope = self._scope()
        self._scopes.append(scope)
        return scope.__enter__()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._scopes.pop().__exit__(exc_type, exc, tb)

    def __call__(self, func: F) -> F:
        if inspect.iscoroutinefunction(func):
            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                with self._scope():
                    return await func(*args, **kwargs)

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with self._scope():
                return func(*args, **kwargs)

        return wrapper  # type: ignore[return-value]


class PerformanceMonitor(_SpanFactory):
    """``record_metric`` as an ``e2e.metric`` span event (→ a PerformanceSnapshot row). Class or
    instance form; caller's thread."""

    @_Hybrid
    def record_metric(self, layer: str, component: str, metric_name: str, value: float | None = None,
                      unit: str = "", correlation_id: Any = None, metadata: Mapping[str, Any] | None = None,
                      *, metric_value: float | None = None) -> None:
        """Record one sample; ``value`` and the specification's ``metric_value`` are the same
        argument (give one)."""
        value = _one_of("record_metric", "value", value, "metric_value", metric_value)
        if layer not in LAYERS:
            raise ValueError(f"layer must be one of {', '.join(LAYERS)}; got {layer!r}")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"value must be a number, got {value!r}")
        attributes = {"e2e.metric.name": str(metric_name)[:100], "e2e.metric.value": float(value),
                      "e2e.metric.unit": str(unit)[:20], ATTR_LAYER: layer, ATTR_COMPONENT: str(component)[:190],
                      **_prefixed(ATTR_METADATA_PREFIX, metadata)}
        _annotate(self, f"metric {metric_name}", correlation_id, layer, component,
                  lambda span: span.add_event(EVENT_METRIC, attributes))


class ErrorLogger(_SpanFactory):
    """``log_error``/``log_exception`` as ``exception`` span events + ERROR status (→ an ErrorLog
    group). Class or instance form; caller's thread.

    ``user`` (a Django user, or an id) becomes the session's user id; ``request`` adds its method,
    path and correlation id to the error's metadata — never its headers, cookies or body."""

    @_Hybrid
    def log_error(self, error_type: str, message: str | None = None, layer: str = "api", component: str = "",
                  severity: str = "error", metadata: Mapping[str, Any] | None = None,
                  stack_trace: str | None = None, correlation_id: Any = None, *,
                  error_message: str | None = None, user: Any = None, request: Any = None) -> None:
        """Log an error that is not a Python exception; ``message`` and the specification's
        ``error_message`` are the same argument (give one)."""
        text = _one_of("log_error", "message", message, "error_message", error_message)
        _check_choice("severity", severity, SEVERITIES)
        _check_choice("layer", layer, LAYERS)
        attributes: dict[str, Any] = {
            "exception.type": str(error_type), "exception.message": str(text),
            "exception.stacktrace": stack_trace or "", ATTR_LAYER: layer, "e2e.error.severity": severity,
            **_prefixed(ATTR_METADATA_PREFIX, metadata), **_request_facts(request),
        }
        if component:
            attributes[ATTR_COMPONENT] = str(component)[:190]

        def apply(span: Span) -> None:
            span.add_event("exception", attributes)
            span.set_status(Status(StatusCode.ERROR, str(error_type)))

        _annotate(self, f"error {error_type}", _request_correlation(correlation_id, request), layer, component,
                  apply, user)

    @_Hybrid
    def log_exception(self, exc: BaseException | None = None, layer: str = "api", component: str = "",
                      metadata: Mapping[str, Any] | None = None, severity: str = "error",
                      correlation_id: Any = None, *, exception: BaseException | None = None,
                      user: Any = None, request: Any = None) -> None:
        """Log a caught exception with its stack trace; ``exc`` and the specification's
        ``exception`` are the same argument (give one)."""
        error = _one_of("log_exception", "exc", exc, "exception", exception)
        if not isinstance(error, BaseException):
            raise ValueError(f"exception must be an exception instance, got {error!r}")
        _check_choice("severity", severity, SEVERITIES)
        _check_choice("layer", layer, LAYERS)
        attributes: dict[str, Any] = {ATTR_LAYER: layer, "e2e.error.severity": severity,
                                      **_prefixed(ATTR_METADATA_PREFIX, metadata), **_request_facts(request)}
        if component:
            attributes[ATTR_COMPONENT] = str(component)[:190]

        def apply(span: Span) -> None:
            span.record_exception(error, attributes=attributes)
            span.set_status(Status(StatusCode.ERROR, type(error).__name__))

        _annotate(self, f"error {type(error).__name__}", _request_correlation(correlation_id, request), layer,
                  component, apply, user)


def _one_of(method: str, name: str, value: Any, alias: str, alias_value: Any) -> Any:
    """The one of two synonymous arguments (project name, specification name) that was given."""
    if value is None and alias_value is None:
        raise TypeError(f"{method}() missing required argument: {name!r} (or {alias!r})")
    if value is not None and alias_value is not None and value is not alias_value:
        raise TypeError(f"{method}() got both {name!r} and {alias!r}; give one")
    return value if value is not None else alias_value


def _one_trace_id(correlation_id: Any, workflow_session: Any) -> int | None:
    first, second = _trace_id_of(correlation_id), _trace_id_of(workflow_session)
    if first is not None and second is not None and first != second:
        raise ValueError("correlation_id and workflow_session name different workflows")
    return first if first is not None else second


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


def _request_facts(request: Any) -> dict[str, Any]:
    """Method, path and correlation id of a Django request as error metadata. Headers, cookies,
    the query string and the body are deliberately left out (they carry credentials and input)."""
    if request is None:
        return {}
    facts: dict[str, Any] = {}
    method = getattr(request, "method", None)
    if isinstance(method, str) and method:
        facts[f"{ATTR_METADATA_PREFIX}request_method"] = method[:10]
    path = getattr(request, "path", None)
    if isinstance(path, str) and path:
        facts[f"{ATTR_METADATA_PREFIX}request_path"] = path[:190]
    correlation_id = getattr(request, "correlation_id", None)
    if correlation_id:
        facts[f"{ATTR_METADATA_PREFIX}request_correlation_id"] = str(correlation_id)[:36]
    return facts


def _request_correlation(correlation_id: Any, request: Any) -> Any:
    return correlation_id if correlation_id is not None else getattr(request, "correlation_id", None)


def _annotate(factory: _SpanFactory, name: str, correlation_id: Any, layer: str, component: str,
              apply: Callable[[Span], None], user: Any = None) -> None:
    """Apply to the current span when it belongs to the target trace, else to a new short span."""
    trace_id = _trace_id_of(correlation_id)
    user_id = _user_id(user)
    current = trace.get_current_span()
    ctx = current.get_span_context()
    if ctx.is_valid and current.is_recording() and (trace_id is None or trace_id == ctx.trace_id):
        apply(current)
        if user_id:
            current.set_attribute(ATTR_WORKFLOW_USER, user_id[:150])
        return
    attributes = {ATTR_LAYER: layer, ATTR_COMPONENT: str(component or name)[:190]}
    if user_id:
        attributes[ATTR_WORKFLOW_USER] = user_id[:150]
    span = factory._start_in_trace(name, trace_id, attributes) if trace_id is not None else \
        factory.tracer.start_span(name, context=context_api.Context(), attributes=attributes)
    apply(span)
    span.end()
