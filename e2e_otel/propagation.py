"""Context propagation: a spec-exact W3C Trace Context propagator and ``X-Correlation-ID`` support.

Why not the stock ``TraceContextTextMapPropagator``: its ``TraceState`` uses the superseded
``tenant@system`` key grammar (so keys like ``foo@`` or ``t@`` + 15 chars are dropped), and it throws
away the whole ``tracestate`` on a duplicated key, while the current W3C grammar and conformance suite
(github.com/w3c/trace-context, ``test/``) accept those keys and expect the list to be inherited with
one of the duplicates kept. :class:`W3CTraceContextPropagator` follows the current specification and
passes that suite with nothing excluded.

Why a correlation propagator: browsers and simple clients often send only an ``X-Correlation-ID``
UUID. When no valid ``traceparent`` arrived, :class:`CorrelationIdPropagator` stores the UUID in the
context and :class:`CorrelationIdGenerator` turns it into the trace id of the server span, so the
client's id *is* the trace id (``format_correlation_id`` gives it back in UUID form).
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

from opentelemetry import context as context_api
from opentelemetry import trace
from opentelemetry.context.context import Context
from opentelemetry.propagators import textmap
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.trace.span import TraceState

from .baggage import BaggagePropagator

__all__ = [
    "CORRELATION_HEADER",
    "CORRELATION_TRACE_ID_KEY",
    "CorrelationIdGenerator",
    "CorrelationIdPropagator",
    "W3CTraceContextPropagator",
    "W3CTraceState",
    "default_propagator",
    "format_correlation_id",
    "parse_correlation_id",
]

TRACEPARENT_HEADER = "traceparent"
TRACESTATE_HEADER = "tracestate"
CORRELATION_HEADER = "x-correlation-id"

#: Context key under which :class:`CorrelationIdPropagator` stores the 128-bit trace id.
CORRELATION_TRACE_ID_KEY = context_api.create_key("e2e-correlation-trace-id")

_TRACE_ID_LIMIT = 1 << 128
_OWS = " \t"

# --- traceparent -------------------------------------------------------------------------------
# version "-" trace-id "-" parent-id "-" trace-flags, lowercase hex only ([0-9a-f], never \d/\w so
# no non-ASCII digit can slip in). Version 00 is exactly these 55 characters.
_TRACEPARENT_LENGTH = 55
_TRACEPARENT_RE = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
# Flags this version of the spec defines (sampled, random-trace-id); "Vendors MUST set [the other
# flags] to zero" when sending.
_KNOWN_FLAGS = trace.TraceFlags.SAMPLED | trace.TraceFlags.RANDOM_TRACE_ID

# --- tracestate (W3C Trace Context, current grammar) ------------------------------------------
# key      = ( lcalpha / DIGIT ) 0*255 ( keychar )
# keychar  = lcalpha / DIGIT / "_" / "-" / "*" / "/" / "@"
# value    = 0*255(chr) nblk-chr ; chr = %x20 / nblk-chr ; nblk-chr = %x21-2B / %x2D-3C / %x3E-7E
_KEY_RE = re.compile(r"[a-z0-9][a-z0-9_\-*/@]{0,255}")
_VALUE_RE = re.compile(r"[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]")
_MAX_MEMBERS = 32
# Upper bound on the combined raw header before any parsing, to bound the work an attacker can cause.
# The largest valid list without padding is 32 * (256 + 1 + 256) + 31 = 16447 characters.
_MAX_TRACESTATE_LENGTH = 32 * 1024

# --- correlation id ----------------------------------------------------------------------------
_CORRELATION_MAX_LENGTH = 36
_CORRELATION_RE = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}|[0-9a-fA-F]{32}"
)


def _valid_member(key: object, value: object) -> bool:
    return (
        isinstance(key, str)
        and isinstance(value, str)
        and _KEY_RE.fullmatch(key) is not None
        and _VALUE_RE.fullmatch(value) is not None
    )


class W3CTraceState(TraceState):
    """A ``TraceState`` validated with the current W3C key grammar (``@`` allowed anywhere after the
    first character, up to 256 characters).

    The base class validates with the superseded ``tenant@system`` grammar and would silently drop
    keys such as ``foo@`` or ``1abc``; mutations here keep the subclass so those keys survive.
    Duplicated keys keep the first (left-most, i.e. most recent) entry, as the specification allows.
    """

    def __init__(self, entries: Sequence[tuple[str, str]] | None = None) -> None:
        # Deliberately not calling TraceState.__init__: it re-validates with the old grammar.
        self._dict: dict[str, str] = {}
        if not entries or len(entries) > _MAX_MEMBERS:
            return
        for key, value in entries:
            if _valid_member(key, value) and key not in self._dict:
                self._dict[key] = value

    @classmethod
    def from_header(cls, header_list: list[str]) -> W3CTraceState:
        """Parse one or more ``tracestate`` field values (combined with ``,`` per RFC 9110 5.3).

        Any malformed member, more than 32 members or an oversized header discards the whole list
        (the spec's "MAY discard the entire header"); empty and whitespace-only members are skipped.
        """
        combined = ",".join(header_list)
        if len(combined) > _MAX_TRACESTATE_LENGTH:
            return cls()
        pairs: dict[str, str] = {}
        members = 0
        for raw in combined.split(","):
            member = raw.strip(_OWS)
            if not member:
                continue
            members += 1
            if members > _MAX_MEMBERS:
                return cls()
            key, eq, value = member.partition("=")
            if not eq or not _valid_member(key, value):
                return cls()
            pairs.setdefault(key, value)
        state = cls()
        state._dict = pairs
        return state

    def add(self, key: str, value: str) -> W3CTraceState:
        """Return a copy with ``key`` prepended; invalid, duplicate or 33rd entries are ignored."""
        if not _valid_member(key, value) or key in self._dict or len(self._dict) >= _MAX_MEMBERS:
            return self
        return type(self)([(key, value), *self._dict.items()])

    def update(self, key: str, value: str) -> W3CTraceState:
        """Return a copy with ``key`` moved to the front with ``value`` (upsert, like the base)."""
        if not _valid_member(key, value):
            return self
        if key not in self._dict and len(self._dict) >= _MAX_MEMBERS:
            return self
        rest = [(k, v) for k, v in self._dict.items() if k != key]
        return type(self)([(key, value), *rest])

    def delete(self, key: str) -> W3CTraceState:
        """Return a copy without ``key``."""
        if key not in self._dict:
            return self
        return type(self)([(k, v) for k, v in self._dict.items() if k != key])


def _parse_traceparent(value: str) -> tuple[int, int, int] | None:
    """``(trace_id, span_id, flags)`` for a valid traceparent value, else ``None``."""
    value = value.strip(_OWS)
    # A comma can only come from a server joining repeated traceparent fields (RFC 9110 5.3):
    # several traceparents are invalid, whatever the version.
    if len(value) < _TRACEPARENT_LENGTH or "," in value:
        return None
    match = _TRACEPARENT_RE.fullmatch(value, 0, _TRACEPARENT_LENGTH)
    if match is None:
        return None
    version, trace_hex, span_hex, flags_hex = match.groups()
    if version == "ff":
        return None
    # 00 is exactly 55 characters; a higher version may append fields after a dash.
    if len(value) > _TRACEPARENT_LENGTH and (version == "00" or value[_TRACEPARENT_LENGTH] != "-"):
        return None
    trace_id = int(trace_hex, 16)
    span_id = int(span_hex, 16)
    if trace_id == trace.INVALID_TRACE_ID or span_id == trace.INVALID_SPAN_ID:
        return None
    return trace_id, span_id, int(flags_hex, 16)


class W3CTraceContextPropagator(textmap.TextMapPropagator):
    """Drop-in replacement for ``TraceContextTextMapPropagator`` following the current W3C grammar.

    Extract: a valid ``traceparent`` (exactly one field; 00 strict, higher versions parsed by their
    first 55 characters, ``ff``/upper-case/all-zero ids rejected) becomes a remote
    ``NonRecordingSpan``; ``tracestate`` is only read next to a valid ``traceparent`` and an invalid
    one is dropped without affecting the ``traceparent``. Inject always writes version 00.
    """

    def extract(
        self,
        carrier: textmap.CarrierT,
        context: Context | None = None,
        getter: textmap.Getter[textmap.CarrierT] = textmap.default_getter,
    ) -> Context:
        """Return ``context`` (an empty one when ``None``) with the remote parent span, if valid."""
        if context is None:
            context = Context()
        values = getter.get(carrier, TRACEPARENT_HEADER)
        if not values or len(values) != 1 or not isinstance(values[0], str):
            return context
        parsed = _parse_traceparent(values[0])
        if parsed is None:
            return context
        trace_id, span_id, flags = parsed

        state_values = getter.get(carrier, TRACESTATE_HEADER)
        if state_values:
            trace_state = W3CTraceState.from_header([v for v in state_values if isinstance(v, str)])
        else:
            trace_state = W3CTraceState()

        span_context = trace.SpanContext(
            trace_id=trace_id,
            span_id=span_id,
            is_remote=True,
            trace_flags=trace.TraceFlags(flags),
            trace_state=trace_state,
        )
        return trace.set_span_in_context(trace.NonRecordingSpan(span_context), context)

    def inject(
        self,
        carrier: textmap.CarrierT,
        context: Context | None = None,
        setter: textmap.Setter[textmap.CarrierT] = textmap.default_setter,
    ) -> None:
        """Write ``traceparent`` (version 00, undefined flag bits cleared) and a non-empty
        ``tracestate`` for the span in ``context`` (the current one when ``None``)."""
        span_context = trace.get_current_span(context).get_span_context()
        if not span_context.is_valid:
            return
        flags = span_context.trace_flags & _KNOWN_FLAGS
        setter.set(
            carrier,
            TRACEPARENT_HEADER,
            f"00-{span_context.trace_id:032x}-{span_context.span_id:016x}-{flags:02x}",
        )
        if span_context.trace_state:
            setter.set(carrier, TRACESTATE_HEADER, span_context.trace_state.to_header())

    @property
    def fields(self) -> set[str]:
        """The carrier keys ``inject`` may set."""
        return {TRACEPARENT_HEADER, TRACESTATE_HEADER}


# --- correlation id ----------------------------------------------------------------------------


def parse_correlation_id(value: str | None) -> int | None:
    """The 128-bit trace id for a UUID (8-4-4-4-12 or 32 hex digits, any case), else ``None``.

    Strict on purpose: the value becomes a trace id, so anything longer than 36 characters is
    rejected before parsing, and whitespace, braces, ``urn:uuid:``, control characters, non-ASCII
    digits and the all-zero (invalid) id are refused.
    """
    if not isinstance(value, str) or len(value) > _CORRELATION_MAX_LENGTH:
        return None
    if _CORRELATION_RE.fullmatch(value) is None:
        return None
    trace_id = int(value.replace("-", ""), 16)
    if trace_id == trace.INVALID_TRACE_ID:
        return None
    return trace_id


def format_correlation_id(trace_id: int) -> str:
    """Lower-case 8-4-4-4-12 UUID form of a 128-bit trace id (the inverse of the parser)."""
    if not 0 <= trace_id < _TRACE_ID_LIMIT:
        raise ValueError(f"trace id out of the 128-bit range: {trace_id!r}")
    text = f"{trace_id:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


class CorrelationIdPropagator(textmap.TextMapPropagator):
    """Reads ``X-Correlation-ID`` when no valid ``traceparent`` was extracted.

    Must run after the trace-context propagator (see :func:`default_propagator`): it only looks at
    the span context that propagator left in ``context``. A valid id is stored under
    :data:`CORRELATION_TRACE_ID_KEY`; no span context is created (a fake remote parent would make the
    server span a child of a span that never existed). Nothing is injected: outgoing requests carry
    ``traceparent``, whose trace id already equals the correlation id.

    ``header`` is the correlation header's name (``E2E_OTEL["CORRELATION_HEADER"]``), any case.
    """

    def __init__(self, header: str = CORRELATION_HEADER) -> None:
        if not header or not header.strip():
            raise ValueError(f"correlation header name must not be empty, got {header!r}")
        self.header = header.strip().lower()

    def extract(
        self,
        carrier: textmap.CarrierT,
        context: Context | None = None,
        getter: textmap.Getter[textmap.CarrierT] = textmap.default_getter,
    ) -> Context:
        """Return ``context`` (an empty one when ``None``) plus the correlation trace id, if valid."""
        if context is None:
            context = Context()
        if trace.get_current_span(context).get_span_context().is_valid:
            return context
        values = getter.get(carrier, self.header)
        if not values or len(values) != 1:
            return context
        trace_id = parse_correlation_id(values[0])
        if trace_id is None:
            return context
        return context_api.set_value(CORRELATION_TRACE_ID_KEY, trace_id, context)

    def inject(
        self,
        carrier: textmap.CarrierT,
        context: Context | None = None,
        setter: textmap.Setter[textmap.CarrierT] = textmap.default_setter,
    ) -> None:
        """Write nothing: ``traceparent`` carries the id downstream."""

    @property
    def fields(self) -> set[str]:
        """No carrier keys are ever set."""
        return set()


def _correlation_trace_id() -> int | None:
    """The correlation trace id if it may seed a root span right now, else ``None``.

    Only while no valid span is current: that is the moment the server span is started (the Django
    instrumentation attaches the extracted context, whose span is invalid, then starts the span).
    Once the server span is active, later roots in the same context - e.g. ``start_span(...,
    context=Context())`` for a background job - get a random id instead of silently joining the
    request's trace as a second root.
    """
    current = context_api.get_current()
    trace_id = current.get(CORRELATION_TRACE_ID_KEY)
    if trace_id is None or type(trace_id) is not int or not 0 < trace_id < _TRACE_ID_LIMIT:
        return None
    if trace.get_current_span(current).get_span_context().is_valid:
        return None
    return trace_id


# A random trace id that is also an RFC 4122 version-4 UUID: version nibble 4 (high nibble of byte 6,
# bits 79..76 of the big-endian integer) and variant 0b10 (top bits of byte 8, bits 63..62). Both sit
# in the left-most nine bytes, outside the right-most seven that W3C Trace Context level 2 requires
# to be random when the random-trace-id flag is set, so that flag stays true.
_UUID4_CLEAR = ~((0xF << 76) | (0x3 << 62)) & (_TRACE_ID_LIMIT - 1)
_UUID4_SET = (0x4 << 76) | (0x2 << 62)


class CorrelationIdGenerator(RandomIdGenerator):
    """Random ids, except that a root span started while :data:`CORRELATION_TRACE_ID_KEY` is set in
    the current context and no valid span is current reuses the correlation id as its trace id.

    The SDK only asks for a trace id for root spans (children inherit the parent's), so in practice
    this is the request's server span; see :func:`_correlation_trace_id` for why later roots in the
    same context do not reuse it. Cost: two context-variable lookups per root span. Random ids are
    version-4 UUIDs too (``uuid.UUID(correlation_id).version == 4``), so strict UUID validators in
    clients accept the ``X-Correlation-ID`` they get back; 122 bits stay random (one AND, one OR).
    """

    def generate_trace_id(self) -> int:
        """The correlation trace id when it applies, else a random version-4 UUID (never 0: the
        version bits are set)."""
        trace_id = _correlation_trace_id()
        if trace_id is not None:
            return trace_id
        return (random.getrandbits(128) & _UUID4_CLEAR) | _UUID4_SET

    def is_trace_id_random(self) -> bool:
        """False for a client-supplied correlation id (the W3C random-trace-id flag must not be set
        for ids we cannot vouch for); the SDK calls this right after ``generate_trace_id``."""
        return _correlation_trace_id() is None


def default_propagator(correlation_header: str = CORRELATION_HEADER) -> textmap.TextMapPropagator:
    """Trace context, then baggage (our validating :class:`~e2e_otel.baggage.BaggagePropagator`, not
    the stock one, which logs malformed headers verbatim), then correlation id; the order matters
    because ``CompositePropagator`` feeds each propagator the context returned by the previous one
    and the correlation propagator checks whether trace context produced a valid parent."""
    return CompositePropagator(
        [W3CTraceContextPropagator(), BaggagePropagator(), CorrelationIdPropagator(correlation_header)]
    )
