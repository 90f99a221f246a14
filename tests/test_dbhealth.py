"""``dbhealth.probe``: health answers never hold a request thread on a stalled database."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.conf import settings
from django.db import connections
from django.test import override_settings
from rest_framework.test import APIClient

from e2e_otel.dbhealth.probe import StoreHealth, StoreHealthProbe, probe_for, read_store_health
from e2e_otel.models import WorkflowSession

HEALTH = "/api/v1/debugging/system-health/"


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_answers_are_reused_within_max_age_then_probed_again() -> None:
    calls: list[str] = []
    clock = FakeClock()

    def read(alias: str) -> StoreHealth:
        calls.append(alias)
        return StoreHealth(alias, True, counts={"workflow_sessions": len(calls)})

    probe = StoreHealthProbe("records", read=read, max_age=2.0, wait=5.0, clock=clock)
    assert probe.current().counts == {"workflow_sessions": 1}
    clock.now += 1.5
    assert probe.current().counts == {"workflow_sessions": 1}
    assert probe.current().database(clock.now)["age_seconds"] == 1.5
    clock.now += 1.0
    assert probe.current().counts == {"workflow_sessions": 2}
    assert calls == ["records", "records"]


def test_a_hanging_probe_answers_unavailable_within_the_wait_and_is_never_doubled() -> None:
    release = threading.Event()
    calls: list[float] = []

    def read(alias: str) -> StoreHealth:
        calls.append(time.monotonic())
        release.wait(10)
        return StoreHealth(alias, True)

    probe = StoreHealthProbe("stuck", read=read, wait=0.3)
    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: probe.current(), range(8)))
    elapsed = time.monotonic() - started
    assert [a.reachable for a in answers] == [False] * 8
    assert "no answer within 0.3s" in (answers[0].error or "")
    assert elapsed < 2.0, elapsed  # eight callers, all released after about one wait
    assert len(calls) == 1  # single flight: one thread waits on the dead server, not eight
    release.set()
    deadline = time.monotonic() + 5
    while not probe.current().reachable and time.monotonic() < deadline:
        time.sleep(0.05)
    assert probe.current().reachable


def test_a_failing_reader_is_an_unavailable_answer() -> None:
    def read(alias: str) -> StoreHealth:
        raise RuntimeError("boom")

    answer = StoreHealthProbe("x", read=read, wait=2.0).current()
    assert not answer.reachable and answer.error == "RuntimeError"


def test_probe_bounds_are_validated() -> None:
    with pytest.raises(ValueError, match="max_age"):
        StoreHealthProbe("x", max_age=-1)


@pytest.mark.django_db(transaction=True)
def test_read_store_health_counts_on_its_own_connection() -> None:
    WorkflowSession.objects.all().delete()
    from django.utils import timezone

    now = timezone.now()
    WorkflowSession.objects.create(correlation_id=uuid.uuid4(), workflow_type="checkout", status="failed",
                                   start_time=now, last_activity=now)
    result: list[StoreHealth] = []
    thread = threading.Thread(target=lambda: result.append(read_store_health("default")))
    thread.start()
    thread.join(10)
    assert result[0].reachable, result[0].error
    assert result[0].counts["workflow_sessions"] == 1 and result[0].counts["failed"] == 1


@pytest.fixture
def stalled_alias() -> Iterator[str]:
    """The ``unreachable`` alias pointed at a loopback server that accepts and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    alias_settings = connections.settings["unreachable"]
    saved = {"PORT": alias_settings["PORT"], "OPTIONS": alias_settings["OPTIONS"]}
    alias_settings.update(PORT=server.getsockname()[1],
                          OPTIONS={**alias_settings["OPTIONS"], "connect_timeout": 8})
    try:
        yield "unreachable"
    finally:
        alias_settings.update(saved)
        stop.set()
        acceptor.join(2)
        for sock in held:
            sock.close()
        server.close()


@pytest.mark.django_db(transaction=True, databases=["default", "unreachable"])
def test_health_with_a_stalled_database_answers_503_within_a_second_for_every_caller(stalled_alias) -> None:
    key = settings.E2E_OTEL["API_KEY"]
    with override_settings(E2E_OTEL={**settings.E2E_OTEL, "DATABASE_ALIAS": stalled_alias}):
        probe_for(stalled_alias).invalidate()

        def check(_: int) -> tuple[int, float, dict]:
            client = APIClient()
            client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
            started = time.monotonic()
            response = client.get(HEALTH)
            return response.status_code, time.monotonic() - started, response.json()

        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(check, range(8)))
    assert [code for code, _, _ in results] == [503] * 8
    assert max(elapsed for _, elapsed, _ in results) < 2.0, results
    body = results[0][2]
    assert body["status"] == "unavailable" and body["database"]["reachable"] is False
    assert body["database"]["alias"] == stalled_alias and "counts" not in body
