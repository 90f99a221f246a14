"""Background threads share the interpreter lock politely: short slices, and standing back while
requests are in flight (bounded, and never when a flush or a large backlog waits)."""

from __future__ import annotations

import time

import pytest
from django.http import HttpRequest, HttpResponse
from django.test import Client, RequestFactory
from opentelemetry.sdk.trace import ReadableSpan

from e2e_otel import inflight, pacing
from e2e_otel.correlation import CorrelationMiddleware
from e2e_otel.derive import DeriveQueue


class _FakeTime:
    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_pacer_releases_the_lock_once_per_slice() -> None:
    fake = _FakeTime()
    pace = pacing.Pacer(slice_seconds=0.001, pause_seconds=0.00005, clock=fake.clock, sleep=fake.sleep)
    pace()  # the first call starts a slice
    for _ in range(9):  # 0.9 ms of work: still inside the slice
        fake.now += 0.0001
        pace()
    assert fake.sleeps == [0.00005]
    fake.now += 0.0002
    pace()
    assert fake.sleeps == [0.00005, 0.00005]
    with pytest.raises(ValueError):
        pacing.Pacer(slice_seconds=0)
    with pytest.raises(ValueError):
        pacing.Pacer(poll=0)


def test_stand_back_returns_at_once_when_no_request_is_in_flight() -> None:
    fake = _FakeTime()
    pace = pacing.Pacer(busy=lambda: 0, clock=fake.clock, sleep=fake.sleep)
    pace.stand_back()
    assert fake.sleeps == []


def test_stand_back_waits_until_the_requests_are_done() -> None:
    fake = _FakeTime()
    busy_until = fake.now + 0.3
    pace = pacing.Pacer(busy=lambda: int(fake.now < busy_until), poll=0.05, max_defer=2.0,
                        clock=fake.clock, sleep=fake.sleep)
    pace.stand_back()
    assert fake.now == pytest.approx(busy_until, abs=0.051)
    assert all(s == 0.05 for s in fake.sleeps)


def test_urgent_work_does_not_stand_back() -> None:
    fake = _FakeTime()
    urgent = [True]
    pace = pacing.Pacer(busy=lambda: 1, urgent=lambda: urgent[0], clock=fake.clock, sleep=fake.sleep)
    pace.stand_back()
    assert fake.sleeps == []
    urgent[0] = False
    start = fake.now
    fake_sleep = fake.sleep

    def sleep_then_urgent(seconds: float) -> None:
        fake_sleep(seconds)
        if fake.now - start >= 0.2:
            urgent[0] = True  # e.g. a flush was asked for while standing back

    pace._sleep = sleep_then_urgent
    pace.stand_back()
    assert 0.2 <= fake.now - start < 0.3


def test_the_deferral_is_bounded_per_backlog_not_per_call() -> None:
    """Under load with no gaps, the work waits ``max_defer`` once, then runs unit after unit."""
    fake = _FakeTime()
    pace = pacing.Pacer(busy=lambda: 1, max_defer=1.0, poll=0.05, clock=fake.clock, sleep=fake.sleep)
    pace.stand_back()
    assert fake.now - 100.0 == pytest.approx(1.0, abs=0.051)
    waited = len(fake.sleeps)
    for _ in range(100):  # later units of the same backlog: no more waiting
        pace.stand_back()
    assert len(fake.sleeps) == waited
    pace.caught_up()  # backlog empty: the next one may be deferred again
    pace.stand_back()
    assert len(fake.sleeps) > waited


def test_the_middleware_counts_the_request_in_flight_and_always_uncounts_it() -> None:
    seen: list[int] = []

    def view(request: HttpRequest) -> HttpResponse:
        seen.append(inflight.requests_in_flight())
        return HttpResponse("ok")

    def failing(request: HttpRequest) -> HttpResponse:
        raise RuntimeError("boom")

    before = inflight.requests_in_flight()
    CorrelationMiddleware(view)(RequestFactory().get("/x"))
    assert seen == [before + 1] and inflight.requests_in_flight() == before
    with pytest.raises(RuntimeError):
        CorrelationMiddleware(failing)(RequestFactory().get("/x"))
    assert inflight.requests_in_flight() == before


@pytest.mark.django_db
def test_the_installed_middleware_leaves_no_request_counted() -> None:
    Client().get("/ping/")
    assert inflight.requests_in_flight() == 0


def test_the_derive_thread_waits_for_the_gap_between_requests() -> None:
    handled: list[str] = []
    queue = DeriveQueue(lambda span: handled.append(span.name), interval=0.01)
    inflight.begin_request()
    try:
        queue.put(ReadableSpan(name="during"))
        time.sleep(0.3)
        assert handled == []  # a request is in flight: the span waits (up to MAX_DEFER_SECONDS)
    finally:
        inflight.end_request()
    deadline = time.monotonic() + 2
    while not handled and time.monotonic() < deadline:
        time.sleep(0.01)
    assert handled == ["during"]
    assert queue.stop(5)


def test_a_flush_does_not_wait_for_the_requests_in_flight() -> None:
    handled: list[str] = []
    queue = DeriveQueue(lambda span: handled.append(span.name), interval=0.01)
    inflight.begin_request()  # e.g. a report view flushing the derived views before it reads them
    try:
        queue.put(ReadableSpan(name="a"))
        time.sleep(0.1)  # the thread is standing back now
        started = time.monotonic()
        assert queue.flush(5)
        assert time.monotonic() - started < 0.5 and handled == ["a"]
        assert queue._flushes == 0  # no flush left waiting: the thread stands back again
    finally:
        inflight.end_request()
    assert queue.stop(5)


def test_a_large_backlog_is_worked_off_even_while_requests_are_in_flight() -> None:
    handled: list[str] = []
    queue = DeriveQueue(lambda span: handled.append(span.name), capacity=40, interval=0.01)
    inflight.begin_request()
    try:
        for i in range(12):  # over a quarter of the capacity
            queue.put(ReadableSpan(name=f"s{i}"))
        deadline = time.monotonic() + 1.0
        while len(handled) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(handled) >= 2  # worked on well before MAX_DEFER_SECONDS
    finally:
        inflight.end_request()
    assert queue.flush(5) and len(handled) == 12
    assert queue.stop(5)


def test_the_count_is_reset_in_a_forked_child() -> None:
    from tests.forking import check_in_child

    inflight.begin_request()
    try:
        assert check_in_child(lambda: inflight.requests_in_flight() == 0)
    finally:
        inflight.end_request()
