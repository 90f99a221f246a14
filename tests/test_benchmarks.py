"""The overhead benchmark runs end to end (``--quick``). Not a timed test: nothing here looks at speed.

It starts the real sidecar (OTLP receiver + MariaDB proxy) and one worker process per configuration,
so it checks that every configuration really serves the views, that the traced ones export to the
receiver, and that the record writer of the e2e-otel configuration writes TraceSteps to MariaDB.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "benchmarks" / "overhead.py"

pytestmark = [pytest.mark.mysql, pytest.mark.slow]


def _db_name() -> str:
    # Derived from the per-run test database name so parallel runs never share a benchmark schema.
    return os.environ.get("E2E_MYSQL_TEST_DATABASE", "test_e2e_otel")[:48] + "_bench"


def test_quick_benchmark_runs_and_reports(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--json", str(out), "--db-name", _db_name(),
         "--log-dir", str(tmp_path / "logs"), "--proxy-delay", "0.05"],
        cwd=REPO, capture_output=True, text=True, timeout=240, check=False,
    )
    logs = "\n".join(f"--- {p.name}\n{p.read_text()[-2000:]}" for p in sorted((tmp_path / "logs").glob("*.log")))
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-4000:]}\n{logs}"
    report = json.loads(out.read_text())

    configs = {"plain", "otel", "e2e", "e2e_stalled"}
    assert set(report["latency"]) == configs
    assert report["parameters"]["processes_per_config"] == 2  # the two rounds went to different processes
    for config in configs:
        for view in ("one", "heavy"):
            row = report["latency"][config][view]
            assert row["requests"] == report["parameters"]["requests_per_config_and_view"] == 20
            assert row["median_us"] > 0 and row["p90_us"] >= row["median_us"]
    for view in ("one", "heavy"):
        assert set(report["ratios"][view]) == {"e2e-otel / stock OTel", "e2e-otel / plain",
                                               "stock OTel / plain", "stalled record DB / e2e-otel"}

    # Both traced configurations exported over OTLP/gRPC; plain Django exported nothing.
    received = report["spans_received"]
    assert received.get("bench-stock-otel", 0) > 0
    assert received.get("bench-e2e-otel", 0) > 0
    assert set(received) <= {"bench-stock-otel", "bench-e2e-otel", "bench-e2e-otel-stalled"}

    # The record writer really wrote TraceSteps into MariaDB (counted rows, not only its counters).
    (load,) = report["writer_load"]
    assert "unavailable" not in load, load
    assert load["steps_written"] > 0
    assert load["step_rows_added"] == load["steps_written"]
    assert load["steps_written"] + load["dropped_total"] <= load["offered_spans"]

    # Both tracing setups see exactly the two spans of /one/ (server + one query) per request; e2e-otel's
    # derived processors see them on the derive thread.
    hooks = report["hook_costs"]
    assert hooks["otel"]["one"]["calls_per_request"]["BatchSpanProcessor.on_end"] == 2
    assert hooks["e2e"]["one"]["calls_per_request"]["FanOutSpanProcessor.on_end"] == 2
    assert hooks["e2e"]["one"]["calls_per_request"]["derive: WorkflowSpanProcessor.on_end"] == 2
    assert hooks["e2e"]["heavy"]["calls_per_request"]["derive: WorkflowSpanProcessor.on_end"] == 11

    assert "e2e-otel / stock OTel" in report["table"] and "median" in report["table"]
    assert proc.stdout.strip() == report["table"]


def test_rejects_nonsense_arguments() -> None:
    proc = subprocess.run([sys.executable, str(SCRIPT), "--rounds", "5", "--requests", "2"],
                          cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2
    assert "--requests >= --rounds" in proc.stderr


def _load(name: str) -> Any:
    import importlib.util

    sys.path.insert(0, str(REPO / "benchmarks"))
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bootstrap_interval_brackets_the_ratio_reproducibly() -> None:
    overhead = _load("overhead")
    steady_num = [[110, 111, 109, 110]] * 8
    steady_den = [[100, 101, 99, 100]] * 8
    lo, hi = overhead.bootstrap_ratio_ci(steady_num, steady_den)
    assert lo == pytest.approx(1.1) and hi == pytest.approx(1.1)  # identical rounds: no spread
    drifting_num = [[100 + 10 * k] * 4 for k in range(8)]  # rounds that move together...
    drifting_den = [[100 + 10 * k] * 4 for k in range(8)]
    assert overhead.bootstrap_ratio_ci(drifting_num, drifting_den) == (1.0, 1.0)  # ...cancel out
    noisy_num = [[100 + (17 * k) % 23] * 4 for k in range(8)]
    noisy_den = [[100 + (11 * k) % 19] * 4 for k in range(8)]
    first = overhead.bootstrap_ratio_ci(noisy_num, noisy_den)
    assert first == overhead.bootstrap_ratio_ci(noisy_num, noisy_den)  # seeded
    assert first[0] < first[1]
    assert overhead.verdict(1.02, [0.99, 1.04]) == "met"
    assert overhead.verdict(1.02, [0.99, 1.09]) == "undecided at this run's noise"
    assert overhead.verdict(1.12, [1.08, 1.15]) == "NOT met"


def test_instruction_counts_run_under_callgrind(tmp_path: Path) -> None:
    """``benchmarks/instructions.py`` end to end with the fewest requests: two callgrind runs of one
    configuration, per-request counts from their difference."""
    import shutil

    if shutil.which("valgrind") is None:
        pytest.skip("valgrind not installed (Debian package valgrind)")
    out = tmp_path / "instructions.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "instructions.py"), "--configs", "e2e", "--views", "one",
         "--warmup", "2", "--small", "1", "--large", "3", "--db-name", _db_name() + "_i", "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=600, check=False,
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-4000:]}"
    counts = json.loads(out.read_text())["instructions_per_request"]["e2e"]["one"]
    # A request through Django, the ORM, PyMySQL and the tracing is millions of instructions; all
    # threads together are more than the request thread alone.
    assert 500_000 < counts["request_thread"] < counts["all_threads"] < 100_000_000
    assert "C  e2e-otel (all on)" in proc.stdout
