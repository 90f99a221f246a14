"""``benchmarks/command_exit.py`` runs (one round) and the commands it times print no export errors.

Not a timed test: the figures are the benchmark's business (see the README); this checks that the
three configurations run and that neither "no collector" nor "collector down" prints an exporter line.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.servers import REPO_ROOT, subprocess_env

pytestmark = pytest.mark.slow


def test_one_round_runs_and_prints_no_export_error_lines(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "benchmarks" / "command_exit.py"), "--rounds", "1", "--json", str(out)],
        cwd=REPO_ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=180, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(out.read_text())
    assert set(report["seconds"]) == {"plain", "e2e", "e2e-down"}
    assert all(len(times) == 1 and times[0] > 0 for times in report["seconds"].values())
    assert report["export_error_lines"] == {"plain": [], "e2e": [], "e2e-down": []}
    assert "export error lines: 0" in result.stdout
