"""Pure mapping from an ended span to the small, immutable facts the record writer stores.

Runs on e2e-otel's derive thread (``derive.py``) inside ``WorkflowSpanProcessor.on_end``, one span at
a time, so its work per span is bounded: one copy of the span's attributes, lookups of a fixed set of
keys, a walk over the span's events (at most 8 exceptions and 32 metrics kept), and for database
spans a cached SQL summary. ``classify`` remembers its last span, which the threshold evaluator
classifies right after the record processor. It never sanitises (the writer thread does that) nor
touches Django. Raw text is cut at capture (SQL, exception messages, stack traces), so a queued step
holds bounded memory. Exception events are rare; their fingerprint is computed here because it needs
the raw stack trace, of which only the last 20,000 characters and the innermost 5 frames are parsed,
with linear-time patterns (browsers send stack traces through the public ingestion endpoint).

Layer rules (``classify``), first match wins:

1. explicit attribute ``e2e.layer`` (set by ``WorkflowTracer.add_trace_step`` or any user code);
2. :func:`is_frontend_span` → ``frontend``;
3. ``db.system`` / ``db.system.name`` → ``cache`` for redis/memcached, else ``database``;
4. SERVER span → ``api``;
5. CLIENT span with HTTP attributes → ``external``;
6. otherwise ``internal``.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any
from urllib.parse import urlsplit

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

from .routes import normalise_rule, route_template
from .sanitize import MAX_SQL_LENGTH, sql_operation_and_table

__all__ = [
    "WORKFLOW_SOURCES",
    "ErrorData",
    "MetricData",
    "StepData",
    "WorkflowHints",
    "classify",
    "classify_error",
    "error_fingerprint",
    "is_frontend_span",
    "resolve_workflow_type",
    "step_from_span",
    "url_template",
]

# Attribute names of our own API (workflows.py writes them, this module reads them).
ATTR_LAYER = "e2e.layer"
ATTR_COMPONENT = "e2e.component"
ATTR_OPERATION = "e2e.operation"
ATTR_WORKFLOW_TYPE = "e2e.workflow.type"
#: Traffic that is no workflow, marked on the server span by ``CorrelationMiddleware`` (``traffic.py``):
#: e2e-otel's own (debugging API, ingestion, /metrics, the admin of its models), ``IGNORE_PATHS``, and
#: requests no route matched. Traced and exported, never recorded or evaluated.
ATTR_INTERNAL = "e2e.internal"
ATTR_WORKFLOW_BAGGAGE = "e2e.workflow.baggage"
ATTR_WORKFLOW_STATUS = "e2e.workflow.status"
ATTR_WORKFLOW_MESSAGE = "e2e.workflow.message"
ATTR_WORKFLOW_USER = "e2e.workflow.user"
ATTR_WORKFLOW_METADATA = "e2e.workflow.metadata."
ATTR_METADATA_PREFIX = "e2e.metadata."
EVENT_METRIC = "e2e.metric"
EVENT_WORKFLOW_STATUS = "e2e.workflow.status"
BAGGAGE_WORKFLOW = "e2e.workflow"

#: Priority of workflow type sources (lower wins).
WORKFLOW_SOURCES = {"explicit": 0, "baggage": 1, "rule": 2, "route": 3}

_FRONTEND_SCOPES = ("document-load", "document_load", "fetch", "xml-http-request", "user-interaction")
_CACHE_SYSTEMS = frozenset({"redis", "memcached"})
_HTTP_METHOD_KEYS = ("http.request.method", "http.method")
_ROUTE_KEY = "http.route"
_STATEMENT_KEYS = ("db.statement", "db.query.text")
# Attributes copied into a step's metadata (sanitised later by the writer). A fixed list bounds the
# per-span work and keeps raw URLs with ids out of the records.
_KEPT_ATTRIBUTES = (
    "http.route", "http.method", "http.request.method", "http.status_code", "http.response.status_code",
    "db.system", "db.system.name", "db.name", "db.namespace", "db.statement", "db.query.text",
    "db.operation", "db.operation.name", "db.sql.table", "db.collection.name", "server.address",
    "net.peer.name", "peer.service", "code.function", "code.namespace", "enduser.id",
)
_MAX_ERRORS_PER_SPAN = 8
_MAX_METRICS_PER_SPAN = 32
_FINGERPRINT_FRAMES = 5
_MAX_COMPONENT = 190
# Raw text is cut here, at capture, so a queued step holds bounded memory whatever the span carried.
# SQL keeps one character over the sanitiser's limit so ``scrub_sql`` still marks it truncated; a
# stack trace keeps its end (Python prints the innermost frame last).
_MAX_SQL_CAPTURE = MAX_SQL_LENGTH + 1
_MAX_MESSAGE = 5 * 1024
_MAX_STACKTRACE = 20_000


@dataclass(frozen=True, slots=True)
class ErrorData:
    """One ``exception`` event, raw (the writer sanitises message and stack trace)."""

    error_type: str
    message: str
    stacktrace: str
    layer: str
    component: str
    operation: str
    fingerprint: str
    severity: str
    category: str
    timestamp_ns: int
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class MetricData:
    """One ``e2e.metric`` event (``PerformanceMonitor.record_metric``) → a PerformanceSnapshot."""

    layer: str
    component: str
    name: str
    value: float
    unit: str
    timestamp_ns: int
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class WorkflowHints:
    """What a span says about its workflow; each field is ``None`` when the span says nothing."""

    explicit_type: str | None = None
    baggage_type: str | None = None
    route_key: str | None = None  # "METHOD route" of a server span
    status: str | None = None  # "completed" | "failed" set by complete_workflow()/fail_workflow()
    status_message: str | None = None
    user_id: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StepData:
    """An ended span reduced to what a TraceStep (and its ErrorLogs/snapshots) needs."""

    trace_id: int
    span_id: str
    parent_span_id: str
    name: str
    layer: str
    component: str
    operation: str
    start_ns: int
    end_ns: int
    status: str  # "ok" | "error"
    is_local_root: bool
    sampled: bool
    hints: WorkflowHints
    attributes: Mapping[str, Any]
    service: str = ""
    errors: tuple[ErrorData, ...] = ()
    metrics: tuple[MetricData, ...] = ()

    @property
    def duration_ms(self) -> float:
        return max(0, self.end_ns - self.start_ns) / 1e6


def is_frontend_span(span: ReadableSpan) -> bool:
    """Whether ``span`` was made in a browser (and reached us through the ingestion endpoint).

    True when any of: attribute ``e2e.layer == "frontend"``; resource attribute
    ``telemetry.sdk.language == "webjs"`` (what the OTel JS web SDK sets); or an instrumentation scope
    whose name contains ``document-load``, ``fetch``, ``xml-http-request`` or ``user-interaction``
    (the OTel JS web instrumentations).
    """
    return _is_frontend(span, span.attributes or {})


def _is_frontend(span: ReadableSpan, attributes: Mapping[str, Any]) -> bool:
    if attributes.get(ATTR_LAYER) == "frontend":
        return True
    resource = span.resource
    if resource is not None and _resource_facts(resource)[0]:
        return True
    scope = span.instrumentation_scope
    return scope is not None and bool(scope.name) and _is_frontend_scope(scope.name)


# The last resource read and its facts, one tuple like ``_last_classified``. A process's own spans
# share one Resource, immutable once made, whose attribute lookups run Python code: read it once.
_last_resource: tuple[Resource | None, bool, str] = (None, False, "")


def _resource_facts(resource: Resource) -> tuple[bool, str]:
    """``(made by the OTel JS web SDK, service name)`` of a span's resource."""
    global _last_resource
    cached = _last_resource
    if cached[0] is not resource:
        attributes = resource.attributes
        cached = _last_resource = (resource, attributes.get("telemetry.sdk.language") == "webjs",
                                   str(attributes.get("service.name", ""))[:100])
    return cached[1], cached[2]


@functools.lru_cache(maxsize=256)
def _is_frontend_scope(name: str) -> bool:
    # A process has a handful of instrumentation scopes; test each name once, not once per span.
    lower = name.lower()
    return any(marker in lower for marker in _FRONTEND_SCOPES)


def _first(attributes: Mapping[str, Any], keys: Sequence[str]) -> Any:
    for key in keys:
        value = attributes.get(key)
        if value is not None:
            return value
    return None


def _route(attributes: Mapping[str, Any]) -> str | None:
    """``http.route`` as a template (``routes.route_template``): DRF router and ``re_path`` regexes
    read ``/api/articles/{slug}`` in workflow types, components and metric labels alike."""
    route = attributes.get(_ROUTE_KEY)
    if not isinstance(route, str) or not route:
        return None
    return route_template(route)


def _step_name(span: ReadableSpan, attributes: Mapping[str, Any]) -> str:
    """The span name, with the route in template form when it is the Django instrumentation's
    ``"METHOD <http.route>"`` (a regex for ``re_path`` and DRF router routes)."""
    name = span.name
    if span.kind is SpanKind.SERVER:
        route = attributes.get(_ROUTE_KEY)
        if isinstance(route, str) and route and name.endswith(route) and name[:-len(route)].endswith(" "):
            return name[:-len(route)] + route_template(route)
    return name


# The last span classified and its result, read and replaced as one tuple (atomic under the GIL, so a
# reader never pairs one span with another's result). It holds the span itself: a later span cannot
# reuse the identity of one still referenced here.
_last_classified: tuple[ReadableSpan | None, tuple[str, str, str]] = (None, ("", "", ""))


def classify(span: ReadableSpan) -> tuple[str, str, str]:
    """``(layer, component, operation)`` of a span; never a raw URL (so never an id in a path).

    The record processor and then the threshold evaluator classify each ended span; the second call
    for the same span object returns the remembered result.
    """
    return _classified(span, None)


def _classified(span: ReadableSpan, attributes: Mapping[str, Any] | None) -> tuple[str, str, str]:
    """``classify`` through the single-entry memo; ``attributes``: the caller's copy, if it has one."""
    global _last_classified
    cached = _last_classified
    if cached[0] is span:
        return cached[1]
    result = _classify(span, dict(span.attributes or {}) if attributes is None else attributes)
    if span.end_time is not None:  # ended spans no longer change; a live one may
        _last_classified = (span, result)
    return result


def _classify(span: ReadableSpan, attributes: Mapping[str, Any]) -> tuple[str, str, str]:
    explicit = attributes.get(ATTR_LAYER)
    db_system = _first(attributes, ("db.system", "db.system.name"))
    method = _first(attributes, _HTTP_METHOD_KEYS)
    if isinstance(explicit, str) and explicit:
        layer = explicit
    elif _is_frontend(span, attributes):
        layer = "frontend"
    elif db_system is not None:
        layer = "cache" if str(db_system).lower() in _CACHE_SYSTEMS else "database"
    elif span.kind is SpanKind.SERVER:
        layer = "api"
    elif span.kind is SpanKind.CLIENT and method is not None:
        layer = "external"
    else:
        layer = "internal"

    component = attributes.get(ATTR_COMPONENT)
    operation = attributes.get(ATTR_OPERATION)
    if not (isinstance(component, str) and component):
        component = None
    if not (isinstance(operation, str) and operation):
        operation = None
    if component is None or operation is None:
        default_component, default_operation = _default_component(span, layer, attributes, method, db_system)
        component = component or default_component
        operation = operation or default_operation
    return layer, component[:_MAX_COMPONENT], operation[:_MAX_COMPONENT]


@functools.lru_cache(maxsize=4096)
def _cached_sql_summary(statement: str) -> tuple[str, str | None]:
    return sql_operation_and_table(statement)


def _sql_summary(statement: str) -> tuple[str, str | None]:
    # ORM statements repeat verbatim (placeholders, not values): parse each shape once.
    return _cached_sql_summary(statement) if len(statement) <= 4096 else sql_operation_and_table(statement)


def _default_component(
    span: ReadableSpan, layer: str, attributes: Mapping[str, Any], method: Any, db_system: Any
) -> tuple[str, str]:
    if db_system is not None:
        statement = _first(attributes, _STATEMENT_KEYS)
        operation, table = _sql_summary(statement) if isinstance(statement, str) else ("", None)
        operation = operation or str(_first(attributes, ("db.operation", "db.operation.name")) or "")
        table = table or _first(attributes, ("db.sql.table", "db.collection.name"))
        database = _first(attributes, ("db.name", "db.namespace"))
        component = str(table or database or db_system)
        return component, operation or span.name.split(" ", 1)[0]
    if method is not None:
        route = _route(attributes)
        if route is not None:
            return route, str(method)
        if layer == "frontend":
            url = _first(attributes, ("url.full", "http.url"))
            if isinstance(url, str) and url:
                return url_template(url), str(method)
        if layer == "external":
            host = _first(attributes, ("server.address", "net.peer.name", "peer.service"))
            return str(host or "<unknown host>"), str(method)
        return "<unmatched>", str(method)
    if layer == "api":
        return "<unmatched>", span.name.split(" ", 1)[0]
    return span.name, span.name


_ID_SEGMENT = re.compile(
    r"\d+|[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}|[0-9a-fA-F]{12,}"
)


def url_template(url: str) -> str:
    """The path of ``url`` with id-like segments (numbers, UUIDs, long hex) as ``:id``; no query, no
    host. Browser spans carry full URLs (``/api/v1/items/42?token=…``); records keep the shape only."""
    path = urlsplit(url[:2048]).path or "/"
    segments = [":id" if _ID_SEGMENT.fullmatch(segment) else segment for segment in path.split("/")]
    return "/".join(segments)[:_MAX_COMPONENT]


_STATUS_VALUES = frozenset({"completed", "failed"})
#: The hints of a span that says nothing about its workflow (most database spans). Shared, because steps
#: are read-only facts: building a frozen dataclass per span was a tenth of ``step_from_span``.
_NO_HINTS = WorkflowHints()


def _hints(span: ReadableSpan, attributes: Mapping[str, Any], own_keys: Sequence[str],
           events: Sequence[Event], frontend: bool) -> WorkflowHints:
    """``own_keys``: the ``e2e.`` keys of ``attributes``. ``frontend``: the span came from a browser,
    which may not close a workflow (it could name any correlation id); only server-side
    ``complete_workflow``/``fail_workflow`` set a status."""
    if not own_keys and not events and span.kind is not SpanKind.SERVER and not attributes.get("enduser.id"):
        return _NO_HINTS
    explicit = attributes.get(ATTR_WORKFLOW_TYPE)
    baggage = attributes.get(ATTR_WORKFLOW_BAGGAGE)
    status = attributes.get(ATTR_WORKFLOW_STATUS)
    message = attributes.get(ATTR_WORKFLOW_MESSAGE)
    route_key = None
    if span.kind is SpanKind.SERVER:
        method = _first(attributes, _HTTP_METHOD_KEYS)
        route = _route(attributes)
        if method is not None:
            route_key = f"{method} {route or '<unmatched>'}"
    metadata: dict[str, Any] = {}
    for event in events:
        if event.name == EVENT_WORKFLOW_STATUS and event.attributes:
            status = event.attributes.get(ATTR_WORKFLOW_STATUS, status)
            message = event.attributes.get(ATTR_WORKFLOW_MESSAGE, message)
            metadata.update(_prefixed(event.attributes, ATTR_WORKFLOW_METADATA))
    if own_keys:
        metadata.update(_prefixed_keys(attributes, own_keys, ATTR_WORKFLOW_METADATA))
    user = attributes.get(ATTR_WORKFLOW_USER) or attributes.get("enduser.id")
    return WorkflowHints(
        explicit_type=str(explicit)[:100] if explicit else None,
        baggage_type=str(baggage)[:100] if baggage else None,
        route_key=route_key,
        status=status if status in _STATUS_VALUES and not frontend else None,
        status_message=str(message) if message and not frontend else None,
        user_id=str(user)[:150] if user else None,
        metadata=metadata,
    )


def _prefixed(attributes: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    return {k[len(prefix):]: v for k, v in attributes.items() if k.startswith(prefix)}


def _prefixed_keys(attributes: Mapping[str, Any], keys: Sequence[str], prefix: str) -> dict[str, Any]:
    """``_prefixed`` over a subset of the keys (in attribute order)."""
    return {key[len(prefix):]: attributes[key] for key in keys if key.startswith(prefix)}


def step_from_span(span: ReadableSpan) -> StepData | None:
    """The step for an ended span, or ``None`` when it has no valid context or times, or when it is
    e2e-otel's own traffic (``e2e.internal``: /metrics scrapes, the debugging API, ingestion posts),
    which is tooling, not a business workflow."""
    context = span.context
    start_ns, end_ns = span.start_time, span.end_time
    if context is None or not context.is_valid or start_ns is None or end_ns is None:
        return None
    # One copy: the SDK wraps its attributes in a new proxy on every access, and lookups through it
    # run Python code (a missing key raises inside); a plain dict answers in C.
    attributes = dict(span.attributes or {})
    if ATTR_INTERNAL in attributes:
        return None
    layer, component, operation = _classified(span, attributes)  # before the cut, as classify() sees it
    for key in _STATEMENT_KEYS:
        statement = attributes.get(key)
        if isinstance(statement, str) and len(statement) > _MAX_SQL_CAPTURE:
            attributes[key] = statement[:_MAX_SQL_CAPTURE]
    # Our own attributes (workflow hints, step metadata) all start with "e2e.": find them in one pass.
    own_keys = [key for key in attributes if key.startswith("e2e.")]
    events = span.events  # the SDK copies the event list on each access
    errors, metrics = _event_records(events, layer, component, operation) if events else ((), ())
    kept = {key: attributes[key] for key in _KEPT_ATTRIBUTES if key in attributes}
    if own_keys:
        kept.update(_prefixed_keys(attributes, own_keys, ATTR_METADATA_PREFIX))
    resource = span.resource
    service = _resource_facts(resource)[1] if resource is not None else ""
    parent = span.parent
    return StepData(
        trace_id=context.trace_id,
        span_id=format(context.span_id, "016x"),
        parent_span_id=format(parent.span_id, "016x") if parent is not None else "",
        name=_step_name(span, attributes)[:_MAX_COMPONENT],
        layer=layer,
        component=component,
        operation=operation,
        start_ns=start_ns,
        end_ns=end_ns,
        status="error" if span.status.status_code is StatusCode.ERROR else "ok",
        is_local_root=parent is None or parent.is_remote,
        sampled=context.trace_flags.sampled,
        hints=_hints(span, attributes, own_keys, events, layer == "frontend"),
        attributes=kept,
        service=service,
        errors=errors,
        metrics=metrics,
    )


def _event_records(
    events: Sequence[Event], layer: str, component: str, operation: str
) -> tuple[tuple[ErrorData, ...], tuple[MetricData, ...]]:
    """The span's ``exception`` events (at most 8) and ``e2e.metric`` events (at most 32)."""
    errors: list[ErrorData] = []
    metrics: list[MetricData] = []
    for event in events:
        if event.name == "exception" and len(errors) < _MAX_ERRORS_PER_SPAN:
            errors.append(_error_from_event(event.attributes or {}, event.timestamp, layer, component, operation))
        elif event.name == EVENT_METRIC and len(metrics) < _MAX_METRICS_PER_SPAN:
            metric = _metric_from_event(event.attributes or {}, event.timestamp, layer, component)
            if metric is not None:
                metrics.append(metric)
    return tuple(errors), tuple(metrics)


def _metric_from_event(
    attributes: Mapping[str, Any], timestamp: int, layer: str, component: str
) -> MetricData | None:
    value = attributes.get("e2e.metric.value")
    name = attributes.get("e2e.metric.name")
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not name:
        return None
    return MetricData(
        layer=str(attributes.get(ATTR_LAYER) or layer),
        component=str(attributes.get(ATTR_COMPONENT) or component)[:_MAX_COMPONENT],
        name=str(name)[:100],
        value=float(value),
        unit=str(attributes.get("e2e.metric.unit") or "")[:20],
        timestamp_ns=timestamp,
        metadata=_prefixed(attributes, ATTR_METADATA_PREFIX),
    )


def _error_from_event(
    attributes: Mapping[str, Any], timestamp: int, layer: str, component: str, operation: str
) -> ErrorData:
    error_type = str(attributes.get("exception.type") or "Error")[:_MAX_COMPONENT]
    message = str(attributes.get("exception.message") or "")[:_MAX_MESSAGE]
    raw_stacktrace = str(attributes.get("exception.stacktrace") or "")
    stacktrace = raw_stacktrace[-_MAX_STACKTRACE:]
    layer = str(attributes.get(ATTR_LAYER) or layer)
    component = str(attributes.get(ATTR_COMPONENT) or component)[:_MAX_COMPONENT]
    severity, category = classify_error(error_type, message)
    explicit_severity = attributes.get("e2e.error.severity")
    if explicit_severity in ("debug", "info", "warning", "error", "critical"):
        severity = str(explicit_severity)
    explicit_category = attributes.get("e2e.error.category")
    if isinstance(explicit_category, str) and explicit_category:
        category = explicit_category[:50]
    return ErrorData(
        error_type=error_type,
        message=message,
        stacktrace=stacktrace,
        layer=layer,
        component=component,
        operation=operation,
        fingerprint=error_fingerprint(error_type, layer, component, operation, raw_stacktrace),
        severity=severity,
        category=category,
        timestamp_ns=timestamp,
        metadata=_prefixed(attributes, ATTR_METADATA_PREFIX),
    )


# --- error classification and fingerprint ----------------------------------------------------------

# (category, severity, words matched against the lower-cased exception type, then message)
_ERROR_RULES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("timeout", "error", ("timeout", "timedout", "timed out", "deadline")),
    ("database", "critical", ("operationalerror", "integrityerror", "databaseerror", "programmingerror",
                              "dataerror", "interfaceerror", "pymysql", "mysql", "deadlock")),
    ("auth", "warning", ("permissiondenied", "notauthenticated", "authenticationfailed", "unauthorized",
                         "forbidden", "invalidtoken", "csrf", "authentication", "permission")),
    ("validation", "warning", ("validationerror", "valueerror", "parseerror", "invalid", "badrequest",
                               "suspiciousoperation", "typeerror", "keyerror")),
    ("network", "error", ("connectionerror", "connectionrefused", "connectionreset", "sslerror",
                          "gaierror", "httperror", "remotedisconnected", "network", "socket")),
)


def classify_error(error_type: str, message: str = "") -> tuple[str, str]:
    """``(severity, category)`` from the exception type (and, failing that, the message)."""
    type_name = error_type.lower()
    for category, severity, words in _ERROR_RULES:
        if any(word in type_name for word in words):
            return severity, category
    lower = message[:500].lower()
    for category, severity, words in _ERROR_RULES:
        if category in ("timeout", "network") and any(word in lower for word in words):
            return severity, category
    return "error", "unknown"


# Stack traces reach us from browsers (the public ingestion endpoint), so every pattern here is
# linear: repetitions are bounded and nothing starts with an unanchored ``.*`` (which made a crafted
# path cost quadratic time per frame).
_PY_FRAME = re.compile(r'File "([^"]{1,512})", line \d{1,9}, in ([^\s]{1,256})')
_JS_FRAME = re.compile(r"at\s{1,32}([^\s(]{1,256})\s{0,32}\(?([^\s():]{1,512})")
_VOLATILE = re.compile(r"0x[0-9a-fA-F]+|\b[0-9a-fA-F]{8}-[0-9a-fA-F-]{27}\b|\d+")
_SITE_MARK = re.compile(r"[/\\](?:site-packages|dist-packages|lib[/\\]python[\d.]{1,16})(?=[/\\])")
_MAX_FRAME_PATH = 512
_MAX_STACK_SCAN = 20_000


def _strip_install_prefix(path: str) -> str:
    """``path`` after its last ``site-packages``/``dist-packages``/``lib/pythonX.Y`` directory."""
    path = path[-_MAX_FRAME_PATH:]
    last = None
    for match in _SITE_MARK.finditer(path):
        last = match
    return path if last is None else path[last.end() + 1:]


def _normalised_frames(stacktrace: str) -> list[str]:
    """The innermost frames as ``file:function`` without line numbers, ids or install prefixes."""
    found = _PY_FRAME.findall(stacktrace[-_MAX_STACK_SCAN:])
    if found:  # Python prints the innermost frame last
        return [f"{_strip_install_prefix(path)}:{func}" for path, func in found[-_FINGERPRINT_FRAMES:]]
    js = [f"{func}:{path.rsplit('/', 1)[-1]}" for func, path in _JS_FRAME.findall(stacktrace[:_MAX_STACK_SCAN])]
    return [_VOLATILE.sub("#", frame) for frame in js[:_FINGERPRINT_FRAMES]]


def error_fingerprint(error_type: str, layer: str, component: str, operation: str, stacktrace: str) -> str:
    """sha256 of type + place + top frames: the same error in the same place gets the same value.

    The message is left out (it carries ids, amounts, user input); numbers and hex ids in the
    component are masked so ``/items/41`` and ``/items/42`` (should a raw path ever get there) agree.
    """
    parts = [error_type, layer, _VOLATILE.sub("#", component), _VOLATILE.sub("#", operation)]
    parts.extend(_normalised_frames(stacktrace))
    return hashlib.sha256("\n".join(parts).encode("utf-8", "replace")).hexdigest()


# --- workflow type -----------------------------------------------------------------------------------


def match_rule(route_key: str | None, rules: Mapping[str, Sequence[str]]) -> str | None:
    """The first workflow whose ``"METHOD /route/pattern*"`` matches ``route_key`` (fnmatch).

    Keys carry route templates; a rule written against the old regex form of ``http.route``
    (``GET /api/articles/(?P<slug>[^/.]+)$``) is compared in template form too, so it keeps matching.
    """
    if not route_key or not rules:
        return None
    for name, patterns in rules.items():
        for pattern in patterns:
            if fnmatchcase(route_key, pattern):
                return name
            template = _rule_template(pattern)
            if template != pattern and fnmatchcase(route_key, template):
                return name
    return None


@functools.lru_cache(maxsize=1024)
def _rule_template(pattern: str) -> str:
    # Rules come from settings (a handful); each is converted once, not once per span.
    return normalise_rule(pattern)


def resolve_workflow_type(
    hints: Sequence[WorkflowHints], rules: Mapping[str, Sequence[str]]
) -> tuple[str, str] | None:
    """``(workflow_type, source)`` from the hints of a trace's steps, best source first.

    Order: explicit API call > baggage ``e2e.workflow`` > settings rule > ``"METHOD route"`` of the
    first server span. ``None`` when no step says anything (e.g. only database spans so far).
    """
    baggage = rule = route = None
    for hint in hints:
        if hint.explicit_type:
            return hint.explicit_type, "explicit"
        if baggage is None and hint.baggage_type:
            baggage = hint.baggage_type
        if hint.route_key and route is None:
            route = hint.route_key
        if rule is None and hint.route_key:
            rule = match_rule(hint.route_key, rules)
    if baggage is not None:
        return baggage, "baggage"
    if rule is not None:
        return rule, "rule"
    if route is not None:
        return route[:100], "route"
    return None
