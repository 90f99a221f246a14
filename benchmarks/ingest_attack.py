"""Can one client holding the (public) ingest key hurt the app? Issue #18's attack, measured.

A real server: gunicorn, one worker, ``--threads`` threads, serving ``bench_project`` (configuration
C: e2e-otel fully on, records on MariaDB, OTLP/gRPC export to the sidecar's receiver) plus the
ingestion endpoint with every limit at its default. The driver sends app traffic at a fixed rate
(open loop: latency counts from the intended send time, so a stalled server cannot hide its queue)
to the one-query view ``/one/``, in alternating phases:

- *healthy*: app traffic only;
- *attack*: the same traffic while one client (one address, ``--attack-threads`` connections) posts
  to the ingestion endpoint as fast as the endpoint lets it (on 429/503 it waits ``Retry-After``):
  gzip bodies near the size limits (512 spans, each span its own new trace, each carrying ~1.8 KiB of
  token-like text that is costly for the masker).

Reported per phase kind: app p50/p99/max, the attacker's answers, the worker's CPU and peak RSS,
and at the end the workflow sessions created and the export/ingestion drop counters. Everything is
bounded (``--seconds`` per phase, ``--rounds``), on 127.0.0.1 only.

    python benchmarks/ingest_attack.py                       # the current code
    python benchmarks/ingest_attack.py --code /path/to/old   # another e2e_otel (e.g. main) for "before"
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
sys.path.insert(0, str(BENCH_DIR))

from overhead import Proc, create_database, drop_database  # noqa: E402

INGEST_PATH = "/api/v1/debugging/otlp/v1/traces"
WORDS = ("secret", "token", "password", "apikey", "session", "csrf", "Bearer", "cookie")
ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


# --- attack payloads ---------------------------------------------------------------------------------


def token_like(rng: random.Random, length: int) -> str:
    """Secret-looking words glued into key-like runs: what makes the masker walk back per word."""
    parts: list[str] = []
    size = 0
    while size < length:
        part = rng.choice(WORDS) if rng.random() < 0.8 else "".join(rng.choices(ALPHABET, k=8))
        parts.append(part)
        size += len(part)
    return "".join(parts)[:length]


def attack_body(rng: random.Random, *, spans: int = 512, text: int = 1800) -> bytes:
    """One gzip OTLP/protobuf body: ``spans`` spans, each a new trace with ``text`` token-like chars."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
    from opentelemetry.proto.resource.v1.resource_pb2 import Resource
    from opentelemetry.proto.trace.v1 import trace_pb2

    now = time.time_ns()
    items = [trace_pb2.Span(
        trace_id=rng.getrandbits(127).to_bytes(16, "big"), span_id=(rng.getrandbits(63) | 1).to_bytes(8, "big"),
        name="documentLoad", start_time_unix_nano=now - 1_000_000_000, end_time_unix_nano=now,
        attributes=[KeyValue(key="http.url", value=AnyValue(
            string_value="https://shop.bench.example/?q=" + token_like(rng, text)))],
    ) for _ in range(spans)]
    message = ExportTraceServiceRequest(resource_spans=[trace_pb2.ResourceSpans(
        resource=Resource(attributes=[KeyValue(key="service.name", value=AnyValue(string_value="shop-web"))]),
        scope_spans=[trace_pb2.ScopeSpans(spans=items)])])
    return gzip.compress(message.SerializeToString(), compresslevel=6)


# --- the server ----------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def worker_pid(master: int) -> int | None:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == master:
                return int(entry)
    return None


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def get(port: int, path: str, timeout: float = 10) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


# --- load -----------------------------------------------------------------------------------------------------


def app_traffic(port: int, rate: float, clients: int, seconds: float) -> list[float]:
    """Open-loop GET /one/ at ``rate`` per second over ``clients`` connections; latencies in ms."""
    latencies: list[float] = []
    lock = threading.Lock()
    start = time.perf_counter() + 0.05
    end = start + seconds

    def client(index: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        due = start + index / rate
        while due < end:
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            try:
                conn.request("GET", "/one/")
                response = conn.getresponse()
                response.read()
                ok = response.status == 200
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                ok = False
            elapsed = (time.perf_counter() - due) * 1000
            with lock:
                latencies.append(elapsed if ok else float("inf"))
            due += clients / rate
        conn.close()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 60)
    return latencies


def attacker(port: int, bodies: list[bytes], threads: int, seconds: float, key: str, origin: str) -> dict[str, int]:
    """One client posting as fast as allowed; returns its answers by status."""
    statuses: dict[str, int] = {}
    lock = threading.Lock()
    end = time.monotonic() + seconds
    counter = iter(range(10**9))

    def run() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while time.monotonic() < end:
            body = bodies[next(counter) % len(bodies)]
            try:
                conn.request("POST", INGEST_PATH, body=body, headers={
                    "Content-Type": "application/x-protobuf", "Content-Encoding": "gzip",
                    "X-E2E-Ingest-Key": key, "Origin": origin})
                response = conn.getresponse()
                response.read()
                status, retry = str(response.status), response.getheader("Retry-After")
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                status, retry = "error", "1"
            with lock:
                statuses[status] = statuses.get(status, 0) + 1
            if retry:
                time.sleep(min(float(retry), max(0.0, end - time.monotonic())))
        conn.close()

    workers = [threading.Thread(target=run, daemon=True) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(seconds + 60)
    return statuses


def attacker_process(args: argparse.Namespace) -> int:
    """``--attacker PORT``: the attacking client in its own process (so its sends do not compete with
    the app client's threads for the driver's interpreter lock). JSON lines: builds its bodies, says
    ``{"ready": n}``, then answers ``{"attack": seconds}`` with the statuses; ``quit`` ends it."""
    from bench_project.settings_ingest import INGEST_KEY, INGEST_ORIGIN

    rng = random.Random(18)
    bodies = [attack_body(rng) for _ in range(args.attack_bodies)]
    print(json.dumps({"ready": len(bodies), "gzip_kib": round(len(bodies[0]) / 1024),
                      "inflated_kib": round(len(gzip.decompress(bodies[0])) / 1024)}), flush=True)
    for line in sys.stdin:
        command = json.loads(line)
        if command == "quit":
            break
        seconds = float(command["attack"])
        print(json.dumps(attacker(args.attacker, bodies, args.attack_threads, seconds, INGEST_KEY, INGEST_ORIGIN)),
              flush=True)
    return 0


def sample_worker(pid: int, stop: threading.Event, peak: list[float]) -> None:
    while not stop.wait(0.2):
        try:
            peak[0] = max(peak[0], rss_mb(pid))
        except OSError:
            return


def metric_values(port: int) -> dict[str, float]:
    status, body = get(port, "/metrics")
    values: dict[str, float] = {}
    if status != 200:
        return values
    for line in body.decode().splitlines():
        if line.startswith(("e2e_otel_export_dropped_spans_total", "e2e_otel_ingest_", "e2e_otel_derive_dropped",
                            "e2e_otel_records_dropped_total")):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


def sessions(args: argparse.Namespace) -> int:
    import pymysql

    with pymysql.connect(host=args.db_host, port=args.db_port, user="root", password="",
                         database=args.db_name) as conn, conn.cursor() as cursor:
        cursor.execute("SELECT COUNT(*) FROM debugging_workflow_session")
        return int(cursor.fetchone()[0])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


# --- driver ---------------------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    code = [args.code] if args.code else []
    env["PYTHONPATH"] = os.pathsep.join([*code, str(BENCH_DIR), str(REPO_DIR)])
    env.update(BENCH_DB_NAME=args.db_name, BENCH_DB_HOST=args.db_host, BENCH_DB_PORT=str(args.db_port),
               DJANGO_SETTINGS_MODULE="bench_project.settings_ingest", PYTHONHASHSEED="0")
    log_dir = Path(tempfile.mkdtemp(prefix="e2e-otel-ingest-bench-"))
    say = lambda *a: print(*a, file=sys.stderr, flush=True)  # noqa: E731
    say(f"logs: {log_dir}")
    from bench_project.settings_ingest import INGEST_KEY, INGEST_ORIGIN

    create_database(args)
    sidecar = server = attack_proc = None
    try:
        seed = subprocess.run([sys.executable, "-m", "bench_project.seed"], cwd=BENCH_DIR, env=env,
                              capture_output=True, text=True, check=False)
        if seed.returncode != 0:
            raise RuntimeError(f"seeding failed:\n{seed.stderr[-4000:]}")
        sidecar = Proc("sidecar", [sys.executable, "-m", "bench_project.sidecar", "--proxy-delay", "0"], env,
                       open(log_dir / "sidecar.log", "w"))  # noqa: SIM115
        env["BENCH_OTLP_ENDPOINT"] = sidecar.read()["grpc_endpoint"]
        port = free_port()
        server = subprocess.Popen(
            [str(Path(sys.executable).parent / "gunicorn"), "django.core.wsgi:get_wsgi_application()",
             "-b", f"127.0.0.1:{port}", "-w", "1", "-k", "gthread", "--threads", str(args.threads),
             "--timeout", "60", "--graceful-timeout", "5"],
            cwd=BENCH_DIR, env=env, stdout=open(log_dir / "gunicorn.log", "w"),  # noqa: SIM115
            stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 30
        while True:
            try:
                if get(port, "/one/")[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError(f"gunicorn did not come up; see {log_dir / 'gunicorn.log'}")
            time.sleep(0.2)
        worker = worker_pid(server.pid)
        if worker is None:
            raise RuntimeError("no gunicorn worker found")
        say(f"gunicorn master {server.pid}, worker {worker}; building {args.attack_bodies} attack bodies ...")
        attack_proc = Proc("attacker", [sys.executable, str(Path(__file__).resolve()), "--attacker", str(port),
                                        "--attack-bodies", str(args.attack_bodies),
                                        "--attack-threads", str(args.attack_threads)], env,
                           open(log_dir / "attacker.log", "w"))  # noqa: SIM115
        built = attack_proc.read()
        say(f"attack body: {built['gzip_kib']} KiB gzip, {built['inflated_kib']} KiB inflated, 512 spans; "
            "warming up ...")
        # every server thread opens its database connection, and one small post loads the ingestion code
        warm = threading.Thread(target=app_traffic, args=(port, args.rate * 2, args.threads, 3.0))
        warm.start()
        warm_body = gzip.compress(gzip.decompress(attack_body(random.Random(0), spans=2, text=100)))
        attacker(port, [warm_body], 1, 0.5, INGEST_KEY, INGEST_ORIGIN)
        warm.join()
        time.sleep(args.settle)
        sessions_before = sessions(args)
        results: dict[str, dict[str, list[Any]]] = {"healthy": {}, "attack": {}}
        for round_index in range(args.rounds):
            for phase in ("healthy", "attack"):
                say(f"round {round_index + 1}/{args.rounds}: {phase} for {args.seconds:.0f} s")
                stop, peak = threading.Event(), [rss_mb(worker)]
                sampler = threading.Thread(target=sample_worker, args=(worker, stop, peak), daemon=True)
                sampler.start()
                cpu_before = cpu_seconds(worker)
                attack_result: dict[str, int] = {}
                attack_thread = None
                if phase == "attack":
                    def attack(result: dict[str, int] = attack_result, proc: Proc = attack_proc) -> None:
                        result.update(proc.send({"attack": args.seconds}))

                    attack_thread = threading.Thread(target=attack, daemon=True)
                    attack_thread.start()
                latencies = app_traffic(port, args.rate, args.clients, args.seconds)
                if attack_thread is not None:
                    attack_thread.join(args.seconds + 60)
                cpu = cpu_seconds(worker) - cpu_before
                stop.set()
                sampler.join()
                entry = results[phase]
                entry.setdefault("latencies", []).extend(latencies)
                entry.setdefault("round_p50_p99", []).append(
                    [round(percentile(latencies, 0.50), 1), round(percentile(latencies, 0.99), 1)])
                entry.setdefault("cpu_cores", []).append(cpu / args.seconds)
                entry.setdefault("peak_rss_mb", []).append(peak[0])
                entry.setdefault("attacker", []).append(attack_result)
                time.sleep(args.settle)  # let queues drain so phases do not bleed into each other
        report: dict[str, Any] = {"args": vars(args), "phases": {}}
        for phase, entry in results.items():
            lat = entry["latencies"]
            failed = sum(1 for v in lat if v == float("inf"))
            answers: dict[str, int] = {}
            for item in entry["attacker"]:
                for status, count in item.items():
                    answers[status] = answers.get(status, 0) + count
            report["phases"][phase] = {
                "requests": len(lat), "failed": failed,
                "p50_ms": round(percentile(lat, 0.50), 1), "p99_ms": round(percentile(lat, 0.99), 1),
                "max_ms": round(max(lat), 1) if lat else None,
                "per_round_p50_p99_ms": entry["round_p50_p99"],
                "worker_cpu_cores": round(statistics.mean(entry["cpu_cores"]), 3),
                "worker_peak_rss_mb": round(max(entry["peak_rss_mb"]), 1),
                "attacker_answers": answers,
            }
        healthy, attack = report["phases"]["healthy"], report["phases"]["attack"]
        report["p50_ratio"] = round(attack["p50_ms"] / healthy["p50_ms"], 3)
        report["p99_ratio"] = round(attack["p99_ms"] / healthy["p99_ms"], 3)
        report["sessions_created"] = sessions(args) - sessions_before
        report["metrics"] = metric_values(port)
        return report
    finally:
        if server is not None:
            server.terminate()
            try:
                server.wait(15)
            except subprocess.TimeoutExpired:
                server.kill()
        if sidecar is not None:
            sidecar.stop("quit")
        if attack_proc is not None:
            attack_proc.stop('"quit"')
        if not args.keep_db:
            drop_database(args)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each phase")
    parser.add_argument("--rounds", type=int, default=2, help="healthy/attack pairs, alternating")
    parser.add_argument("--rate", type=float, default=20.0, help="app requests per second")
    parser.add_argument("--clients", type=int, default=4, help="app connections")
    parser.add_argument("--threads", type=int, default=4, help="gunicorn threads")
    parser.add_argument("--attack-threads", type=int, default=2, help="the attacker's connections")
    parser.add_argument("--attack-bodies", type=int, default=60, help="distinct attack bodies (cycled)")
    parser.add_argument("--settle", type=float, default=5.0, help="pause between phases")
    parser.add_argument("--code", help="directory holding the e2e_otel package to run (default: this tree)")
    parser.add_argument("--db-name", default="e2e_otel_ingest_bench")
    parser.add_argument("--db-host", default="127.0.0.1")
    parser.add_argument("--db-port", type=int, default=3306)
    parser.add_argument("--keep-db", action="store_true")
    parser.add_argument("--json", help="write the report here too")
    parser.add_argument("--attacker", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.attacker:
        return attacker_process(args)
    if args.seconds * args.rounds > 600:
        parser.error("--seconds x --rounds is capped at 600 s")
    report = run(args)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
