"""OTLP/HTTP trace payloads (protobuf or JSON) → validated SDK ``ReadableSpan`` objects.

Why a strict decoder: the browser ingestion endpoint is public, so every id, timestamp and attribute
is checked before anything is handed to the processors; a payload with any invalid span is rejected
as a whole (``OTLPValidationError``) so nothing from it is stored. Over-long string values are
*truncated* (not rejected) to ``MAX_STRING_LENGTH`` characters and counted, because browsers send
long URLs and user agents legitimately; the count is reported back as an OTLP ``partial_success``
warning. Attributes and events in e2e-otel's own ``e2e.`` namespace are dropped (see
``RESERVED_PREFIX``): they steer the workflow records and are not the browser's to set.

Anyone holding the (public) browser ingest key can post, so what one request may *store* is capped
too, by dropping and counting rather than rejecting: ``exception`` events past ``max_exceptions`` per
request (each one can open an unresolved error group), and resource attributes past
``max_resource_attributes`` (``service.name`` is always kept) with values cut to
``max_resource_string_length``, since the resource is copied onto every record. With a
``DecodeBudget`` (``ingest_budget.py``) strings are scrubbed as they are converted and the request's
text and CPU budgets apply; with a trace filter, spans of traces the client may not open now are
skipped. Skipped spans are neither validated nor converted, and are counted by reason in
``DecodedBatch.dropped``. Every converted span carries ``e2e.ingested = True`` (``INGESTED_ATTRIBUTE``):
a browser cannot set ``e2e.*`` itself, so the record writer can trust it. Runs on the request thread;
pure CPU work, no I/O.
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry import trace as trace_api
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1 import trace_pb2
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace.status import Status, StatusCode

from .ingest_budget import CPU, TEXT, DecodeBudget

__all__ = [
    "DROP_CPU",
    "DROP_NEW_TRACES",
    "DROP_TEXT",
    "INGESTED_ATTRIBUTE",
    "DecodedBatch",
    "Limits",
    "OTLPValidationError",
    "count_json_spans",
    "decode_json",
    "decode_protobuf",
    "to_readable_spans",
    "trace_ids",
]

LAYER_ATTRIBUTE = "e2e.layer"
FRONTEND = "frontend"
#: Set (True) on every span that came through the ingestion endpoint, i.e. from an untrusted client.
INGESTED_ATTRIBUTE = "e2e.ingested"
# DecodedBatch.dropped reasons (the ``reason`` label of e2e_otel_ingest_dropped_spans_total)
DROP_NEW_TRACES = "new_trace_budget"
DROP_TEXT = TEXT
DROP_CPU = CPU
# e2e-otel's own control vocabulary (workflow status/type/user/metadata, e2e.internal, e2e.cache.hit,
# e2e.metric and e2e.workflow.* events) is for server-side code only: a browser could otherwise close
# or relabel other people's sessions. Ingested attributes and events under this prefix are dropped,
# except the two presentation labels the browser instrumentation sets on its own steps. The browser
# names its workflow with W3C baggage ``e2e.workflow`` on its fetches, which reaches the server span.
RESERVED_PREFIX = "e2e."
ALLOWED_RESERVED = frozenset({"e2e.component", "e2e.operation"})
EXCEPTION_EVENT = "exception"  # the event spans_to_records turns into an ErrorLog occurrence
SERVICE_NAME = "service.name"

_NS_PER_DAY = 86_400 * 1_000_000_000
_HEX_RE = re.compile(r"[0-9a-fA-F]*")
_MAX_REPORTED_ERRORS = 20
_ZERO_TRACE_ID = bytes(16)

# OTLP SpanKind (0 = unspecified) -> SDK SpanKind
_KINDS = {
    trace_pb2.Span.SPAN_KIND_UNSPECIFIED: trace_api.SpanKind.INTERNAL,
    trace_pb2.Span.SPAN_KIND_INTERNAL: trace_api.SpanKind.INTERNAL,
    trace_pb2.Span.SPAN_KIND_SERVER: trace_api.SpanKind.SERVER,
    trace_pb2.Span.SPAN_KIND_CLIENT: trace_api.SpanKind.CLIENT,
    trace_pb2.Span.SPAN_KIND_PRODUCER: trace_api.SpanKind.PRODUCER,
    trace_pb2.Span.SPAN_KIND_CONSUMER: trace_api.SpanKind.CONSUMER,
}
_STATUS = {
    trace_pb2.Status.STATUS_CODE_UNSET: StatusCode.UNSET,
    trace_pb2.Status.STATUS_CODE_OK: StatusCode.OK,
    trace_pb2.Status.STATUS_CODE_ERROR: StatusCode.ERROR,
}


@dataclass(frozen=True)
class Limits:
    """Validation bounds; the defaults are the documented ingestion limits."""

    max_spans: int = 512  # the OTel JS BatchSpanProcessor's default maxExportBatchSize
    max_exceptions: int = 20  # exception events kept per request; later ones are dropped, counted
    max_resource_attributes: int = 32  # kept per resource (service.name first); the rest dropped
    max_resource_string_length: int = 128
    max_attributes: int = 128
    max_key_length: int = 128
    max_string_length: int = 4096
    max_events: int = 128
    max_links: int = 128
    max_array_length: int = 128
    max_name_length: int = 1024
    max_past_ns: int = 7 * _NS_PER_DAY
    max_future_ns: int = 1 * _NS_PER_DAY


class OTLPValidationError(ValueError):
    """The payload is unusable; ``details`` lists what is wrong where (first few problems)."""

    def __init__(self, message: str, details: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.details = list(details)

    def as_dict(self) -> dict[str, Any]:
        return {"error": self.message, "details": self.details}


@dataclass
class DecodedBatch:
    spans: list[ReadableSpan] = field(default_factory=list)
    truncated_values: int = 0
    reserved_dropped: int = 0  # e2e.* attributes/events a browser may not set (see RESERVED_PREFIX)
    exceptions_dropped: int = 0  # exception events past Limits.max_exceptions
    resource_attributes_dropped: int = 0  # past Limits.max_resource_attributes
    unscanned_values: int = 0  # strings replaced because scrubbing them cost too much
    dropped: dict[str, int] = field(default_factory=dict)  # spans skipped, by reason (DROP_*)

    @property
    def dropped_spans(self) -> int:
        return sum(self.dropped.values())


# --- parsing ---------------------------------------------------------------------------------------


def decode_protobuf(body: bytes) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    try:
        request.ParseFromString(body)
    except (DecodeError, RuntimeWarning, ValueError) as exc:
        raise OTLPValidationError("body is not a valid OTLP ExportTraceServiceRequest protobuf",
                                  [str(exc)]) from exc
    return request


def decode_json(body: bytes, *, max_spans: int | None = None,
                budget: DecodeBudget | None = None) -> ExportTraceServiceRequest:
    """OTLP/JSON: like proto3 JSON, except trace/span ids are hex strings (not base64).

    With ``max_spans``, the spans are counted on the parsed JSON and an oversized batch is refused
    before any protobuf message is built (that conversion costs several times the JSON's memory).
    With a ``budget``, the message is built span by span (``json_format`` is pure Python, ~0.1 ms a
    span) and stops when the budget runs out; the spans left out are counted in
    ``budget.skipped_spans``.
    """
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise OTLPValidationError("body is not valid UTF-8 JSON", [str(exc)[:200]]) from exc
    if not isinstance(data, dict):
        raise OTLPValidationError("body must be a JSON object with 'resourceSpans'")
    if max_spans is not None:
        total = count_json_spans(data)
        if total > max_spans:
            raise OTLPValidationError(_too_many_spans(total, max_spans))
    errors: list[str] = []
    _hex_ids_to_base64(data, errors)
    if errors:
        raise OTLPValidationError("invalid trace/span id", errors[:_MAX_REPORTED_ERRORS])
    request = ExportTraceServiceRequest()
    try:
        if budget is None:
            json_format.ParseDict(data, request, ignore_unknown_fields=True)
        else:
            _parse_spans_within(data, request, budget)
    except (json_format.ParseError, TypeError, ValueError, RecursionError) as exc:
        raise OTLPValidationError("body does not match the OTLP trace JSON schema", [str(exc)]) from exc
    return request


_CHILDREN = {  # the repeated field holding the next level, in its JSON spellings
    "request": ("resourceSpans", "resource_spans"),
    "resource": ("scopeSpans", "scope_spans"),
    "scope": ("spans",),
}


def _split(obj: Any, level: str) -> tuple[dict[str, Any], list[Any]]:
    """``obj`` without its child list, and that list."""
    if not isinstance(obj, dict):
        raise json_format.ParseError(f"expected a JSON object at the {level} level, got {type(obj).__name__}")
    names = _CHILDREN[level]
    children: Any = next((obj[name] for name in names if name in obj), [])
    if not isinstance(children, list):
        raise json_format.ParseError(f"{names[0]} must be a list, got {type(children).__name__}")
    return {k: v for k, v in obj.items() if k not in names}, children


def _parse_spans_within(data: dict[str, Any], request: ExportTraceServiceRequest, budget: DecodeBudget) -> None:
    """``ParseDict`` one level and one span at a time, checking ``budget`` before each span."""
    head, resources = _split(data, "request")
    index = 0
    json_format.ParseDict(head, request, ignore_unknown_fields=True)
    for resource_obj in resources:
        resource_head, scopes = _split(resource_obj, "resource")
        resource = request.resource_spans.add()
        json_format.ParseDict(resource_head, resource, ignore_unknown_fields=True)
        for scope_obj in scopes:
            scope_head, spans = _split(scope_obj, "scope")
            scope = resource.scope_spans.add()
            json_format.ParseDict(scope_head, scope, ignore_unknown_fields=True)
            for span_obj in spans:
                if budget.exhausted(index):
                    budget.skipped_spans += 1
                    continue
                json_format.ParseDict(span_obj, scope.spans.add(), ignore_unknown_fields=True)
                index += 1


def _too_many_spans(total: int, limit: int) -> str:
    return f"too many spans in one request: {total} (max {limit})"


def count_json_spans(data: Mapping[str, Any]) -> int:
    """Spans in parsed OTLP/JSON, counted the way the protobuf conversion would see them (list
    lengths only, nothing copied)."""
    total = 0
    for name in ("resourceSpans", "resource_spans"):
        resource_list = data.get(name)
        if isinstance(resource_list, list):
            for resource_spans in resource_list:
                if not isinstance(resource_spans, dict):
                    continue
                scope_list = resource_spans.get("scopeSpans", resource_spans.get("scope_spans"))
                if isinstance(scope_list, list):
                    for scope_spans in scope_list:
                        if isinstance(scope_spans, dict) and isinstance(scope_spans.get("spans"), list):
                            total += len(scope_spans["spans"])
            break
    return total


def _items(container: Mapping[str, Any], *names: str) -> Iterator[tuple[int, dict[str, Any]]]:
    for name in names:
        value = container.get(name)
        if isinstance(value, list):
            for index, item in enumerate(value):
                if isinstance(item, dict):
                    yield index, item
            return


def _hex_ids_to_base64(data: dict[str, Any], errors: list[str]) -> None:
    """Rewrite the hex id fields in place into the base64 that ``json_format`` expects for bytes."""

    def convert(obj: dict[str, Any], names: tuple[str, ...], size: int, where: str) -> None:
        for name in names:
            if name not in obj:
                continue
            value = obj[name]
            if value in ("", None):
                obj[name] = ""
                continue
            if not isinstance(value, str) or len(value) != size * 2 or not _HEX_RE.fullmatch(value):
                errors.append(f"{where}.{name}: expected {size * 2} hex characters, got {str(value)[:80]!r}")
                obj[name] = ""
                continue
            obj[name] = base64.b64encode(bytes.fromhex(value)).decode("ascii")

    for r, resource_spans in _items(data, "resourceSpans", "resource_spans"):
        for s, scope_spans in _items(resource_spans, "scopeSpans", "scope_spans"):
            for i, span in _items(scope_spans, "spans"):
                where = f"resourceSpans[{r}].scopeSpans[{s}].spans[{i}]"
                convert(span, ("traceId", "trace_id"), 16, where)
                convert(span, ("spanId", "span_id"), 8, where)
                convert(span, ("parentSpanId", "parent_span_id"), 8, where)
                for k, link in _items(span, "links"):
                    convert(link, ("traceId", "trace_id"), 16, f"{where}.links[{k}]")
                    convert(link, ("spanId", "span_id"), 8, f"{where}.links[{k}]")


# --- validation + conversion -------------------------------------------------------------------------


class _Converter:
    """Accumulates problems while converting, so one response lists them together."""

    def __init__(self, limits: Limits, now_ns: int, budget: DecodeBudget | None = None) -> None:
        self.limits = limits
        self.budget = budget
        self.now_ns = now_ns
        self.errors: list[str] = []
        self.truncated = 0
        self.reserved = 0  # dropped e2e.* attributes and events
        self.exceptions_kept = 0
        self.exceptions_dropped = 0
        self.resource_dropped = 0

    def error(self, message: str) -> None:
        self.errors.append(message)

    def text(self, value: str, limit: int | None = None) -> str:
        limit = self.limits.max_string_length if limit is None else limit
        if len(value) > limit:
            self.truncated += 1
            value = value[:limit]
        if self.budget is None or not value:
            return value
        return self.budget.text(value) or ""  # None: text budget spent, the span is dropped

    def value(self, value: AnyValue, where: str, limit: int | None = None) -> Any:
        kind = value.WhichOneof("value")
        if kind == "string_value":
            return self.text(value.string_value, limit)
        if kind in ("bool_value", "int_value", "double_value"):
            return getattr(value, kind)
        if kind == "bytes_value":
            return self.text(base64.b64encode(value.bytes_value).decode("ascii"), limit)
        if kind == "array_value":
            items = list(value.array_value.values)
            if len(items) > self.limits.max_array_length:
                self.error(f"{where}: array has {len(items)} items (max {self.limits.max_array_length})")
                return None
            converted = [self.value(item, where, limit) for item in items]
            converted = [item for item in converted if item is not None]
            types = {type(item) for item in converted}
            if len(types) <= 1 and not (types & {list, tuple, dict}):
                return tuple(converted)
            # The SDK only carries homogeneous primitive arrays; keep the rest readable as JSON text.
            return self.text(json.dumps(converted, default=str), limit)
        if kind == "kvlist_value":
            mapping = {kv.key: self.value(kv.value, where, limit) for kv in value.kvlist_value.values}
            return self.text(json.dumps(mapping, default=str), limit)
        return None  # empty AnyValue: attribute without a value is dropped

    def attributes(self, pairs: Sequence[KeyValue], where: str, *, strip_reserved: bool = False,
                   string_limit: int | None = None) -> dict[str, Any]:
        if len(pairs) > self.limits.max_attributes:
            self.error(f"{where}: {len(pairs)} attributes (max {self.limits.max_attributes})")
            return {}
        result: dict[str, Any] = {}
        for pair in pairs:
            if not pair.key:
                self.error(f"{where}: attribute with an empty key")
                continue
            if len(pair.key) > self.limits.max_key_length:
                self.error(f"{where}: attribute key {pair.key[:40]!r}... longer than "
                           f"{self.limits.max_key_length} characters")
                continue
            if strip_reserved and pair.key.startswith(RESERVED_PREFIX) and pair.key not in ALLOWED_RESERVED:
                self.reserved += 1
                continue
            converted = self.value(pair.value, f"{where}.{pair.key}", string_limit)
            if converted is not None:
                result[pair.key] = converted
        return result

    def resource_attributes(self, pairs: Sequence[KeyValue], where: str) -> dict[str, Any]:
        """Short values, bounded count; ``service.name`` first so the cap never drops it."""
        result = self.attributes(pairs, where, string_limit=self.limits.max_resource_string_length)
        cap = self.limits.max_resource_attributes
        if len(result) <= cap:
            return result
        ordered = sorted(result, key=lambda key: key != SERVICE_NAME)  # stable: payload order otherwise
        self.resource_dropped += len(result) - cap
        return {key: result[key] for key in ordered[:cap]}

    def timestamp(self, value: int, where: str) -> bool:
        if value <= 0:
            self.error(f"{where}: missing timestamp")
            return False
        if value < self.now_ns - self.limits.max_past_ns:
            self.error(f"{where}: timestamp {value} is older than the accepted window "
                       f"({self.limits.max_past_ns // _NS_PER_DAY} days)")
            return False
        if value > self.now_ns + self.limits.max_future_ns:
            self.error(f"{where}: timestamp {value} is more than "
                       f"{self.limits.max_future_ns // _NS_PER_DAY} day(s) in the future")
            return False
        return True

    def span_id(self, raw: bytes, where: str, *, optional: bool = False) -> int | None:
        if optional and not raw:
            return None
        if len(raw) != 8:
            self.error(f"{where}: span id must be 8 bytes, got {len(raw)}")
            return None
        number = int.from_bytes(raw, "big")
        if number == 0:
            self.error(f"{where}: span id must not be all zeros")
            return None
        return number

    def trace_id(self, raw: bytes, where: str) -> int | None:
        if len(raw) != 16:
            self.error(f"{where}: trace id must be 16 bytes, got {len(raw)}")
            return None
        number = int.from_bytes(raw, "big")
        if number == 0:
            self.error(f"{where}: trace id must not be all zeros")
            return None
        return number

    def span(self, span: trace_pb2.Span, resource: Resource, scope: InstrumentationScope | None,
             where: str) -> ReadableSpan | None:
        before = len(self.errors)
        trace_id = self.trace_id(span.trace_id, where)
        span_id = self.span_id(span.span_id, where)
        parent_id = self.span_id(span.parent_span_id, f"{where}.parentSpanId", optional=True)
        start_ok = self.timestamp(span.start_time_unix_nano, f"{where}.startTimeUnixNano")
        end_ok = self.timestamp(span.end_time_unix_nano, f"{where}.endTimeUnixNano")
        if start_ok and end_ok and span.end_time_unix_nano < span.start_time_unix_nano:
            self.error(f"{where}: endTimeUnixNano is before startTimeUnixNano")
        if not span.name:
            self.error(f"{where}: span name is empty")
        if len(span.events) > self.limits.max_events:
            self.error(f"{where}: {len(span.events)} events (max {self.limits.max_events})")
        if len(span.links) > self.limits.max_links:
            self.error(f"{where}: {len(span.links)} links (max {self.limits.max_links})")
        attributes = self.attributes(span.attributes, f"{where}.attributes", strip_reserved=True)
        events = []
        for index, event in enumerate(span.events[: self.limits.max_events]):
            event_where = f"{where}.events[{index}]"
            stamp = event.time_unix_nano or span.start_time_unix_nano
            if event.time_unix_nano:
                self.timestamp(event.time_unix_nano, f"{event_where}.timeUnixNano")
            if event.name.startswith(RESERVED_PREFIX):
                self.reserved += 1
                continue
            if event.name == EXCEPTION_EVENT:
                if self.exceptions_kept >= self.limits.max_exceptions:
                    self.exceptions_dropped += 1
                    continue
                self.exceptions_kept += 1
            events.append(Event(self.text(event.name) or "event",
                                self.attributes(event.attributes, f"{event_where}.attributes", strip_reserved=True),
                                stamp))
        links = []
        for index, link in enumerate(span.links[: self.limits.max_links]):
            link_where = f"{where}.links[{index}]"
            link_trace = self.trace_id(link.trace_id, link_where)
            link_span = self.span_id(link.span_id, link_where)
            link_attributes = self.attributes(link.attributes, f"{link_where}.attributes")
            if link_trace is not None and link_span is not None:
                links.append(trace_api.Link(
                    trace_api.SpanContext(link_trace, link_span, is_remote=True,
                                          trace_flags=trace_api.TraceFlags(trace_api.TraceFlags.SAMPLED)),
                    link_attributes))
        if len(self.errors) > before or trace_id is None or span_id is None:
            return None
        # The browser exported it, so the browser sampled it: keep it sampled for the export path.
        flags = trace_api.TraceFlags(trace_api.TraceFlags.SAMPLED)
        context = trace_api.SpanContext(trace_id, span_id, is_remote=False, trace_flags=flags)
        parent = (trace_api.SpanContext(trace_id, parent_id, is_remote=False, trace_flags=flags)
                  if parent_id is not None else None)
        attributes[LAYER_ATTRIBUTE] = FRONTEND
        attributes[INGESTED_ATTRIBUTE] = True
        name = self.text(span.name, self.limits.max_name_length)
        return ReadableSpan(
            name=name,
            context=context,
            parent=parent,
            resource=resource,
            attributes=attributes,
            events=tuple(events),
            links=tuple(links),
            kind=_KINDS.get(span.kind, trace_api.SpanKind.INTERNAL),
            status=Status(_STATUS.get(span.status.code, StatusCode.UNSET),
                          self.text(span.status.message) or None)
            if span.status.code == trace_pb2.Status.STATUS_CODE_ERROR
            else Status(_STATUS.get(span.status.code, StatusCode.UNSET)),
            start_time=span.start_time_unix_nano,
            end_time=span.end_time_unix_nano,
            instrumentation_scope=scope,
        )


def trace_ids(request: ExportTraceServiceRequest) -> list[bytes]:
    """The distinct well-formed trace ids of ``request``, in payload order (C-level field reads)."""
    seen: dict[bytes, None] = {}
    for resource_spans in request.resource_spans:
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                raw = span.trace_id
                if raw not in seen and _well_formed_trace_id(raw):
                    seen[raw] = None
    return list(seen)


def _well_formed_trace_id(raw: bytes) -> bool:
    return len(raw) == 16 and raw != _ZERO_TRACE_ID


def to_readable_spans(request: ExportTraceServiceRequest, *, limits: Limits | None = None,
                      now_ns: int | None = None, budget: DecodeBudget | None = None,
                      admit_traces: Callable[[list[bytes]], set[bytes]] | None = None) -> DecodedBatch:
    """Validate every span, then convert; raise ``OTLPValidationError`` if anything is invalid.

    ``admit_traces(trace_ids)`` (called once the span count is known to be within the limit) returns
    the trace ids whose spans are kept; the others' spans are skipped (``DROP_NEW_TRACES``). Spans
    with a malformed trace id are always validated, so they still reject the payload.
    """
    limits = limits or Limits()
    total = sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
    if total == 0:
        empty = DecodedBatch()
        if budget is not None and budget.skipped_spans:
            empty.dropped[budget.exhausted_reason()] = budget.skipped_spans
        return empty
    if total > limits.max_spans:
        raise OTLPValidationError(_too_many_spans(total, limits.max_spans))
    converter = _Converter(limits, time.time_ns() if now_ns is None else now_ns, budget)
    batch = DecodedBatch()
    dropped = batch.dropped
    admitted = admit_traces(trace_ids(request)) if admit_traces is not None else None
    index = -1  # of the span in the whole payload

    def skip(reason: str) -> None:
        dropped[reason] = dropped.get(reason, 0) + 1

    for r, resource_spans in enumerate(request.resource_spans):
        resource_attributes = converter.resource_attributes(resource_spans.resource.attributes,
                                                            f"resourceSpans[{r}].resource.attributes")
        resource = Resource(resource_attributes, resource_spans.schema_url or None)
        for s, scope_spans in enumerate(resource_spans.scope_spans):
            scope = None
            if scope_spans.scope.name:
                scope = InstrumentationScope(
                    converter.text(scope_spans.scope.name), converter.text(scope_spans.scope.version) or None,
                    scope_spans.schema_url or None,
                    converter.attributes(scope_spans.scope.attributes,
                                         f"resourceSpans[{r}].scopeSpans[{s}].scope.attributes") or None,
                )
            for i, span in enumerate(scope_spans.spans):
                index += 1
                if (admitted is not None and span.trace_id not in admitted
                        and _well_formed_trace_id(span.trace_id)):
                    skip(DROP_NEW_TRACES)
                    continue
                if budget is not None and budget.exhausted(index):
                    skip(budget.exhausted_reason())
                    continue
                readable = converter.span(span, resource, scope, f"resourceSpans[{r}].scopeSpans[{s}].spans[{i}]")
                if budget is not None and budget.spent is not None:
                    skip(budget.spent)  # this span's own strings ran past a budget
                elif readable is not None:
                    batch.spans.append(readable)
    if converter.errors:
        shown = converter.errors[:_MAX_REPORTED_ERRORS]
        if len(converter.errors) > len(shown):
            shown.append(f"... and {len(converter.errors) - len(shown)} more")
        raise OTLPValidationError("invalid spans; nothing from this payload was accepted", shown)
    batch.truncated_values = converter.truncated
    batch.reserved_dropped = converter.reserved
    batch.exceptions_dropped = converter.exceptions_dropped
    batch.resource_attributes_dropped = converter.resource_dropped
    if budget is not None:
        batch.unscanned_values = budget.unscanned_values
        if budget.skipped_spans:  # left out while the JSON was still being parsed
            dropped[budget.exhausted_reason()] = dropped.get(budget.exhausted_reason(), 0) + budget.skipped_spans
    return batch
