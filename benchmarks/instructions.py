#!/usr/bin/env python3
"""Instructions per request, counted by callgrind: the noise-free view of the overhead.

    python benchmarks/instructions.py                      # plain, otel, e2e on /one/ and /heavy/
    python benchmarks/instructions.py --configs otel,e2e --views one --small 20 --large 60

Timings on a shared 2-core machine move by several per cent between identical processes (see the
``otel_twin`` control in ``overhead.py``), which is the size of the effect the 5 % target is about.
Instruction counts do not: for each configuration and view this script runs the benchmark project
twice under ``valgrind --tool=callgrind --separate-threads=yes`` (side by side), once with ``--small``
and once with ``--large`` measured requests (``bench_project/count_requests.py``), and divides the
difference by the difference in requests. Start-up, warm-up and exit cancel out. Reported per
request: the request thread's instructions outside the garbage collector (the work on the request
path itself), the collector's on all threads (a collection runs on whichever thread crosses the
allocation threshold, so its cost lands on the request thread by chance), and all threads' (the
telemetry's total price, including span export, the derive thread and the record writer).

What it does not see: time spent waiting (for MariaDB, for the interpreter lock held by another
thread), kernel time and cache effects; ``overhead.py`` measures those. valgrind runs threads one
at a time, so the background threads' share is counted but their interference is not. Not quite
everything cancels: work that depends on wall time (a background thread's periodic wake-ups, the
interpreter's 5 ms switch requests) runs more often under valgrind's slowdown, which adds a little
to the "all threads" column, and the request thread's count moves by a few thousand instructions
between repeated runs (a fraction of a per cent).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

import overhead  # noqa: E402  (the sibling script: database set-up, sidecar, labels)

SUMMARY = re.compile(r"^summary:\s+(\d+)", re.MULTILINE)
#: (instructions, of which in the garbage collector) by thread number, "1" being the main thread.
Counts = dict[str, tuple[int, int]]
GC_LINE = re.compile(r"^\s*([\d,]+) \([^)]*\)\s+\S*Modules/gcmodule\.c:gc_collect_main\b", re.MULTILINE)


def count_pair(env: dict[str, str], out_dir: Path, config: str, view: str, warmup: int,
               sizes: tuple[int, int]) -> tuple[Counts, Counts]:
    """Instructions by thread number (1 = the main/request thread) of the two runs, which run at the
    same time: instruction counts hardly depend on what else the machine does (see the module
    docstring for what does)."""
    runs = []
    for n in sizes:
        run_dir = Path(tempfile.mkdtemp(prefix=f"{config}-{view}-{n}-", dir=out_dir))
        argv = ["valgrind", "--tool=callgrind", "--separate-threads=yes", "--dump-instr=no",
                f"--callgrind-out-file={run_dir}/cg.out", sys.executable, "-m", "bench_project.count_requests",
                config, view, str(warmup), str(n)]
        runs.append((n, run_dir, subprocess.Popen(argv, cwd=BENCH_DIR, env=env, stdout=subprocess.DEVNULL,
                                                  stderr=subprocess.PIPE, text=True)))
    counted = []
    for n, run_dir, proc in runs:
        _, stderr = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"{config} /{view}/ n={n} failed:\n{stderr[-3000:]}")
        counted.append(_threads(run_dir))
    return counted[0], counted[1]


def _threads(run_dir: Path) -> Counts:
    """(instructions, of which in the cyclic garbage collector) by thread number."""
    by_thread: Counts = {}
    for path in sorted(run_dir.glob("cg.out-*")):
        match = SUMMARY.search(path.read_text(errors="replace"))
        if match:
            by_thread[path.name.rsplit("-", 1)[1].lstrip("0") or "0"] = (int(match.group(1)), _gc_instructions(path))
    if "1" not in by_thread:
        raise RuntimeError(f"no main-thread profile in {run_dir}: {sorted(p.name for p in run_dir.iterdir())}")
    return by_thread


def _gc_instructions(path: Path) -> int:
    """Inclusive instructions of CPython's ``gc_collect_main`` in one thread's profile.

    A collection runs on whichever thread's allocation crosses the threshold, and one can cost
    millions of instructions: which thread pays is chance (it moved the request thread's count by
    ±8 % between two runs), so it is reported apart."""
    annotated = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100", str(path)],
                               capture_output=True, text=True, check=False).stdout
    match = GC_LINE.search(annotated)
    return int(match.group(1).replace(",", "")) if match else 0


def per_request(small: Counts, large: Counts, requests: int) -> dict[str, float]:
    """Per-request figures from the two runs' (instructions, of which GC) by thread."""
    def diff(pick: Any, threads: Any = None) -> float:
        names = threads or set(large) | set(small)
        return sum(pick(large.get(t, (0, 0))) - pick(small.get(t, (0, 0))) for t in names) / requests

    return {
        "request_thread": diff(lambda c: c[0] - c[1], ["1"]),
        "request_thread_with_gc": diff(lambda c: c[0], ["1"]),
        "gc_all_threads": diff(lambda c: c[1]),
        "all_threads": diff(lambda c: c[0]),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind not found (Debian: apt-get install valgrind)")
    configs = [c for c in args.configs.split(",") if c]
    views = [v for v in args.views.split(",") if v]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(BENCH_DIR), str(overhead.REPO_DIR), env.get("PYTHONPATH", "")])
    env["BENCH_DB_NAME"], env["BENCH_DB_HOST"], env["BENCH_DB_PORT"] = args.db_name, args.db_host, str(args.db_port)
    for key in [k for k in env if k.startswith("OTEL_")]:
        del env[key]
    env["PYTHONHASHSEED"] = "0"
    out_dir = Path(tempfile.mkdtemp(prefix="e2e-otel-instructions-"))
    started = dt.datetime.now(dt.timezone.utc)
    overhead.create_database(args)
    sidecar = None
    try:
        seed = subprocess.run([sys.executable, "-m", "bench_project.seed"], cwd=BENCH_DIR, env=env,
                              capture_output=True, text=True, check=False)
        if seed.returncode != 0:
            raise RuntimeError(f"seeding failed:\n{seed.stderr[-3000:]}")
        log = open(out_dir / "sidecar.log", "w")  # noqa: SIM115
        sidecar = overhead.Proc("sidecar", [sys.executable, "-m", "bench_project.sidecar"], env, log)
        env["BENCH_OTLP_ENDPOINT"] = sidecar.read()["grpc_endpoint"]
        results: dict[str, dict[str, Any]] = {}
        for view in views:
            for config in configs:
                print(f"counting {config} /{view}/ ({args.small} and {args.large} requests)", file=sys.stderr,
                      flush=True)
                small, large = count_pair(env, out_dir, config, view, args.warmup, (args.small, args.large))
                results.setdefault(config, {})[view] = per_request(small, large, args.large - args.small)
        return {"started_utc": started.isoformat(timespec="seconds"), "machine": overhead.machine(args),
                "parameters": {"warmup": args.warmup, "small": args.small, "large": args.large},
                "instructions_per_request": results}
    finally:
        if sidecar is not None:
            sidecar.stop("quit")
        if not args.keep_db:
            overhead.drop_database(args)
        if args.keep_profiles:
            print(f"callgrind files kept in {out_dir}", file=sys.stderr)
        else:
            shutil.rmtree(out_dir, ignore_errors=True)


def format_report(report: dict[str, Any]) -> str:
    m, p, res = report["machine"], report["parameters"], report["instructions_per_request"]
    lines = [f"e2e-otel instructions per request (callgrind), {report['started_utc']} (UTC)",
             f"Python {m['python']}, Django {m['django']}, OTel SDK {m['opentelemetry_sdk']} / instrumentation "
             f"{m['instrumentation']}, PyMySQL {m['pymysql']}; per request = (run with {p['large']} requests - "
             f"run with {p['small']}) / {p['large'] - p['small']}, after {p['warmup']} warm-up requests",
             "request thread = its instructions outside the cyclic garbage collector (a collection runs on",
             "whichever thread happens to cross the allocation threshold); GC = the collector, all threads.",
             "",
             f"{'view':<9}{'configuration':<33}{'request thread':>16}{'GC':>12}{'all threads':>14}"]
    views = list(next(iter(res.values())))
    for view in views:
        for config, by_view in res.items():
            r = by_view[view]
            lines.append(f"{'/' + view + '/':<9}{overhead.LABELS[config]:<33}{r['request_thread']:>16,.0f}"
                         f"{r['gc_all_threads']:>12,.0f}{r['all_threads']:>14,.0f}")
    lines += ["", f"{'ratio':<30}{'view':<9}{'request thread':>16}{'all threads':>14}"]
    for name, (num, den) in overhead.RATIO_PAIRS.items():
        if num not in res or den not in res:
            continue
        for view in views:
            a, b = res[num][view], res[den][view]
            lines.append(f"{name:<30}{'/' + view + '/':<9}{a['request_thread'] / b['request_thread']:>16.3f}"
                         f"{a['all_threads'] / b['all_threads']:>14.3f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="plain,otel,e2e")
    parser.add_argument("--views", default="one,heavy")
    parser.add_argument("--warmup", type=int, default=30, help="untimed requests before the counted ones")
    parser.add_argument("--small", type=int, default=20, help="measured requests in the shorter run")
    parser.add_argument("--large", type=int, default=80, help="measured requests in the longer run")
    parser.add_argument("--db-host", default="127.0.0.1")
    parser.add_argument("--db-port", type=int, default=3306)
    parser.add_argument("--db-name", default="e2e_otel_bench_instr")
    parser.add_argument("--keep-db", action="store_true")
    parser.add_argument("--keep-profiles", action="store_true", help="keep the callgrind files (path on stderr)")
    parser.add_argument("--json", help="also write the results as JSON")
    args = parser.parse_args()
    if args.large <= args.small:
        parser.error("--large must be greater than --small")
    report = run(args)
    print(format_report(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
