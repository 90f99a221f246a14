"""Record writer throughput on MariaDB: steps/s and process CPU per step, in a bounded loop.

Reported: steps/s (wall), process CPU per step and the writer thread's own CPU per step (its
thread CPU clock: the steadier figure on a shared machine). A throw-away database is created,
migrated and dropped. ``--traces`` traces of ``--steps`` steps
(a server root and database children with ordinary attributes: route, SQL, row counts) are
submitted at once, then the writer drains them; the figure is from the first submit to the end of
``force_flush``. Run it against another checkout with ``PYTHONPATH=<checkout>`` to compare.

    PYTHONPATH=$PWD python benchmarks/writer_throughput.py --traces 2000 --steps 10 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
import uuid
from typing import Any

import django
import pymysql
from django.conf import settings

SERVER = {"host": os.environ.get("E2E_MYSQL_HOST", "127.0.0.1"), "port": int(os.environ.get("E2E_MYSQL_PORT", "3306")),
          "user": os.environ.get("E2E_MYSQL_USER", "root"), "password": os.environ.get("E2E_MYSQL_PASSWORD", "")}


def _admin(sql: str) -> None:
    conn = pymysql.connect(**SERVER)
    try:
        conn.cursor().execute(sql)
    finally:
        conn.close()


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _traces(count: int, steps: int) -> list[Any]:
    from e2e_otel.spans_to_records import StepData, WorkflowHints

    now = time.time_ns()
    out = []
    for t in range(count):
        trace_id = uuid.uuid4().int
        root = f"{t * 100 + 1:016x}"
        for n in range(steps):
            start = now + n * 1_000_000
            api = n == steps - 1
            out.append(StepData(
                trace_id=trace_id, span_id=root if api else f"{t * 100 + n + 2:016x}",
                parent_span_id="" if api else root,
                name="GET /items/<int:pk>/" if api else "SELECT", layer="api" if api else "database",
                component="/items/<int:pk>/" if api else "testapp_item", operation="GET" if api else "SELECT",
                start_ns=start, end_ns=start + 800_000, status="ok", is_local_root=api, sampled=True,
                hints=WorkflowHints(route_key="GET /items/<int:pk>/") if api else WorkflowHints(),
                attributes={"http.route": "/items/<int:pk>/", "http.request.method": "GET",
                            "http.response.status_code": 200} if api else {
                    "db.system": "mysql", "db.name": "app", "server.address": "127.0.0.1",
                    "db.statement": f"SELECT `testapp_item`.`id`, `testapp_item`.`name` FROM `testapp_item` "
                                    f"WHERE `testapp_item`.`id` = %s LIMIT {n}"},
                service="bench"))
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    from e2e_otel.conf import resolve
    from e2e_otel.sanitize import Sanitizer
    from e2e_otel.store import RecordWriter

    results = []
    for _ in range(args.rounds):
        steps = _traces(args.traces, args.steps)
        writer = RecordWriter(resolve({"RECORD_QUEUE_SIZE": len(steps) + 1, "RECORD_FLUSH_INTERVAL": 0.05}, environ={}),
                              Sanitizer())
        thread = writer._thread
        assert thread is not None and thread.ident is not None
        clock = time.pthread_getcpuclockid(thread.ident)  # the writer thread's own CPU time
        try:
            cpu, thread_cpu, started = _cpu(), time.clock_gettime(clock), time.perf_counter()
            for step in steps:
                writer.submit(step)
            if not writer.force_flush(300):
                raise SystemExit("writer did not drain in 300 s")
            wall, used = time.perf_counter() - started, _cpu() - cpu
            used_thread = time.clock_gettime(clock) - thread_cpu
        finally:
            writer.shutdown(10)
        stats = writer.stats()
        written = max(1, stats["written"]["step"])
        results.append({"steps_per_s": written / wall, "cpu_us_per_step": used / written * 1e6,
                        "writer_cpu_us_per_step": used_thread / written * 1e6,
                        "written": written, "dropped": sum(stats["dropped"].values())})
    return {"rounds": results, **{f"median_{key}": sorted(r[key] for r in results)[len(results) // 2]
                                  for key in ("steps_per_s", "cpu_us_per_step", "writer_cpu_us_per_step")}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces", type=int, default=2000)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--database", default="e2e_otel_writer_bench")
    args = parser.parse_args()
    pymysql.install_as_MySQLdb()
    _admin(f"DROP DATABASE IF EXISTS `{args.database}`")
    _admin(f"CREATE DATABASE `{args.database}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
    try:
        settings.configure(
            DATABASES={"default": {"ENGINE": "django.db.backends.mysql", "NAME": args.database, "HOST": SERVER["host"],
                                   "PORT": SERVER["port"], "USER": SERVER["user"], "PASSWORD": SERVER["password"],
                                   "OPTIONS": {"charset": "utf8mb4"}}},
            INSTALLED_APPS=["e2e_otel"], USE_TZ=True, SECRET_KEY="bench",
            DEFAULT_AUTO_FIELD="django.db.models.BigAutoField", E2E_OTEL={"ENABLED": False})
        django.setup()
        from django.core.management import call_command

        call_command("migrate", "e2e_otel", verbosity=0)
        print(json.dumps(run(args)))
    finally:
        from django.db import connections

        connections.close_all()
        _admin(f"DROP DATABASE IF EXISTS `{args.database}`")
    return 0


if __name__ == "__main__":
    sys.exit(main())
