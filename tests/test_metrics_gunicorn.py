"""Two gunicorn workers, one picture: /metrics (multiprocess mode, the user's directory or e2e-otel's
own), query-findings/ and debugging_report agree across workers and after a restart."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from io import StringIO
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.servers import BIN_DIR, ServerProcess, free_port, gunicorn, subprocess_env

pytestmark = pytest.mark.slow


@pytest.fixture
def server(tmp_path: Path):
    metrics_dir = tmp_path / "prom"
    metrics_dir.mkdir()
    (metrics_dir / "counter_999999.db").write_bytes(b"stale")  # on_starting must clear leftovers
    config = tmp_path / "gunicorn.conf.py"
    config.write_text("from e2e_otel.gunicorn import child_exit, on_starting  # noqa: F401\n")
    port = free_port()
    env = subprocess_env({"E2E_TEST_DB": "sqlite", "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)})
    argv = [str(BIN_DIR / "gunicorn"), "tests.wsgi:application", "-b", f"127.0.0.1:{port}", "-w", "2",
            "--preload", "-c", str(config), "--graceful-timeout", "3", "--timeout", "30"]
    with ServerProcess(argv, port=port, env=env) as process:
        yield process, metrics_dir


def _samples(text: str, name: str) -> list:
    return [s for f in text_string_to_metric_families(text) for s in f.samples if s.name == name]


def test_one_scrape_sums_both_workers_and_dead_workers_are_cleaned(server) -> None:
    process, metrics_dir = server
    assert not (metrics_dir / "counter_999999.db").exists()
    served: dict[int, int] = {}
    deadline = time.monotonic() + 30
    while (len(served) < 2 or sum(served.values()) < 20) and time.monotonic() < deadline:
        status, _, body = process.get("/pid/")
        assert status == 200
        pid = json.loads(body)["pid"]
        served[pid] = served.get(pid, 0) + 1
    assert len(served) == 2, f"only {served} served: {process.logs()}"
    requests = sum(served.values())

    # Spans become metrics on each worker's derive thread, a few milliseconds after the response.
    deadline = time.monotonic() + 10
    while True:
        status, headers, body = process.get("/metrics")
        assert status == 200 and headers["content-type"].startswith("text/plain; version=0.0.4")
        text = body.decode()
        steps = [s for s in _samples(text, "e2e_otel_steps_total")
                 if s.labels.get("layer") == "api" and s.labels.get("component") == "/pid/"]
        if sum(s.value for s in steps) >= requests or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert sum(s.value for s in steps) == requests
    assert all("pid" not in s.labels for s in steps)  # counters are summed, not per worker
    (count,) = [s.value for s in _samples(text, "e2e_otel_step_duration_seconds_count")
                if s.labels == {"layer": "api", "component": "/pid/"}]
    assert count == requests
    # Every worker wrote its own file, and both are in the one scrape.
    counter_files = {p.name for p in metrics_dir.glob("counter_*.db")}
    assert {f"counter_{pid}.db" for pid in served} <= counter_files
    (memory,) = _samples(text, "e2e_otel_system_memory_usage_ratio")
    assert 0 < memory.value <= 1 and "pid" not in memory.labels
    assert [s.value for s in _samples(text, "e2e_otel_build_info")] == [1]
    # livemin over master + workers: a forked worker must not start from an empty 0.
    assert [s.value for s in _samples(text, "e2e_otel_exporter_up")] == [1]
    assert [s.value for s in _samples(text, "e2e_otel_cache_hit_ratio")] == [1]
    if shutil.which("promtool"):
        lint = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True, timeout=30,
                              check=False)
        assert lint.returncode == 0 and not lint.stdout.strip(), lint.stdout.decode() + lint.stderr.decode()

    # A worker that dies is marked dead by child_exit: its live gauges leave the directory.
    victim = next(iter(served))
    live_files = list(metrics_dir.glob(f"gauge_live*_{victim}.db"))
    assert live_files, sorted(p.name for p in metrics_dir.iterdir())
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 15
    while any(p.exists() for p in live_files) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(p.exists() for p in live_files), process.logs()
    # Its counts survive (counters are cumulative across worker restarts).
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        status, _, body = process.get("/metrics")
        if status == 200:
            break
        time.sleep(0.2)
    steps = [s for s in _samples(body.decode(), "e2e_otel_steps_total")
             if s.labels.get("layer") == "api" and s.labels.get("component") == "/pid/"]
    assert sum(s.value for s in steps) == requests


# --- out of the box: no PROMETHEUS_MULTIPROC_DIR, no gunicorn.conf.py, records in MySQL --------------------


def _on_each_worker(server: ServerProcess, call: Callable[[], tuple[int, dict[str, str], bytes]],
                    per_worker: int = 1) -> dict[int, list[tuple[int, bytes]]]:
    """``call()`` answered ``per_worker`` times by each of the two workers (``X-Served-By`` says
    which). Each round keeps one worker busy in ``/pid/?sleep`` so the other one tends to take the
    call (a sync worker serves one request at a time). Bounded: 30 rounds."""
    answers: dict[int, list[tuple[int, bytes]]] = {}
    with ThreadPoolExecutor(max_workers=1) as pool:
        for _ in range(30):
            busy = pool.submit(server.get, "/pid/?sleep=0.3")
            time.sleep(0.05)
            status, headers, body = call()
            answers.setdefault(int(headers["x-served-by"]), []).append((status, body))
            busy.result()
            if len(answers) == 2 and all(len(v) >= per_worker for v in answers.values()):
                break
    assert len(answers) == 2, f"one worker answered everything: {answers.keys()}\n{server.logs()}"
    return answers


def _n_plus_one_total(text: str) -> float:
    return sum(s.value for s in _samples(text, "e2e_otel_n_plus_one_total")
               if s.labels == {"component": "testapp_item"})


@pytest.mark.mysql
@pytest.mark.django_db(transaction=True)
def test_findings_metrics_and_report_agree_across_workers_and_restarts(tmp_path: Path) -> None:
    from django.core.management import call_command
    from django.db import connection

    from e2e_otel.models import QueryFinding
    from e2e_otel.reports import MAX_GROUPS
    from tests.testapp.models import Item

    Item.objects.bulk_create([Item(name=f"i{i}") for i in range(6)])  # 6 queries per request: an N+1
    env = subprocess_env({"DJANGO_SETTINGS_MODULE": "tests.settings_workers", "TMPDIR": str(tmp_path),
                          "E2E_MYSQL_DATABASE": connection.settings_dict["NAME"]})
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    metrics_base = tmp_path / f"e2e-otel-prometheus-{os.getuid()}"
    sent: list[str] = []

    def n_plus_one() -> tuple[int, dict[str, str], bytes]:
        sent.append(str(uuid.uuid4()))
        return server.get("/items-n-plus-one/", {"X-Correlation-ID": sent[-1]})

    def findings() -> tuple[int, dict[str, str], bytes]:
        return server.get("/api/v1/debugging/query-findings/?kind=n_plus_one&limit=500",
                          {"Authorization": "Bearer test-api-key"})

    def metrics() -> tuple[int, dict[str, str], bytes]:
        return server.get("/metrics")

    def settled(count: int, total: float) -> None:
        """Every finding stored (record writer) and counted (derive thread) by now."""
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            stored = QueryFinding.objects.filter(correlation_id__in=[uuid.UUID(c) for c in sent]).count()
            if stored == count and _n_plus_one_total(metrics()[2].decode()) == total:
                return
            time.sleep(0.2)
        raise AssertionError(f"{stored} of {count} findings stored\n{server.logs()}")

    def agree(expected_ids: set[str], expected_total: float) -> None:
        for pid, answers in _on_each_worker(server, findings).items():
            for status, body in answers:
                assert status == 200, body
                mine = {f["correlation_id"] for f in json.loads(body)["results"]} & set(sent)
                assert mine == expected_ids, f"worker {pid} answered {len(mine)} of {len(expected_ids)}"
        for pid, answers in _on_each_worker(server, metrics).items():
            assert [_n_plus_one_total(body.decode()) for _, body in answers] == [expected_total] * len(answers), pid

    with gunicorn(env, workers=2) as server:
        served = _on_each_worker(server, n_plus_one, per_worker=2)  # findings made by both workers
        assert all(status == 200 for answers in served.values() for status, _ in answers)
        settled(len(sent), len(sent))
        agree(set(sent), float(len(sent)))
        first_run = {p.name for p in metrics_base.iterdir()}
        assert len(first_run) == 1  # one directory for the master and both workers
    out = StringIO()
    call_command("debugging_report", "--since", "1h", "--format", "json", stdout=out)
    reported = {f["correlation_id"] for f in json.loads(out.getvalue())["query_findings"]}
    assert len(reported & set(sent)) == min(len(sent), MAX_GROUPS)  # the CLI sees both workers' findings

    before = list(sent)
    with gunicorn(env, workers=2) as server:
        # stored findings survive the restart; the new run's counters start from 0, not from the old files
        agree(set(before), 0.0)
        assert {p.name for p in metrics_base.iterdir()}.isdisjoint(first_run)
        n_plus_one()
        settled(len(sent), 1)
        agree(set(sent), 1.0)
