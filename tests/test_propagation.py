"""Unit tests for e2e_otel.propagation.

The trace-context cases mirror the W3C conformance suite (github.com/w3c/trace-context, ``test/``);
the suite itself is run against a throwaway server, never vendored here.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry import baggage, context, propagate, trace
from opentelemetry.context.context import Context
from opentelemetry.instrumentation.utils import _start_internal_or_server_span
from opentelemetry.instrumentation.wsgi import wsgi_getter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import TraceFlags

from e2e_otel.propagation import (
    CORRELATION_HEADER,
    CORRELATION_TRACE_ID_KEY,
    CorrelationIdGenerator,
    CorrelationIdPropagator,
    W3CTraceContextPropagator,
    W3CTraceState,
    default_propagator,
    format_correlation_id,
    parse_correlation_id,
)

TRACE_ID = "12345678901234567890123456789012"
SPAN_ID = "1234567890123456"
VALID = f"00-{TRACE_ID}-{SPAN_ID}-01"
PARENT_00 = f"00-{TRACE_ID}-{SPAN_ID}-00"
UUID = "0af7651916cd43dd8448eb211c80319c"
UUID_DASHED = "0af76519-16cd-43dd-8448-eb211c80319c"

propagator = W3CTraceContextPropagator()


def span_context(ctx: Context) -> trace.SpanContext:
    return trace.get_current_span(ctx).get_span_context()


def extract(traceparent: str | list[str] | None = None, tracestate: str | list[str] | None = None) -> Context:
    carrier: dict[str, str | list[str]] = {}
    if traceparent is not None:
        carrier["traceparent"] = traceparent
    if tracestate is not None:
        carrier["tracestate"] = tracestate
    return propagator.extract(carrier)


def state(tracestate: str | list[str], traceparent: str = PARENT_00) -> dict[str, str]:
    ctx = extract(traceparent, tracestate)
    sc = span_context(ctx)
    assert sc.is_valid and f"{sc.trace_id:032x}" == TRACE_ID, (
        "an invalid tracestate must not affect traceparent"
    )
    return dict(sc.trace_state)


def is_extracted(traceparent: str | list[str]) -> bool:
    sc = span_context(extract(traceparent))
    if not sc.is_valid:
        return False
    assert sc.is_remote
    return True


@pytest.fixture
def tracer() -> trace.Tracer:
    return TracerProvider(id_generator=CorrelationIdGenerator()).get_tracer("test")


# --- traceparent ---------------------------------------------------------------------------------


def test_valid_traceparent_gives_remote_non_recording_span() -> None:
    ctx = extract(VALID)
    span = trace.get_current_span(ctx)
    assert isinstance(span, trace.NonRecordingSpan)
    sc = span.get_span_context()
    assert (sc.trace_id, sc.span_id) == (int(TRACE_ID, 16), int(SPAN_ID, 16))
    assert sc.is_remote and sc.trace_flags == TraceFlags.SAMPLED and sc.trace_flags.sampled
    assert len(sc.trace_state) == 0


def test_missing_traceparent_returns_given_context_untouched() -> None:
    base = context.set_value("k", "v", Context())
    ctx = propagator.extract({}, base)
    assert ctx is base
    assert not span_context(propagator.extract({})).is_valid


@pytest.mark.parametrize(
    "value",
    [
        f"cc-{TRACE_ID}-{SPAN_ID}-01",
        f"cc-{TRACE_ID}-{SPAN_ID}-01-what-the-future-will-be-like",
        f"01-{TRACE_ID}-{SPAN_ID}-01-",
        f"fe-{TRACE_ID}-{SPAN_ID}-00-x",
    ],
)
def test_future_versions_parse_first_55_chars(value: str) -> None:
    sc = span_context(extract(value))
    assert sc.is_valid and f"{sc.trace_id:032x}" == TRACE_ID and f"{sc.span_id:016x}" == SPAN_ID


@pytest.mark.parametrize(
    "value",
    [
        # version 00 is exactly 55 characters
        f"00-{TRACE_ID}-{SPAN_ID}-01.",
        f"00-{TRACE_ID}-{SPAN_ID}-01-what-the-future-will-be-like",
        f"00-{TRACE_ID}-{SPAN_ID}-01-",
        # a higher version needs a dash after the first 55 characters
        f"cc-{TRACE_ID}-{SPAN_ID}-01.what-the-future-will-be-like",
        f"cc-{TRACE_ID}-{SPAN_ID}-010",
        # version ff is forbidden
        f"ff-{TRACE_ID}-{SPAN_ID}-01",
        # version illegal characters / length
        f".0-{TRACE_ID}-{SPAN_ID}-01",
        f"0.-{TRACE_ID}-{SPAN_ID}-01",
        f"0A-{TRACE_ID}-{SPAN_ID}-01",
        f"000-{TRACE_ID}-{SPAN_ID}-01",
        f"0000-{TRACE_ID}-{SPAN_ID}-01",
        f"0-{TRACE_ID}-{SPAN_ID}-01",
        # trace id
        f"00-{'0' * 32}-{SPAN_ID}-01",
        f"00-.{TRACE_ID[1:]}-{SPAN_ID}-01",
        f"00-{TRACE_ID[:-1]}.-{SPAN_ID}-01",
        f"00-{TRACE_ID}3-{SPAN_ID}-01",
        f"00-{TRACE_ID[:-1]}-{SPAN_ID}-01",
        f"00-{'ABCDEF' + TRACE_ID[6:]}-{SPAN_ID}-01",
        "00-" + "\u0660" * 32 + f"-{SPAN_ID}-01",  # non-ASCII (Arabic-Indic) digits
        # parent id
        f"00-{TRACE_ID}-{'0' * 16}-01",
        f"00-{TRACE_ID}-.{SPAN_ID[1:]}-01",
        f"00-{TRACE_ID}-{SPAN_ID}7-01",
        f"00-{TRACE_ID}-{SPAN_ID[:-1]}-01",
        f"00-{TRACE_ID}-ABCDEF{SPAN_ID[6:]}-01",
        # flags
        f"00-{TRACE_ID}-{SPAN_ID}-.0",
        f"00-{TRACE_ID}-{SPAN_ID}-0.",
        f"00-{TRACE_ID}-{SPAN_ID}-001",
        f"00-{TRACE_ID}-{SPAN_ID}-1",
        f"00-{TRACE_ID}-{SPAN_ID}-0A",
        # separators / shape
        f"00_{TRACE_ID}_{SPAN_ID}_01",
        f"00-{TRACE_ID}-{SPAN_ID}",
        "",
        " ",
        "garbage",
    ],
)
def test_invalid_traceparent_is_ignored(value: str) -> None:
    assert not is_extracted(value)
    base = context.set_value("k", "v", Context())
    assert propagator.extract({"traceparent": value, "tracestate": "foo=1"}, base) is base


@pytest.mark.parametrize("flags", ["00", "01", "02", "03", "09", "ff"])
def test_trace_flags_are_kept_on_extract(flags: str) -> None:
    sc = span_context(extract(f"00-{TRACE_ID}-{SPAN_ID}-{flags}"))
    assert sc.is_valid and sc.trace_flags == int(flags, 16)


@pytest.mark.parametrize(
    "value",
    [f" {VALID}", f"\t{VALID}", f"{VALID} ", f"{VALID}\t", f"\t {VALID} \t"],
)
def test_traceparent_surrounding_ows_is_ignored(value: str) -> None:
    assert is_extracted(value)


def test_multiple_traceparent_headers_are_invalid() -> None:
    other = f"00-{TRACE_ID[:-1]}1-{SPAN_ID}-01"
    assert not is_extracted([other, VALID])
    assert not is_extracted([VALID, VALID])
    # as joined by a WSGI server (RFC 9110 5.3), whatever the version
    assert not is_extracted(f"{other},{VALID}")
    assert not is_extracted(f"cc-{TRACE_ID}-{SPAN_ID}-01-x,cc-{TRACE_ID}-{SPAN_ID}-01")
    assert is_extracted([VALID])


def test_wsgi_environ_carrier_and_header_names() -> None:
    environ = {"HTTP_TRACEPARENT": VALID, "HTTP_TRACESTATE": "foo=1"}
    sc = span_context(propagator.extract(environ, getter=wsgi_getter))
    assert f"{sc.trace_id:032x}" == TRACE_ID and dict(sc.trace_state) == {"foo": "1"}
    # "trace-parent" is another header (HTTP_TRACE_PARENT), not traceparent
    assert not span_context(propagator.extract({"HTTP_TRACE_PARENT": VALID}, getter=wsgi_getter)).is_valid
    sc = span_context(
        propagator.extract({"HTTP_TRACEPARENT": VALID, "HTTP_TRACE_STATE": "foo=1"}, getter=wsgi_getter)
    )
    assert sc.is_valid and len(sc.trace_state) == 0


# --- tracestate ----------------------------------------------------------------------------------


def test_tracestate_without_traceparent_is_discarded() -> None:
    ctx = extract(None, "foo=1")
    assert trace.get_current_span(ctx) is trace.INVALID_SPAN
    ctx = extract(f"00-{'0' * 32}-{SPAN_ID}-01", "foo=1")
    assert not span_context(ctx).is_valid


def test_tracestate_inherited_in_order() -> None:
    assert list(state("foo=1,bar=2").items()) == [("foo", "1"), ("bar", "2")]


def test_multiple_tracestate_headers_are_combined_in_order() -> None:
    combined = state(["foo=1,bar=2", "rojo=1,congo=2", "baz=3"])
    assert list(combined.items()) == [("foo", "1"), ("bar", "2"), ("rojo", "1"), ("congo", "2"), ("baz", "3")]


def test_all_allowed_characters() -> None:
    key = "".join(map(chr, range(0x61, 0x7B))) + "0123456789_-*/"
    value = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) not in ",=")
    assert state(f"{key}={value}") == {key: value}
    assert state(f"{key}@a-z0-9_-*/={value}") == {f"{key}@a-z0-9_-*/": value}


@pytest.mark.parametrize(
    "key",
    [
        "foo",
        "1abc",
        "0",
        "foo@",
        "foo@bar",
        "foo@@bar",
        "foo@bar@baz",
        "z" * 256,
        "t" * 241 + "@" + "v" * 14,
        "t" * 242 + "@v",
        "t@" + "v" * 15,
        "a_b-c*d/e",
    ],
)
def test_valid_keys(key: str) -> None:
    assert state(["foo=1", f"{key}=1"]) == {"foo": "1", key: "1"}


@pytest.mark.parametrize(
    "key",
    [
        "@foo",
        "FOO",
        "Foo",
        "foo.bar",
        "foo ",
        "_foo",
        "-foo",
        "*foo",
        "/foo",
        "z" * 257,
        "foo\x00",
        "föo",
        "",
    ],
)
def test_invalid_key_discards_whole_tracestate(key: str) -> None:
    assert state(["foo=1", f"{key}=1,bar=2"]) == {}


@pytest.mark.parametrize(
    ("member", "expected"),
    [
        ("foo= 1", {"foo": " 1"}),  # leading spaces belong to the value
        ("foo=1 ", {"foo": "1"}),  # trailing spaces are OWS
        ("foo=a b", {"foo": "a b"}),
        ("foo=" + "v" * 256, {"foo": "v" * 256}),
    ],
)
def test_valid_values(member: str, expected: dict[str, str]) -> None:
    assert state(member) == expected


@pytest.mark.parametrize(
    "value", ["foo=bar=baz", "foo=,bar=3", "foo", "=1", "foo=" + "v" * 257, "foo=a\tb", "foo=\x7f", "foo=é"]
)
def test_invalid_values_discard_whole_tracestate(value: str) -> None:
    assert state(value) == {}


def test_duplicate_keys_keep_first_entry_and_traceparent() -> None:
    # The current suite expects the list inherited with one of the duplicates kept.
    assert state("foo=1,foo=1") == {"foo": "1"}
    assert state("foo=1,foo=2") == {"foo": "1"}
    assert state(["foo=1", "foo=2"]) == {"foo": "1"}
    assert list(state("foo=1,bar=2,foo=3").items()) == [("foo", "1"), ("bar", "2")]


def test_member_count_limit() -> None:
    members = [f"bar{i:02d}={i:02d}" for i in range(1, 34)]
    headers = [",".join(members[0:10]), ",".join(members[10:20]), ",".join(members[20:30])]
    ok = state([*headers, ",".join(members[30:32])])
    assert len(ok) == 32 and ok["bar01"] == "01" and ok["bar32"] == "32"
    assert state([*headers, ",".join(members[30:33])]) == {}
    # a duplicate is still a list member
    assert state([*headers, ",".join(members[30:32]), "bar01=01"]) == {}
    # empty members do not count
    assert len(state(",,".join(members[:32]) + ", ,\t,")) == 32


def test_ows_and_empty_members() -> None:
    expected = {"foo": "1", "bar": "2", "baz": "3"}
    assert state("foo=1 \t , \t bar=2, \t baz=3") == expected
    assert state("foo=1\t \t,\t \tbar=2,\t \tbaz=3") == expected
    for value in (" foo=1", "\tfoo=1", "foo=1 ", "foo=1\t", "\t foo=1 \t", ",foo=1,", ", ,foo=1, ,"):
        assert state(value) == {"foo": "1"}, value


def test_empty_tracestate_headers() -> None:
    assert state("") == {}
    assert state(" \t ") == {}
    assert state(",,") == {}
    assert state(["foo=1", ""]) == {"foo": "1"}
    assert state(["", "foo=1"]) == {"foo": "1"}


def test_oversized_tracestate_is_discarded() -> None:
    assert state("foo=1," + " " * 40_000) == {}


def test_future_version_tracestate_is_parsed() -> None:
    assert state("foo@=1", traceparent=f"cc-{TRACE_ID}-{SPAN_ID}-01-extra") == {"foo@": "1"}


def test_trace_state_mutations_keep_current_key_grammar() -> None:
    ts = W3CTraceState([("foo@", "1"), ("1abc", "2")])
    assert dict(ts) == {"foo@": "1", "1abc": "2"}
    added = ts.add("t@vvvvvvvvvvvvvvv", "3")
    assert isinstance(added, W3CTraceState) and list(added) == ["t@vvvvvvvvvvvvvvv", "foo@", "1abc"]
    assert ts.add("BAD", "x") is ts and ts.add("foo@", "x") is ts
    updated = added.update("1abc", "9")
    assert list(updated.items()) == [("1abc", "9"), ("t@vvvvvvvvvvvvvvv", "3"), ("foo@", "1")]
    assert dict(updated.delete("foo@")) == {"1abc": "9", "t@vvvvvvvvvvvvvvv": "3"}
    assert updated.delete("missing") is updated
    full = W3CTraceState([(f"k{i}", "v") for i in range(32)])
    assert full.add("new", "v") is full and full.update("new", "v") is full
    assert len(full.update("k5", "w")) == 32
    assert len(W3CTraceState([(f"k{i}", "v") for i in range(33)])) == 0
    assert ts.to_header() == "foo@=1,1abc=2"


# --- inject --------------------------------------------------------------------------------------


def test_inject_round_trip_from_remote_context() -> None:
    ctx = extract(f"cc-{TRACE_ID}-{SPAN_ID}-03-future", "foo@=1,bar=2")
    carrier: dict[str, str] = {}
    propagator.inject(carrier, ctx)
    assert carrier == {"traceparent": f"00-{TRACE_ID}-{SPAN_ID}-03", "tracestate": "foo@=1,bar=2"}
    assert span_context(propagator.extract(carrier)) == span_context(ctx)


def test_inject_clears_undefined_flags_and_skips_empty_tracestate() -> None:
    carrier: dict[str, str] = {}
    propagator.inject(carrier, extract(f"00-{TRACE_ID}-{SPAN_ID}-ff"))
    assert carrier == {"traceparent": f"00-{TRACE_ID}-{SPAN_ID}-03"}


def test_inject_without_valid_span_writes_nothing() -> None:
    carrier: dict[str, str] = {}
    propagator.inject(carrier, Context())
    propagator.inject(carrier, extract("garbage"))
    assert carrier == {}


def test_inject_from_sdk_child_span(tracer: trace.Tracer) -> None:
    parent = extract(f"00-{TRACE_ID}-{SPAN_ID}-02", "foo@=1")
    with tracer.start_as_current_span("child", context=parent) as span:
        carrier: dict[str, str] = {}
        propagator.inject(carrier)
    sc = span.get_span_context()
    assert sc.span_id != int(SPAN_ID, 16)
    # random-trace-id flag propagated (W3C level 2), not sampled as the parent was not, and the
    # tracestate with an '@' key kept by the SDK
    assert carrier == {"traceparent": f"00-{TRACE_ID}-{sc.span_id:016x}-02", "tracestate": "foo@=1"}


def test_fields() -> None:
    assert propagator.fields == {"traceparent", "tracestate"}
    assert CorrelationIdPropagator().fields == set()
    assert default_propagator().fields == {"traceparent", "tracestate", "baggage"}


# --- correlation id ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value", [UUID, UUID_DASHED, UUID.upper(), UUID_DASHED.upper(), "0AF76519-16cd-43DD-8448-eb211C80319c"]
)
def test_parse_correlation_id_accepts_uuids(value: str) -> None:
    assert parse_correlation_id(value) == int(UUID, 16)


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "0" * 32,
        "00000000-0000-0000-0000-000000000000",
        UUID + "0",
        UUID[:-1],
        UUID_DASHED + "0",
        UUID_DASHED[:-1],
        "0" * 37,
        "1" * 1000,
        f"{{{UUID_DASHED}}}",
        f"urn:uuid:{UUID_DASHED}",
        f" {UUID}",
        f"{UUID}\n",
        f"{UUID}\x00",
        f"{UUID[:16]}\x07{UUID[17:]}",
        "0af7651916cd43dd8448eb211c80319g",
        "0af765-1916cd-43dd-8448-eb211c80319c",
        "0af76519-16cd-43dd-8448eb211c80319c",
        "0af76519_16cd_43dd_8448_eb211c80319c",
        "0x" + UUID[2:],
        "\u0660" * 32,  # Arabic-Indic digit zero
        f"{UUID_DASHED[:8]}+{UUID_DASHED[9:]}",
        f"{UUID},{UUID}",
        "not-a-uuid",
    ],
)
def test_parse_correlation_id_rejects(value: str | None) -> None:
    assert parse_correlation_id(value) is None


def test_parse_correlation_id_rejects_non_strings() -> None:
    assert parse_correlation_id(int(UUID, 16)) is None  # type: ignore[arg-type]
    assert parse_correlation_id(UUID.encode()) is None  # type: ignore[arg-type]


def test_format_correlation_id() -> None:
    assert format_correlation_id(int(UUID, 16)) == UUID_DASHED
    assert format_correlation_id(1) == "00000000-0000-0000-0000-000000000001"
    assert parse_correlation_id(format_correlation_id(2**128 - 1)) == 2**128 - 1
    with pytest.raises(ValueError):
        format_correlation_id(2**128)
    with pytest.raises(ValueError):
        format_correlation_id(-1)


def test_correlation_propagator_stores_trace_id_without_span() -> None:
    ctx = CorrelationIdPropagator().extract({CORRELATION_HEADER: UUID_DASHED}, Context())
    assert context.get_value(CORRELATION_TRACE_ID_KEY, ctx) == int(UUID, 16)
    assert trace.get_current_span(ctx) is trace.INVALID_SPAN


@pytest.mark.parametrize(
    "carrier",
    [{}, {CORRELATION_HEADER: "nope"}, {CORRELATION_HEADER: [UUID, UUID]}, {CORRELATION_HEADER: "0" * 32}],
)
def test_correlation_propagator_ignores_invalid(carrier: dict[str, object]) -> None:
    base = Context()
    assert CorrelationIdPropagator().extract(carrier, base) is base


def test_correlation_ignored_when_traceparent_valid() -> None:
    ctx = default_propagator().extract({"traceparent": VALID, CORRELATION_HEADER: UUID})
    assert context.get_value(CORRELATION_TRACE_ID_KEY, ctx) is None
    assert f"{span_context(ctx).trace_id:032x}" == TRACE_ID


def test_correlation_used_when_traceparent_invalid_or_missing() -> None:
    for carrier in ({CORRELATION_HEADER: UUID}, {"traceparent": "ff-bad", CORRELATION_HEADER: UUID}):
        ctx = default_propagator().extract(carrier)
        assert context.get_value(CORRELATION_TRACE_ID_KEY, ctx) == int(UUID, 16)
        assert not span_context(ctx).is_valid


def test_default_propagator_chains_wsgi_environ() -> None:
    environ = {"HTTP_X_CORRELATION_ID": UUID_DASHED, "HTTP_BAGGAGE": "user=alice"}
    ctx = default_propagator().extract(environ, getter=wsgi_getter)
    assert context.get_value(CORRELATION_TRACE_ID_KEY, ctx) == int(UUID, 16)
    assert baggage.get_baggage("user", ctx) == "alice"


def test_correlation_inject_writes_nothing() -> None:
    carrier: dict[str, str] = {}
    ctx = context.set_value(CORRELATION_TRACE_ID_KEY, int(UUID, 16), extract(VALID))
    CorrelationIdPropagator().inject(carrier, ctx)
    assert carrier == {}


# --- id generator --------------------------------------------------------------------------------


def test_generator_uses_correlation_id_from_current_context() -> None:
    generator = CorrelationIdGenerator()
    token = context.attach(context.set_value(CORRELATION_TRACE_ID_KEY, int(UUID, 16), Context()))
    try:
        assert generator.generate_trace_id() == int(UUID, 16)
        assert generator.is_trace_id_random() is False
    finally:
        context.detach(token)
    ids = {generator.generate_trace_id() for _ in range(5)}
    assert len(ids) == 5 and int(UUID, 16) not in ids and all(0 < i < 2**128 for i in ids)
    assert generator.is_trace_id_random() is True
    assert 0 < generator.generate_span_id() < 2**64


def test_generated_trace_ids_are_version_4_uuids_with_56_random_low_bits() -> None:
    """Strict UUID validators in clients accept the X-Correlation-ID we send back; the version and
    variant bits (byte 6 high nibble, byte 8 top two bits) stay out of the right-most 7 bytes that
    traceparent level 2's random-trace-id flag vouches for."""
    import random
    import uuid

    random.seed(20261201)  # the generator draws from the module's Mersenne Twister, as the SDK's does
    generator = CorrelationIdGenerator()
    ids = [generator.generate_trace_id() for _ in range(20_000)]
    assert len(set(ids)) == len(ids) and generator.is_trace_id_random() is True
    for trace_id in ids:
        parsed = uuid.UUID(format_correlation_id(trace_id))
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122 and parsed.int == trace_id
        raw = trace_id.to_bytes(16, "big")
        assert raw[6] >> 4 == 4 and raw[8] >> 6 == 0b10
    # every bit outside the 6 fixed ones is set in about half the ids (the low 56 and the rest)
    fixed = {76, 77, 78, 79, 62, 63}
    for bit in range(128):
        share = sum(trace_id >> bit & 1 for trace_id in ids) / len(ids)
        assert (share in (0.0, 1.0)) if bit in fixed else (0.47 < share < 0.53), (bit, share)


@pytest.mark.parametrize("rate", [0.01, 0.1, 0.5, 0.9])
def test_ratio_sampling_of_generated_ids_keeps_its_rate(rate: float) -> None:
    """The UUID variant bits sit in the trace id's low 64 bits, which the SDK's TraceIdRatioBased reads:
    there, 10 % would sample nothing. build_sampler decides on the 56 random bits instead."""
    import random

    from e2e_otel.sampling import build_sampler

    random.seed(7)
    generator = CorrelationIdGenerator()
    sampler = build_sampler(rate, record_unsampled=False)
    n = 20_000
    sampled = sum(sampler.should_sample(Context(), generator.generate_trace_id(), "s").decision.is_sampled()
                  for _ in range(n))
    assert abs(sampled / n - rate) < 4 * (rate * (1 - rate) / n) ** 0.5 + 0.002


def test_generator_ignores_id_passed_only_as_explicit_context() -> None:
    # Only the *current* context is consulted (the Django instrumentation attaches it first).
    ctx = context.set_value(CORRELATION_TRACE_ID_KEY, int(UUID, 16), Context())
    assert TracerProvider(id_generator=CorrelationIdGenerator()).get_tracer("t").start_span(
        "s", context=ctx
    ).get_span_context().trace_id != int(UUID, 16)


def test_server_span_gets_correlation_trace_id_and_later_roots_do_not(tracer: trace.Tracer) -> None:
    ctx = default_propagator().extract({CORRELATION_HEADER: UUID_DASHED})
    token = context.attach(ctx)
    try:
        with tracer.start_as_current_span("server", kind=trace.SpanKind.SERVER) as server:
            sc = server.get_span_context()
            assert sc.trace_id == int(UUID, 16)
            assert not sc.trace_flags.random_trace_id  # a client-chosen id is not known to be random
            with tracer.start_as_current_span("child") as child:
                assert child.get_span_context().trace_id == int(UUID, 16)
            # a new root while the server span is current gets its own random trace id
            other_root = tracer.start_span("job", context=Context())
            assert other_root.get_span_context().trace_id != int(UUID, 16)
            assert other_root.get_span_context().trace_flags.random_trace_id
            carrier: dict[str, str] = {}
            default_propagator().inject(carrier)
            assert carrier["traceparent"].startswith(f"00-{UUID}-")
    finally:
        context.detach(token)
    with tracer.start_as_current_span("after") as after:
        assert after.get_span_context().trace_id != int(UUID, 16)


@pytest.fixture
def global_propagator() -> Iterator[None]:
    previous = propagate.get_global_textmap()
    propagate.set_global_textmap(default_propagator())
    yield
    propagate.set_global_textmap(previous)


@pytest.mark.usefixtures("global_propagator")
def test_django_instrumentation_path_uses_correlation_id(tracer: trace.Tracer) -> None:
    # _start_internal_or_server_span extracts with the global propagator, attaches, then starts.
    span, token = _start_internal_or_server_span(
        tracer, "GET /", None, {"HTTP_X_CORRELATION_ID": UUID.upper()}, wsgi_getter
    )
    try:
        assert span.kind == trace.SpanKind.SERVER
        assert span.get_span_context().trace_id == int(UUID, 16)
        assert format_correlation_id(span.get_span_context().trace_id) == UUID_DASHED
    finally:
        span.end()
        context.detach(token)

    span, token = _start_internal_or_server_span(
        tracer, "GET /", None, {"HTTP_TRACEPARENT": VALID, "HTTP_X_CORRELATION_ID": UUID}, wsgi_getter
    )
    try:
        assert f"{span.get_span_context().trace_id:032x}" == TRACE_ID
        assert span.parent is not None and span.parent.span_id == int(SPAN_ID, 16)
    finally:
        span.end()
        context.detach(token)


def test_entry_point_classes_construct_without_arguments() -> None:
    assert isinstance(W3CTraceContextPropagator(), W3CTraceContextPropagator)
    assert isinstance(CorrelationIdPropagator(), CorrelationIdPropagator)


def test_custom_correlation_header_name_is_read_case_insensitively() -> None:
    propagator = CorrelationIdPropagator("X-Request-ID")
    ctx = propagator.extract({"x-request-id": UUID_DASHED}, Context())
    assert context.get_value(CORRELATION_TRACE_ID_KEY, ctx) == int(UUID_DASHED.replace("-", ""), 16)
    ignored = propagator.extract({CORRELATION_HEADER: UUID_DASHED}, Context())
    assert context.get_value(CORRELATION_TRACE_ID_KEY, ignored) is None
    with pytest.raises(ValueError):
        CorrelationIdPropagator(" ")


# --- head sampling -------------------------------------------------------------------------------


def _parent_contexts() -> dict[str, Context | None]:
    """Every kind of parent the parent-based sampler distinguishes, plus roots."""
    local = TracerProvider().get_tracer("t")
    sampled_local = local.start_span("sampled")
    unsampled_local = trace.NonRecordingSpan(trace.SpanContext(
        int(TRACE_ID, 16), int(SPAN_ID, 16), is_remote=False, trace_flags=TraceFlags(0)))
    return {
        "no context": None,
        "empty context": Context(),
        "remote sampled": extract(VALID, "a=1,b=2"),
        "remote unsampled": extract(PARENT_00, "a=1"),
        "remote sampled, random flag": extract(f"00-{TRACE_ID}-{SPAN_ID}-03"),
        "local sampled": trace.set_span_in_context(sampled_local),
        "local unsampled": trace.set_span_in_context(unsampled_local),
    }


@pytest.mark.parametrize("record_unsampled", [False, True])
@pytest.mark.parametrize("rate", [0.0, 0.1, 0.5, 1.0])
def test_fused_sampler_matches_the_sdk_composition(rate: float, record_unsampled: bool) -> None:
    """``build_sampler`` decides like ``[RecordOnly]ParentBased(TraceIdRatioBased(rate))`` applied to
    the trace id's right-most 56 bits (the SDK reads 64; shifted by 8 they give the same decision)."""
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    from e2e_otel.sampling import RecordOnlySampler, build_sampler

    reference = ParentBased(root=TraceIdRatioBased(rate))
    if record_unsampled:
        reference = RecordOnlySampler(reference)
    fused = build_sampler(rate, record_unsampled=record_unsampled)
    assert fused.get_description() == reference.get_description()
    attributes = {"db.system": "mysql"}
    trace_ids = [1, (1 << 63) - 1, 1 << 63, (1 << 64) - 1, (5 << 64) | 7, (1 << 128) - 1,
                 *(int(f"{i:02x}" * 16, 16) for i in range(0, 256, 17))]
    for label, parent in _parent_contexts().items():
        for trace_id in trace_ids:
            for attrs in (attributes, None):
                shifted = (trace_id & ((1 << 56) - 1)) << 8
                want = reference.should_sample(parent, shifted, "s", trace.SpanKind.CLIENT, attrs)
                got = fused.should_sample(parent, trace_id, "s", trace.SpanKind.CLIENT, attrs)
                assert (got.decision, dict(got.attributes), got.trace_state) == (
                    want.decision, dict(want.attributes), want.trace_state), (label, trace_id)
