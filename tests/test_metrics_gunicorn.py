"""/metrics under real gunicorn with 2 preloaded workers in prometheus_client multiprocess mode."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.servers import BIN_DIR, ServerProcess, free_port, subprocess_env

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
