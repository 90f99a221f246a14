"""e2e_otel/baggage.py: the baggage header is validated, bounded and never logged; workflow names checked."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry import baggage
from opentelemetry.context import Context
from opentelemetry.sdk.trace import TracerProvider

from e2e_otel.baggage import (
    MAX_HEADER_BYTES,
    MAX_MEMBERS,
    BaggagePropagator,
    workflow_name_from_baggage,
)
from e2e_otel.propagation import default_propagator

CONTROL = ("\x00", "\x1b", "\r", "\n")


def _extract(header: str | list[str], propagator: Any = None) -> dict[str, object]:
    carrier = {"baggage": header if isinstance(header, list) else [header]}
    context = (propagator or BaggagePropagator()).extract(carrier, Context(),
                                                           getter=_ListGetter())
    return dict(baggage.get_all(context))


class _ListGetter:
    """A getter over ``{name: [values]}``, like a server with repeated header fields."""

    def get(self, carrier: dict[str, list[str]], key: str) -> list[str] | None:
        return carrier.get(key)

    def keys(self, carrier: dict[str, list[str]]) -> list[str]:
        return list(carrier)


def _log_text(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(record.getMessage() for record in caplog.records)


# --- the defect: one hostile header, 180 raw warning lines --------------------------------------------


def test_hostile_header_is_not_logged_by_the_default_propagator(caplog: pytest.LogCaptureFixture) -> None:
    """Issue #18.7: a 1.8 KB header of 180 bad members gave 180 warnings with NUL/ESC/CR bytes in them."""
    caplog.set_level(logging.DEBUG)
    header = ",".join(f"k{i}=\x00\x1b[31mred\rFAKE LOG LINE {i}" for i in range(180))
    assert 1800 <= len(header) <= MAX_HEADER_BYTES
    context = default_propagator().extract({"baggage": header})
    assert baggage.get_all(context) == {}
    text = _log_text(caplog)
    assert not any(char in text for char in CONTROL) and "FAKE LOG LINE" not in text
    assert len(caplog.records) <= 1


def test_oversized_header_is_dropped_whole_and_not_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    propagator = BaggagePropagator()
    header = ",".join(f"k{i}=secret-{i}" for i in range(1000))
    assert len(header) > MAX_HEADER_BYTES
    assert _extract(header, propagator) == {}
    assert propagator.dropped["over_limit"] == 1000
    assert "secret-" not in _log_text(caplog)


# --- grammar ------------------------------------------------------------------------------------------


def test_valid_members_are_decoded_per_w3c() -> None:
    got = _extract(" e2e.workflow = checkout ; prop1 ; prop2=x ,user=al%C3%AFce, plus=a+b,empty=,"
                   "pct=100%25")
    assert got == {"e2e.workflow": "checkout", "user": "alïce", "plus": "a+b", "empty": "", "pct": "100%"}


def test_repeated_fields_are_combined_and_later_duplicates_win() -> None:
    assert _extract(["a=1,b=2", "a=3"]) == {"a": "3", "b": "2"}


@pytest.mark.parametrize("member", [
    "no-equals", "=value", "bad key=v", "k=va lue", "k=\"quoted\"", "k=back\\slash", "k=v;bad prop=x",
    "k=v;=x", "k=%FF", "k=%C3", "k=%00", "k=%1B%5B31m", "k=%0D%0Aforged", "k=%C2%85", "k=v\x00",
    "ключ=v", "k=значение",
])
def test_invalid_members_are_dropped_and_counted(member: str) -> None:
    propagator = BaggagePropagator()
    assert _extract(f"good=1,{member},also=2", propagator) == {"good": "1", "also": "2"}
    assert propagator.dropped == {"invalid": 1, "over_limit": 0}


def test_member_and_count_limits() -> None:
    propagator = BaggagePropagator()
    header = ",".join(f"k{i}=v" for i in range(MAX_MEMBERS + 5))
    got = _extract(header, propagator)
    assert len(got) == MAX_MEMBERS and "k179" in got and "k180" not in got
    assert propagator.dropped["over_limit"] == 5
    assert _extract("big=" + "x" * 4100 + ",small=1", propagator) == {"small": "1"}


def test_extract_merges_into_the_given_context() -> None:
    context = baggage.set_baggage("existing", "yes", Context())
    context = BaggagePropagator().extract({"baggage": "new=1"}, context)
    assert baggage.get_all(context) == {"existing": "yes", "new": "1"}
    assert BaggagePropagator().extract({}, context) is context


def test_drops_are_summarised_at_most_once_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="e2e_otel.baggage")
    drops: list[tuple[str, int]] = []
    propagator = BaggagePropagator(log_interval=3600, on_drop=lambda reason, n: drops.append((reason, n)))
    for _ in range(50):
        _extract("a=1,bad member,k=%FF", propagator)
    assert propagator.dropped["invalid"] == 100 and sum(n for _, n in drops) == 100
    (record,) = caplog.records
    assert "2" in record.getMessage() and "bad" not in record.getMessage()
    with pytest.raises(ValueError, match="log_interval"):
        BaggagePropagator(log_interval=0)


# --- inject -------------------------------------------------------------------------------------------


def test_inject_percent_encodes_and_round_trips() -> None:
    values = {"e2e.workflow": "checkout", "note": "a b,c;d=e+f%g\"h\\i", "uni": "ünï"}
    context = Context()
    for key, value in values.items():
        context = baggage.set_baggage(key, value, context)
    carrier: dict[str, str] = {}
    propagator = BaggagePropagator()
    propagator.inject(carrier, context)
    header = carrier["baggage"]
    assert header.isascii() and " " not in header and "+" not in header
    assert _extract(header) == values


def test_inject_skips_invalid_keys_and_respects_limits() -> None:
    context = baggage.set_baggage("bad key", "v", Context())
    for i in range(MAX_MEMBERS + 3):
        context = baggage.set_baggage(f"k{i}", "v", context)
    carrier: dict[str, str] = {}
    propagator = BaggagePropagator()
    propagator.inject(carrier, context)
    assert carrier["baggage"].count(",") == MAX_MEMBERS - 1 and "bad" not in carrier["baggage"]
    assert propagator.dropped == {"invalid": 1, "over_limit": 3}
    big = baggage.set_baggage("big", "x" * 5000, Context())
    empty: dict[str, str] = {}
    propagator.inject(empty, big)
    assert empty == {}


# --- untrusted input, generated ----------------------------------------------------------------------

_HEADER_CHARS = st.characters(codec="latin-1")  # a WSGI server hands header bytes over as latin-1
_STRUCTURED = st.lists(
    st.tuples(st.text(_HEADER_CHARS, max_size=12), st.sampled_from(["=", " = ", "", "=="]),
              st.text(_HEADER_CHARS, max_size=24), st.sampled_from(["", ";p", ";p=%41", ";", ";=x"])),
    max_size=200,
).map(lambda parts: ",".join(k + eq + v + p for k, eq, v, p in parts))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(header=st.one_of(st.text(_HEADER_CHARS, max_size=10_000), _STRUCTURED,
                        st.binary(max_size=9000).map(lambda raw: raw.decode("latin-1"))))
def test_arbitrary_headers_never_raise_never_log_raw_and_stay_fast(header: str,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.clear()
    caplog.set_level(logging.DEBUG)
    started = time.perf_counter()
    context = default_propagator().extract({"baggage": header})
    elapsed = time.perf_counter() - started
    assert elapsed < 0.25
    for key, value in baggage.get_all(context).items():
        assert isinstance(key, str) and isinstance(value, str)
        assert not any(char in key + value for char in CONTROL)
    for record in caplog.records:
        message = record.getMessage()
        assert record.name == "e2e_otel.baggage" and message.isascii()
        assert not any(char in message for char in CONTROL)
        assert not any(member and len(member) > 3 and member in message for member in header.split(","))


# --- workflow names -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "expected"), [
    ("checkout", "checkout"), ("  Place order v2 ", "Place order v2"),
    ("shop:checkout/step-1.a_b", "shop:checkout/step-1.a_b"),
    ("x" * 100, "x" * 100), ("x" * 101, None), ("", None), ("   ", None), ("a\x00b", None), ("a\r\nb", None),
    ("<script>alert(1)</script>", None), ("name\"quoted", None), ("tab\there", None), ("ünï", None),
    (None, None), (42, None), (b"checkout", None),
])
def test_workflow_names_from_baggage_are_validated(value: object, expected: str | None) -> None:
    assert workflow_name_from_baggage(value) == expected


def test_invalid_baggage_workflow_name_never_reaches_the_span() -> None:
    """``WorkflowSpanProcessor.on_start`` copies ``e2e.workflow`` onto the span only when it is valid."""
    from e2e_otel.processors import WorkflowSpanProcessor
    from e2e_otel.spans_to_records import ATTR_WORKFLOW_BAGGAGE, BAGGAGE_WORKFLOW

    class _Writer:
        def submit(self, step: object) -> None:
            pass

        def force_flush(self, timeout: float | None = None) -> bool:
            return True

        def shutdown(self, timeout: float | None = None) -> bool:
            return True

    provider = TracerProvider()
    provider.add_span_processor(WorkflowSpanProcessor(_Writer(), slow_span_ms=1000))  # type: ignore[arg-type]
    tracer = provider.get_tracer("t")
    for value, expected in (("checkout", "checkout"), ("<script>x</script>", None), ("a\r\nSet-Cookie: x", None)):
        context = baggage.set_baggage(BAGGAGE_WORKFLOW, value, Context())
        span = tracer.start_span("GET /", context=context)
        assert (span.attributes or {}).get(ATTR_WORKFLOW_BAGGAGE) == expected, value
        span.end()
    provider.shutdown()
