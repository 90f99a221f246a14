#!/usr/bin/env python
"""Per-request overhead of e2e-otel versus stock OpenTelemetry versus plain Django.

    python benchmarks/overhead.py --requests 2000 --rounds 10 --json results.json
    python benchmarks/overhead.py --quick          # a few requests: checks that everything runs

One long-lived worker process per configuration (tracer providers and instrumentors are per
process) runs the same Django app in-process through its WSGI handler; this driver sends them
interleaved batches (A B C C' | B C C' A | ...) so drift on a shared machine hits all of them
alike. A sidecar process hosts the OTLP receiver and the stalling MariaDB proxy, off the measured
processes' GIL. See benchmarks/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import IO, Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent

LABELS = {
    "plain": "A  plain Django",
    "otel": "B  stock OpenTelemetry",
    "otel_twin": "B2 stock OpenTelemetry, twin",
    "e2e": "C  e2e-otel (all on)",
    "e2e_stalled": "C' e2e-otel, record DB stalled",
    "e2e_bare": "Cb e2e-otel, records+metrics off",
    "e2e_norecords": "Cm e2e-otel, records off",
    "e2e_patched": "C+ e2e-otel, patched (--patched)",
}
BREAKDOWN_CONFIGS = "e2e_bare,e2e_norecords"
EXPECTED_QUERIES = {"one": 1, "heavy": 10}


class Proc:
    """A child process spoken to in JSON lines (a worker or the sidecar); driver's main thread only."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: IO[str]) -> None:
        self.name = name
        self.popen = subprocess.Popen(argv, cwd=BENCH_DIR, env=env, stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, stderr=log, text=True, bufsize=1)

    def read(self) -> dict[str, Any]:
        if self.popen.stdout is None:
            raise RuntimeError(f"{self.name} has no stdout pipe")
        line = self.popen.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.name} exited (code {self.popen.poll()}); see its log")
        answer = json.loads(line)
        if isinstance(answer, dict) and "error" in answer:
            raise RuntimeError(f"{self.name}: {answer['error']}")
        return answer

    def send(self, message: dict[str, Any] | str) -> dict[str, Any]:
        if self.popen.stdin is None:
            raise RuntimeError(f"{self.name} has no stdin pipe")
        self.popen.stdin.write((message if isinstance(message, str) else json.dumps(message)) + "\n")
        self.popen.stdin.flush()
        return self.read()

    def stop(self, message: dict[str, Any] | str) -> None:
        try:
            if self.popen.poll() is None:
                self.send(message)
        except (OSError, RuntimeError, ValueError):
            pass
        try:
            self.popen.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()


# --- database ---------------------------------------------------------------------------------


def _mysql(args: argparse.Namespace) -> Any:
    import pymysql

    return pymysql.connect(host=args.db_host, port=args.db_port, user="root", password="", autocommit=True)


def create_database(args: argparse.Namespace) -> None:
    with _mysql(args) as conn, conn.cursor() as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS `{args.db_name}`")
        cursor.execute(f"CREATE DATABASE `{args.db_name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")


def drop_database(args: argparse.Namespace) -> None:
    with _mysql(args) as conn, conn.cursor() as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS `{args.db_name}`")


def server_version(args: argparse.Namespace) -> str:
    with _mysql(args) as conn:
        return str(conn.get_server_info())


# --- statistics -------------------------------------------------------------------------------


def percentile(values: list[int], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def summarize(batches: list[dict[str, Any]]) -> dict[str, Any]:
    latencies = [v for b in batches for v in b["lat_ns"]]
    thread_cpu = [v for b in batches for v in b["thread_cpu_ns"]]
    n = len(latencies)
    by_thread: dict[str, int] = {}
    for b in batches:
        for name, ns in b["cpu_by_thread_ns"].items():
            by_thread[name] = by_thread.get(name, 0) + ns
    return {
        "requests": n,
        "median_us": percentile(latencies, 0.5) / 1000,
        "p90_us": percentile(latencies, 0.9) / 1000,
        "mean_us": statistics.fmean(latencies) / 1000 if latencies else float("nan"),
        "thread_cpu_median_us": percentile(thread_cpu, 0.5) / 1000,
        "thread_cpu_p90_us": percentile(thread_cpu, 0.9) / 1000,
        "cpu_us_per_request": sum(b["cpu_ns"] for b in batches) / max(n, 1) / 1000,
        "cpu_us_per_request_by_thread": {k: v / max(n, 1) / 1000
                                         for k, v in sorted(by_thread.items(), key=lambda kv: -kv[1])},
        "round_medians_us": [percentile(b["lat_ns"], 0.5) / 1000 for b in batches],
        "round_thread_cpu_medians_us": [percentile(b["thread_cpu_ns"], 0.5) / 1000 for b in batches],
        "rounds_lat_ns": [b["lat_ns"] for b in batches],
        "rounds_thread_cpu_ns": [b["thread_cpu_ns"] for b in batches],
    }


BOOTSTRAP_SAMPLES = 1000


def bootstrap_ratio_ci(num_rounds: list[list[int]], den_rounds: list[list[int]],
                       samples: int = BOOTSTRAP_SAMPLES, seed: int = 0) -> tuple[float, float]:
    """95 % interval of the ratio of pooled medians, resampling whole rounds (the same rounds for
    both configurations, since round k of each ran side by side): the spread that drift between
    rounds puts on the ratio, which a per-request interval would hide."""
    rounds = min(len(num_rounds), len(den_rounds))
    if rounds < 2:
        return float("nan"), float("nan")
    rng = random.Random(seed)
    found = []
    for _ in range(samples):
        picked = [rng.randrange(rounds) for _ in range(rounds)]
        num = statistics.median(v for k in picked for v in num_rounds[k])
        den = statistics.median(v for k in picked for v in den_rounds[k])
        if den:
            found.append(num / den)
    found.sort()
    return found[int(0.025 * (len(found) - 1))], found[int(0.975 * (len(found) - 1))]


def ratios(results: dict[str, dict[str, Any]], view: str, num: str, den: str) -> dict[str, float] | None:
    if num not in results or den not in results:
        return None
    a, b = results[num][view], results[den][view]
    per_round = [x / y for x, y in zip(a["round_thread_cpu_medians_us"],
                                                 b["round_thread_cpu_medians_us"], strict=True) if y]
    cpu_lo, cpu_hi = bootstrap_ratio_ci(a["rounds_thread_cpu_ns"], b["rounds_thread_cpu_ns"])
    wall_lo, wall_hi = bootstrap_ratio_ci(a["rounds_lat_ns"], b["rounds_lat_ns"])
    return {
        "median": a["median_us"] / b["median_us"],
        "p90": a["p90_us"] / b["p90_us"],
        "thread_cpu_median": a["thread_cpu_median_us"] / b["thread_cpu_median_us"],
        "cpu": a["cpu_us_per_request"] / b["cpu_us_per_request"],
        "round_median": statistics.median(per_round) if per_round else float("nan"),
        "round_min": min(per_round) if per_round else float("nan"),
        "round_max": max(per_round) if per_round else float("nan"),
        "thread_cpu_median_ci95": [cpu_lo, cpu_hi],
        "median_ci95": [wall_lo, wall_hi],
    }


# --- the run ----------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    configs = [c for c in args.configs.split(",") if c]
    views = [v for v in args.views.split(",") if v]
    per_batch = max(1, args.requests // args.rounds)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(BENCH_DIR), str(REPO_DIR), env.get("PYTHONPATH", "")])
    if args.patched:
        configs.append("e2e_patched")
    env["BENCH_DB_NAME"], env["BENCH_DB_HOST"] = args.db_name, args.db_host
    env["BENCH_DB_PORT"] = str(args.db_port)
    for key in [k for k in env if k.startswith("OTEL_")]:
        del env[key]  # every configuration is defined by its settings module, nothing else
    env["PYTHONHASHSEED"] = "0"
    log_dir = Path(args.log_dir or tempfile.mkdtemp(prefix="e2e-otel-bench-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    say = (lambda *a: None) if args.json_only else (lambda *a: print(*a, file=sys.stderr, flush=True))
    say(f"logs: {log_dir}")

    started = dt.datetime.now(dt.timezone.utc)
    create_database(args)
    procs: dict[str, Proc] = {}
    pools: dict[str, list[Proc]] = {}
    sidecar: Proc | None = None
    logs = contextlib.ExitStack()
    try:
        seed = subprocess.run([sys.executable, "-m", "bench_project.seed"], cwd=BENCH_DIR, env=env,
                              capture_output=True, text=True, check=False)
        if seed.returncode != 0:
            raise RuntimeError(f"seeding failed:\n{seed.stderr[-4000:]}")
        seeded = json.loads(seed.stdout.strip().splitlines()[-1])
        say(f"seeded: {seeded}")

        sidecar = Proc("sidecar", [sys.executable, "-m", "bench_project.sidecar",
                                   "--proxy-delay", str(args.proxy_delay)], env,
                       logs.enter_context(open(log_dir / "sidecar.log", "w")))  # noqa: SIM115
        endpoints = sidecar.read()
        env["BENCH_OTLP_ENDPOINT"] = endpoints["grpc_endpoint"]
        env["BENCH_RECORDS_PROXY_PORT"] = str(endpoints["proxy_port"])

        for config in configs:
            worker_env = dict(env)
            if config == "e2e_patched":  # the patched package shadows the tree's, for this worker only
                worker_env["PYTHONPATH"] = os.pathsep.join([str(Path(args.patched).resolve()), env["PYTHONPATH"]])
            pools[config] = [
                Proc(f"{config}#{i}", [sys.executable, "-m", "bench_project.worker", config], worker_env,
                     logs.enter_context(open(log_dir / f"worker-{config}-{i}.log", "w")))  # noqa: SIM115
                for i in range(args.processes)]
            procs[config] = pools[config][0]  # the one asked for stats, hook timings, writer load, profiles
        for config in configs:
            for proc in pools[config]:
                proc.read()  # "ready"
                for view in views:
                    queries = proc.send({"op": "check", "view": view})["queries"]
                    if queries != EXPECTED_QUERIES[view]:
                        raise RuntimeError(f"{config}: /{view}/ ran {queries} queries, "
                                           f"expected {EXPECTED_QUERIES[view]}")
                    proc.send({"op": "warmup", "view": view, "n": args.warmup})
        say(f"workers ready: {', '.join(configs)} ({args.processes} process(es) each); {args.rounds} rounds x "
            f"{per_batch} requests per configuration and view")

        batches: dict[str, dict[str, list[dict[str, Any]]]] = {c: {v: [] for v in views} for c in configs}
        for round_no in range(args.rounds):
            order = configs[round_no % len(configs):] + configs[:round_no % len(configs)]
            for view in views:
                for config in order:  # the configuration's processes take the rounds in turn
                    worker = pools[config][round_no % len(pools[config])]
                    batches[config][view].append(worker.send({"op": "batch", "view": view, "n": per_batch}))
            say(f"round {round_no + 1}/{args.rounds} done")

        results = {c: {v: summarize(batches[c][v]) for v in views} for c in configs}
        report: dict[str, Any] = {
            "started_utc": started.isoformat(timespec="seconds"),
            "machine": machine(args),
            "parameters": {"requests_per_config_and_view": per_batch * args.rounds, "rounds": args.rounds,
                           "processes_per_config": args.processes,
                           "batch": per_batch, "warmup": args.warmup, "proxy_delay_s": args.proxy_delay},
            "seed": seeded,
            "latency": results,
            "ratios": {view: {name: ratios(results, view, num, den) for name, (num, den) in RATIO_PAIRS.items()
                              if num in results and den in results}
                       for view in views},
        }
        report["spans_received"] = sidecar.send("counts")
        report["record_writer"] = {c: procs[c].send({"op": "stats"})["records"]
                                   for c in configs if c.startswith("e2e")}

        for config, key in (("e2e", "writer_load"), ("e2e_patched", "writer_load_patched")):
            if config not in procs or args.writer_seconds <= 0:
                continue
            report[key] = []
            for rate in [float(r) for r in args.writer_rates.split(",") if r]:
                say(f"record writer [{config}]: offering {rate:.0f} spans/s for {args.writer_seconds}s")
                report[key].append(procs[config].send(
                    {"op": "writer_load", "rate": rate, "seconds": args.writer_seconds,
                     "steps_per_trace": 10}))
        if "e2e" in procs and args.profile_requests > 0:
            say("profiling the record writer thread")
            report["writer_profile"] = [procs["e2e"].send(
                {"op": "profile_writer", "traces": max(20, args.profile_requests // 2), "steps_per_trace": k})
                for k in (2, 11)]
        if args.hook_requests > 0:
            say("timing the tracing hooks on the request path")
            report["hook_costs"] = {config: {view: procs[config].send(
                {"op": "hook_costs", "view": view, "n": args.hook_requests}) for view in views}
                for config in configs if config in ("otel", "e2e", "e2e_patched")}
        if args.profile_requests > 0:
            say("profiling the request path of configurations B and C")
            report["profile"] = {config: {view: procs[config].send(
                {"op": "profile", "view": view, "n": args.profile_requests}) for view in views}
                for config in ("otel", "e2e", "e2e_bare") if config in procs}
        report["finished_utc"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        return report
    finally:
        for pool in pools.values():
            for proc in pool:
                proc.stop({"op": "quit"})
        if sidecar is not None:
            sidecar.stop("quit")
        if not args.keep_db:
            drop_database(args)
        logs.close()


RATIO_PAIRS = {
    "e2e-otel / stock OTel": ("e2e", "otel"),
    "e2e-otel / plain": ("e2e", "plain"),
    "stock OTel / plain": ("otel", "plain"),
    "twin B2 / B (noise floor)": ("otel_twin", "otel"),
    "stalled record DB / e2e-otel": ("e2e_stalled", "e2e"),
    "e2e core (Cb) / stock OTel": ("e2e_bare", "otel"),
    "+metrics (Cm) / Cb": ("e2e_norecords", "e2e_bare"),
    "+records (C) / Cm": ("e2e", "e2e_norecords"),
    "patched (C+) / e2e-otel": ("e2e_patched", "e2e"),
    "patched (C+) / stock OTel": ("e2e_patched", "otel"),
}


def machine(args: argparse.Namespace) -> dict[str, Any]:
    from importlib.metadata import version

    return {
        "cpus": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "python": platform.python_version(),
        "django": version("django"),
        "opentelemetry_sdk": version("opentelemetry-sdk"),
        "instrumentation": version("opentelemetry-instrumentation-django"),
        "pymysql": version("pymysql"),
        "mariadb": server_version(args),
        "load_average_at_start": os.getloadavg(),
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


# --- output -----------------------------------------------------------------------------------


def verdict(ratio: float, ci: list[float] | None, target: float = 1.05) -> str:
    """"met"/"NOT met" by the point estimate, unless its interval straddles the target: then the run
    cannot tell, and says so."""
    if ci and ci[0] <= target < ci[1]:
        return "undecided at this run's noise"
    return "met" if ratio <= target else "NOT met"


def format_report(report: dict[str, Any]) -> str:
    m, p = report["machine"], report["parameters"]
    lines = [
        f"e2e-otel overhead benchmark, {report['started_utc']} (UTC)",
        (f"machine: {m['cpus']} CPUs ({m['cpu_model']}), load avg at start {m['load_average_at_start'][0]:.2f}; "
         f"Python {m['python']}, Django {m['django']}, OTel SDK {m['opentelemetry_sdk']} / "
         f"instrumentation {m['instrumentation']}, PyMySQL {m['pymysql']}, MariaDB {m['mariadb']}"),
        (f"{p['requests_per_config_and_view']} requests per configuration and view, {p['rounds']} interleaved "
         f"rounds of {p['batch']}, {p.get('processes_per_config', 1)} worker process(es) per configuration "
         f"taking the rounds in turn, after {p['warmup']} warm-up requests; in-process WSGI calls"),
        "",
        "wall = request latency (perf_counter); req CPU = CPU time of the request thread for the request;",
        "CPU/req = whole-process CPU (all threads: request, span export, record writer, ...) over the",
        "batch and its flush, divided by the requests.",
        "",
        (f"{'view':<9}{'configuration':<33}{'wall med':>9}{'wall p90':>9}{'req CPU med':>12}"
         f"{'req CPU p90':>12}{'CPU/req':>9}   (microseconds)"),
    ]
    for view in next(iter(report["latency"].values())):
        for config, by_view in report["latency"].items():
            r = by_view[view]
            lines.append(f"{'/' + view + '/':<9}{LABELS[config]:<33}{r['median_us']:>9.0f}{r['p90_us']:>9.0f}"
                         f"{r['thread_cpu_median_us']:>12.0f}{r['thread_cpu_p90_us']:>12.0f}"
                         f"{r['cpu_us_per_request']:>9.0f}")
    lines += ["", "ratios: pooled medians, except 'paired' = median over rounds of the per-round ratio of",
              "request-thread CPU medians (adjacent batches, so drift cancels), with its min .. max;",
              "[lo, hi] = 95 % bootstrap interval of the pooled-median ratio, resampling whole rounds.",
              (f"{'ratio':<30}{'view':<9}{'wall med':>9}{'wall p90':>9}{'req CPU med':>12}{'CPU/req':>9}"
               f"{'paired':>8}   min .. max      req CPU 95 %    wall 95 %")]
    for view, pairs in report["ratios"].items():
        for name, r in pairs.items():
            if r is None:
                continue
            lines.append(f"{name:<30}{'/' + view + '/':<9}{r['median']:>9.3f}{r['p90']:>9.3f}"
                         f"{r['thread_cpu_median']:>12.3f}{r['cpu']:>9.3f}{r['round_median']:>8.3f}"
                         f"   {r['round_min']:.3f} .. {r['round_max']:.3f}"
                         f"   [{r['thread_cpu_median_ci95'][0]:.3f}, {r['thread_cpu_median_ci95'][1]:.3f}]"
                         f" [{r['median_ci95'][0]:.3f}, {r['median_ci95'][1]:.3f}]")
    target = [pairs.get("e2e-otel / stock OTel") for pairs in report["ratios"].values()]
    if target and all(target):
        for key, what in (("thread_cpu_median", "request-thread CPU median"),
                          ("round_median", "request-thread CPU, paired per round"), ("median", "wall median"),
                          ("cpu", "whole-process CPU per request")):
            worst = max((r for r in target if r), key=lambda r: r[key])
            ci = worst.get(f"{key}_ci95")
            lines.append(f"target e2e-otel / stock OTel <= 1.05 by {what}: {verdict(worst[key], ci)} "
                         f"(worst view {worst[key]:.3f}"
                         + (f", 95 % interval [{ci[0]:.3f}, {ci[1]:.3f}])" if ci else ")"))
    lines.append("")
    lines.append("CPU per request by thread (us):")
    for view in next(iter(report["latency"].values())):
        for config, by_view in report["latency"].items():
            parts = ", ".join(f"{k} {v:.0f}" for k, v in by_view[view]["cpu_us_per_request_by_thread"].items()
                              if v >= 1)
            lines.append(f"  {'/' + view + '/':<9}{LABELS[config]:<33}{parts}")
    lines += ["", f"spans received by the OTLP receiver: {report['spans_received']}"]
    for config, stats in report.get("record_writer", {}).items():
        lines.append(f"record writer after the rounds [{config}, first process]: {json.dumps(stats, sort_keys=True)}")
    if report.get("hook_costs"):
        lines += ["", ("CPU time in tracing hooks (us per request; thread_time_ns around each call, so GIL "
                       "waits are excluded). 'request thread' = hooks on the request thread, of the request's "
                       "own CPU; 'derive' = e2e-otel's derived processors, on its derive thread:")]
        for config, by_view in report["hook_costs"].items():
            for view, costs in by_view.items():
                hooks = costs["hooks_us_per_request"]
                inline = sum(us for name, us in hooks.items() if not name.startswith("derive: "))
                derive = sum(us for name, us in hooks.items() if name.startswith("derive: "))
                lines.append(f"  {'/' + view + '/':<9}{LABELS[config]:<33}request thread {inline:.0f} of "
                             f"{costs['request_us']:.0f} per request" + (f"; derive {derive:.0f}" if derive else ""))
                for name, us in hooks.items():
                    lines.append(f"      {name:<58}{us:>8.1f}  ({costs['calls_per_request'][name]:.0f} calls)")
    for prof in report.get("writer_profile", []):
        if "unavailable" in prof:
            continue
        areas = ", ".join(f"{k} {v:.0f}" for k, v in prof["us_per_trace_by_area"].items())
        lines.append(f"writer thread under cProfile, traces of {prof['steps_per_trace']} steps: "
                     f"{prof['writer_us_per_trace']:.0f} us per trace, {prof['sql_statements_per_trace']:.1f} SQL "
                     f"statements per trace ({areas})")
    for load in report.get("writer_load", []):
        lines.append(format_load(load))
    for load in report.get("writer_load_patched", []):
        lines.append("[C+] " + format_load(load))
    return "\n".join(lines)


def format_load(load: dict[str, Any]) -> str:
    if "unavailable" in load:
        return f"writer load: {load['unavailable']}"
    return (f"writer load: offered {load['offered_spans']} spans ({load['offered_rate']:.0f}/s target, "
            f"{load['achieved_offer_rate']:.0f}/s achieved) for {load['offer_seconds']:.1f}s -> "
            f"{load['steps_written']} TraceSteps written ({load['step_rows_added']} rows counted), "
            f"{load['write_rate_steps_per_s']:.0f} steps/s sustained until drained at "
            f"{load['drain_seconds']:.1f}s; dropped {load['dropped']}; max queue depth "
            f"{load['max_queue_depth']}/{load['queue_capacity']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000, help="per configuration and view (all rounds)")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=200, help="untimed requests per worker and view")
    parser.add_argument("--configs", default="plain,otel,e2e,e2e_stalled",
                        help="comma list; otel_twin adds a second stock-OTel worker whose ratio to B is "
                             "the noise floor between two identical processes")
    parser.add_argument("--views", default="one,heavy")
    parser.add_argument("--processes", type=int, default=3,
                        help="worker processes per configuration, taking the rounds in turn: one process can be "
                             "a few per cent faster or slower than an identical one for its whole life")
    parser.add_argument("--breakdown", action="store_true",
                        help=f"add configurations {BREAKDOWN_CONFIGS} to split C's cost by feature")
    parser.add_argument("--writer-rates", default="2000,20000", help="offered spans/s for the writer test")
    parser.add_argument("--writer-seconds", type=float, default=5.0, help="0 skips the writer test")
    parser.add_argument("--hook-requests", type=int, default=500,
                        help="requests per traced configuration and view for the hook timing (0: skip)")
    parser.add_argument("--profile-requests", type=int, default=0, help="cProfile N requests of config C")
    parser.add_argument("--proxy-delay", type=float, default=0.25,
                        help="seconds the stalling proxy holds each packet (config C')")
    parser.add_argument("--db-host", default="127.0.0.1")
    parser.add_argument("--db-port", type=int, default=3306)
    parser.add_argument("--db-name", default="e2e_otel_bench")
    parser.add_argument("--patched", metavar="DIR",
                        help="add configuration C+: e2e-otel imported from DIR (a patched copy of the "
                             "package), measured interleaved with C")
    parser.add_argument("--keep-db", action="store_true", help="do not drop the database at the end")
    parser.add_argument("--json", metavar="PATH", help="also write the full results as JSON")
    parser.add_argument("--json-only", action="store_true", help="no progress output")
    parser.add_argument("--log-dir", help="worker/sidecar stderr logs (default: a temp dir)")
    parser.add_argument("--quick", action="store_true", help="tiny run that only checks the benchmark works")
    args = parser.parse_args(argv)
    if args.breakdown:
        args.configs = ",".join([*args.configs.split(","), *BREAKDOWN_CONFIGS.split(",")])
    if args.quick:
        args.requests, args.rounds, args.warmup, args.processes = 20, 2, 5, min(args.processes, 2)
        args.writer_rates, args.writer_seconds = "500", 0.5
        args.profile_requests = min(args.profile_requests, 10)
        args.hook_requests = min(args.hook_requests, 10)
    if args.rounds < 1 or args.requests < args.rounds:
        parser.error("need --rounds >= 1 and --requests >= --rounds")
    if args.processes < 1:
        parser.error("need --processes >= 1")
    report = run(args)
    text = format_report(report)
    if args.json:
        Path(args.json).write_text(json.dumps({**report, "table": text}, indent=2) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
