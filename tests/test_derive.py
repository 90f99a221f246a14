"""The derive queue: spans leave the request thread in O(1) and are derived in order on one thread."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import pytest
from django.test import Client
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider

from e2e_otel.bootstrap import get_runtime
from e2e_otel.derive import DeriveQueue
from e2e_otel.fanout import FanOutSpanProcessor
from tests.forking import check_in_child


class _Record(SpanProcessor):
    def __init__(self) -> None:
        self.names: list[str] = []
        self.threads: set[str] = set()

    def on_end(self, span: ReadableSpan) -> None:
        self.names.append(span.name)
        self.threads.add(threading.current_thread().name)


def _spans(n: int) -> list[ReadableSpan]:
    return [ReadableSpan(name=f"s{i}") for i in range(n)]


def test_spans_are_handled_in_order_on_the_derive_thread_not_the_caller() -> None:
    fanout = FanOutSpanProcessor()
    record = _Record()
    fanout.add(record)
    provider = TracerProvider()
    provider.add_span_processor(fanout)
    tracer = provider.get_tracer("t")
    for i in range(500):
        tracer.start_span(f"s{i}").end()
    assert fanout.force_flush(5_000)
    assert record.names == [f"s{i}" for i in range(500)]
    assert record.threads == {"e2e-otel-derive"}
    fanout.shutdown()


def test_inline_children_see_spans_at_once_on_the_ending_thread() -> None:
    fanout = FanOutSpanProcessor()
    inline = _Record()
    fanout.add(inline, inline=True)
    provider = TracerProvider()
    provider.add_span_processor(fanout)
    provider.get_tracer("t").start_span("now").end()
    assert inline.names == ["now"] and inline.threads == {threading.current_thread().name}
    assert fanout.queue.depth == 0  # no derived child: nothing is queued at all


def test_only_children_with_their_own_on_start_are_called_on_start() -> None:
    calls: list[str] = []

    class Starting(SpanProcessor):
        def on_start(self, span: Any, parent_context: Any = None) -> None:
            calls.append(span.name)

    fanout = FanOutSpanProcessor([_Record(), Starting()])
    assert [type(p).__name__ for p in fanout._starting] == ["Starting"]
    provider = TracerProvider()
    provider.add_span_processor(fanout)
    provider.get_tracer("t").start_span("a").end()
    assert calls == ["a"]


def test_a_full_queue_drops_and_counts_without_blocking() -> None:
    release = threading.Event()
    handled: list[str] = []

    def slow(span: ReadableSpan) -> None:
        release.wait(5)
        handled.append(span.name)

    queue = DeriveQueue(slow, capacity=10, interval=0.01)
    started = time.perf_counter()
    accepted = [queue.put(span) for span in _spans(50)]
    assert time.perf_counter() - started < 0.5
    # The thread may already have taken the first span off the queue: 10 or 11 accepted.
    assert 10 <= accepted.count(True) <= 11 and queue.dropped == accepted.count(False)
    release.set()
    assert queue.flush(5)
    assert len(handled) == accepted.count(True) and queue.handled == len(handled)
    assert queue.stop(5)


def test_a_failing_handler_is_logged_and_the_thread_carries_on(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[str] = []

    def handle(span: ReadableSpan) -> None:
        if span.name == "s1":
            raise RuntimeError("boom")
        seen.append(span.name)

    queue = DeriveQueue(handle, interval=0.01)
    for span in _spans(3):
        queue.put(span)
    assert queue.flush(5)
    assert seen == ["s0", "s2"] and "deriving" in caplog.text
    assert queue.stop(5)


def test_flush_waits_only_for_what_was_queued_before_it_and_times_out_honestly() -> None:
    gate = threading.Event()
    queue = DeriveQueue(lambda span: gate.wait(5), interval=0.01)
    queue.put(ReadableSpan(name="stuck"))
    assert queue.flush(0.1) is False  # the handler is still busy
    gate.set()
    assert queue.flush(5) is True
    assert DeriveQueue(lambda span: None).flush(0.01) is True  # nothing queued, no thread started


def test_a_handler_that_flushes_does_not_deadlock() -> None:
    queue: DeriveQueue
    order: list[str] = []

    def handle(span: ReadableSpan) -> None:
        order.append(span.name)
        if span.name == "s0":
            assert queue.flush(1)

    queue = DeriveQueue(handle, interval=0.01)
    for span in _spans(3):
        queue.put(span)
    assert queue.flush(5)
    assert order == ["s0", "s1", "s2"]


def test_stop_handles_the_backlog_then_refuses_and_counts() -> None:
    handled: list[str] = []
    queue = DeriveQueue(lambda span: handled.append(span.name), interval=10)  # only stop() wakes it
    for span in _spans(100):
        queue.put(span)
    assert queue.stop(5)
    assert len(handled) == 100
    assert queue.put(ReadableSpan(name="late")) is False and queue.dropped == 1
    assert queue.flush(0.1) is True  # nothing left


def test_wakes_early_when_wake_at_spans_wait() -> None:
    done = threading.Event()
    queue = DeriveQueue(lambda span: done.set() if span.name == "s7" else None, interval=30, wake_at=8)
    for span in _spans(8):
        queue.put(span)
    assert done.wait(5)  # long before the 30 s interval
    queue.stop(1)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_forked_child_starts_empty_and_derives_its_own_spans() -> None:
    gate = threading.Event()
    handled: list[str] = []
    queue = DeriveQueue(lambda span: (gate.wait(5), handled.append(span.name)), interval=0.01)
    for span in _spans(5):
        queue.put(span)  # the parent's thread is stuck on the first one

    def child_derives_only_its_own() -> bool:  # the parent's backlog is gone; a new thread derives
        gate.set()
        return (queue.depth == 0 and queue.put(ReadableSpan(name="child")) and queue.flush(5)
                and handled[-1:] == ["child"])

    ok = check_in_child(child_derives_only_its_own)
    gate.set()
    assert ok
    assert queue.flush(5) and handled == [f"s{i}" for i in range(5)]


@pytest.mark.mysql
@pytest.mark.django_db(transaction=True)
def test_derive_queue_numbers_are_on_the_scrape() -> None:
    runtime = get_runtime()
    assert runtime is not None
    queue = runtime.derived.queue
    before = queue.dropped
    capacity, queue.capacity = queue.capacity, 0  # every span of the next request is dropped
    try:
        assert Client().get("/ping/").status_code == 200
    finally:
        queue.capacity = capacity
    assert queue.dropped >= before + 1
    text = Client().get("/metrics").content.decode()
    lines = {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines()
             if line.startswith("e2e_otel_derive_")}
    assert lines["e2e_otel_derive_dropped_spans_total"] >= queue.dropped - before
    assert "e2e_otel_derive_queue_depth" in lines


def test_flush_waits_for_the_span_being_handled_even_when_the_queue_is_empty() -> None:
    started, release, done = threading.Event(), threading.Event(), []

    def handle(span: ReadableSpan) -> None:
        started.set()
        release.wait(5)
        done.append(span.name)

    queue = DeriveQueue(handle, interval=0.01)
    queue.put(ReadableSpan(name="busy"))
    assert started.wait(5) and queue.depth == 0  # taken off the queue, still being handled
    assert queue.flush(0.1) is False
    release.set()
    assert queue.flush(5) is True and done == ["busy"]
    assert queue.stop(5)


def test_stop_during_a_handlers_flush_still_ends_the_thread() -> None:
    queue: DeriveQueue
    entered, proceed = threading.Event(), threading.Event()

    def handle(span: ReadableSpan) -> None:
        if span.name == "flusher":
            entered.set()
            proceed.wait(5)  # stop() queues its marker meanwhile
            queue.flush(1)

    queue = DeriveQueue(handle, interval=0.01)
    queue.put(ReadableSpan(name="flusher"))
    assert entered.wait(5)
    stopper = threading.Thread(target=queue.stop, args=(5,))
    stopper.start()
    time.sleep(0.05)
    proceed.set()
    stopper.join(10)
    assert queue._thread is not None and not queue._thread.is_alive()
