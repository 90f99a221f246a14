"""One long-lived benchmark worker: one configuration, driven by ``overhead.py`` over a pipe.

Run as ``python -m bench_project.worker CONFIG`` from ``benchmarks/``. The process builds Django's
WSGI handler once and then calls it in-process for every measured request (no sockets, no HTTP
parsing, no test-client bookkeeping), timing each call with ``time.perf_counter_ns``. Tracing
globals (tracer provider, instrumentors, e2e-otel runtime) are per process, which is why each
configuration gets its own worker.

Protocol: one JSON object per line on stdin, one JSON answer per line on the original stdout
(anything else the process prints goes to stderr). Runs on the worker's main thread only.
"""

from __future__ import annotations

import contextlib
import cProfile
import gc
import io
import json
import os
import pstats
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

SETTINGS = {
    "plain": "bench_project.settings_plain",
    "otel": "bench_project.settings_otel",
    "otel_twin": "bench_project.settings_otel",  # a second, identical B: the noise floor between processes
    "e2e": "bench_project.settings_e2e",
    "e2e_stalled": "bench_project.settings_e2e_stalled",
    "e2e_bare": "bench_project.settings_e2e_bare",
    "e2e_norecords": "bench_project.settings_e2e_norecords",
    "e2e_patched": "bench_project.settings_e2e_patched",
}
#: Configurations whose record writer is healthy: their batches wait for it to drain, so the
#: writer's CPU is charged to the batch that caused it.
FLUSH_RECORDS = ("e2e", "e2e_patched")
DERIVE_PREFIX = "derive: "  # hook labels of work done on e2e-otel's derive thread, not the request thread

PATHS = {"one": "/one/", "heavy": "/heavy/"}


def _environ(path: str) -> dict[str, Any]:
    """A WSGI environ like the one gunicorn builds for ``GET path`` from a browser on loopback."""
    return {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "REMOTE_PORT": "50000",
        "HTTP_HOST": "127.0.0.1:8000",
        "HTTP_USER_AGENT": "Mozilla/5.0 (X11; Linux x86_64) bench",
        "HTTP_ACCEPT": "application/json",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }


class Worker:
    """Owns the WSGI application and the tracing objects of one configuration (main thread)."""

    def __init__(self, config: str) -> None:
        if config not in SETTINGS:
            raise ValueError(f"unknown configuration {config!r}; expected one of {sorted(SETTINGS)}")
        self.config = config
        os.environ["DJANGO_SETTINGS_MODULE"] = SETTINGS[config]
        self.stock_provider = None
        if config in ("otel", "otel_twin"):
            from bench_project import stock_otel
            from bench_project.settings_base import OTLP_ENDPOINT

            self.stock_provider = stock_otel.install(OTLP_ENDPOINT)
        from django.core.wsgi import get_wsgi_application

        self.application = get_wsgi_application()  # runs django.setup(): e2e-otel installs here
        self.environs = {view: _environ(path) for view, path in PATHS.items()}

    # --- helpers ---------------------------------------------------------------------------

    @property
    def runtime(self) -> Any:
        if not self.config.startswith("e2e"):
            return None
        from e2e_otel.bootstrap import get_runtime

        return get_runtime()

    def _call(self, view: str) -> tuple[int, int]:
        """One request through the full WSGI handler: (wall ns, CPU ns of this thread).

        The thread CPU time is the request path's own cost, immune to other processes taking the
        core; the wall time adds waits for MariaDB, the GIL (background threads) and the scheduler.
        """
        environ = dict(self.environs[view])
        environ["wsgi.input"] = io.BytesIO(b"")
        status: list[str] = []
        cpu_start = time.thread_time_ns()
        start = time.perf_counter_ns()
        result: Iterable[bytes] = self.application(environ, lambda s, h, e=None: status.append(s))
        try:
            for _chunk in result:
                pass
        finally:
            close: Callable[[], None] | None = getattr(result, "close", None)
            if close is not None:
                close()  # request_finished: Django's own end-of-request work is part of the cost
        elapsed = time.perf_counter_ns() - start
        cpu = time.thread_time_ns() - cpu_start
        if not status or not status[0].startswith("200"):
            raise RuntimeError(f"{self.config}: GET {PATHS[view]} answered {status!r}")
        return elapsed, cpu

    def _flush_export(self, timeout_s: float = 10.0) -> None:
        """Push the SDK's span batch out so one batch's export work doesn't spill into the next."""
        if self.stock_provider is not None:
            self.stock_provider.force_flush(int(timeout_s * 1000))
        runtime = self.runtime
        if runtime is not None and runtime.export_processor is not None:
            runtime.export_processor.force_flush(int(timeout_s * 1000))

    def _flush_derived(self, timeout_s: float) -> bool:
        """Let e2e-otel's derive thread handle the batch's spans (records, metrics, findings). It
        stands back while requests are in flight, so without this its work for one batch would run
        while the driver measures the next configuration, uncounted here and slowing that one."""
        runtime = self.runtime
        queue = getattr(getattr(runtime, "derived", None), "queue", None)
        return True if queue is None else bool(queue.flush(timeout_s))

    def flush(self, timeout_s: float) -> None:
        """Everything the requests so far caused: span export, derived views, and (for the
        configurations whose record database is healthy) the written records."""
        self._flush_export()
        self._flush_derived(timeout_s)
        if self.config in FLUSH_RECORDS:
            self._flush_records(timeout_s)

    def _flush_records(self, timeout_s: float) -> bool:
        from bench_project import records

        return records.flush(self.runtime, timeout_s)

    # --- operations ------------------------------------------------------------------------

    def op_check(self, view: str) -> dict[str, Any]:
        """Run the view once and count its SQL queries (the driver checks them against QUERIES)."""
        from django.db import connection
        from django.test.utils import CaptureQueriesContext

        with CaptureQueriesContext(connection) as queries:
            self._call(view)
        return {"queries": len(queries.captured_queries)}

    def op_batch(self, view: str, n: int) -> dict[str, Any]:
        """``n`` timed requests, then the flushes; process CPU covers both, on all threads, so the
        export, derive and record-writing work the batch caused is charged to it."""
        latencies, thread_cpu = [], []
        threads0 = thread_cpu_ns()
        cpu0 = time.process_time_ns()
        wall0 = time.perf_counter_ns()
        for _ in range(n):
            wall, cpu = self._call(view)
            latencies.append(wall)
            thread_cpu.append(cpu)
        wall = time.perf_counter_ns() - wall0
        self.flush(30.0)
        cpu = time.process_time_ns() - cpu0
        threads1 = thread_cpu_ns()
        by_thread = {name: ns - threads0.get(name, 0) for name, ns in threads1.items()}
        return {"lat_ns": latencies, "thread_cpu_ns": thread_cpu, "wall_ns": wall, "cpu_ns": cpu,
                "cpu_by_thread_ns": {k: v for k, v in by_thread.items() if v > 0}}

    def op_warmup(self, view: str, n: int) -> dict[str, Any]:
        for _ in range(n):
            self._call(view)
        self.flush(30.0)
        gc.collect()
        return {"ok": True}

    def op_stats(self) -> dict[str, Any]:
        from bench_project import records

        return {"records": records.stats(self.runtime), "pid": os.getpid()}

    def op_profile(self, view: str, n: int, top: int = 30) -> dict[str, Any]:
        """cProfile ``n`` requests; top functions by own time and e2e-otel's share of the total."""
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(n):
            self._call(view)
        profiler.disable()
        self._flush_export()
        stats = pstats.Stats(profiler)
        total = stats.total_tt  # type: ignore[attr-defined]
        rows = []
        for (filename, line, func), (_cc, calls, tottime, cumtime, _callers) in stats.stats.items():  # type: ignore[attr-defined]
            rows.append({"where": f"{_short(filename)}:{line}:{func}", "calls": calls,
                         "tottime_us_per_req": tottime / n * 1e6, "cumtime_us_per_req": cumtime / n * 1e6})
        by_own = sorted(rows, key=lambda r: r["tottime_us_per_req"], reverse=True)[:top]
        ours = [r for r in rows if "e2e_otel/" in r["where"]]
        ours_by_cum = sorted(ours, key=lambda r: r["cumtime_us_per_req"], reverse=True)[:top]
        areas: dict[str, float] = {}
        for row in rows:
            area = _area(row["where"])
            areas[area] = areas.get(area, 0.0) + row["tottime_us_per_req"]
        return {"total_us_per_req": total / n * 1e6, "top_own": by_own, "e2e_otel_by_cum": ours_by_cum,
                "own_time_by_area_us_per_req": dict(sorted(areas.items(), key=lambda kv: -kv[1]))}

    def op_profile_writer(self, traces: int, steps_per_trace: int) -> dict[str, Any]:
        from bench_project import records

        return records.profile_writer(self.runtime, traces=traces, steps_per_trace=steps_per_trace)

    def _hooks(self) -> list[tuple[str, Any, str]]:
        """(label, object, method) of every tracing hook: those on the request thread (the provider's
        processors, sampler and id generator), then, labelled ``derive:``, the derived processors'
        ``on_end``, which e2e-otel runs on its derive thread."""
        hooks: list[tuple[str, Any, str]] = []
        if self.stock_provider is not None:
            from bench_project import stock_otel

            provider, processors, derived = self.stock_provider, [stock_otel.processor], []
        elif self.runtime is not None:
            runtime = self.runtime
            provider = runtime.provider
            processors, derived = [runtime.derived, runtime.export_processor], list(runtime.derived.processors)
        else:
            return hooks
        for processor in processors:
            if processor is not None:
                hooks += [(f"{type(processor).__name__}.{m}", processor, m) for m in ("on_start", "on_end")]
        hooks.append((f"sampler {type(provider.sampler).__name__}.should_sample", provider.sampler, "should_sample"))
        for method in ("generate_trace_id", "generate_span_id"):
            hooks.append((f"ids {type(provider.id_generator).__name__}.{method}", provider.id_generator, method))
        hooks += [(f"{DERIVE_PREFIX}{type(p).__name__}.on_end", p, "on_end") for p in derived]
        return hooks

    def op_hook_costs(self, view: str, n: int) -> dict[str, Any]:
        """Time every tracing hook on the request thread for ``n`` requests: thread CPU time
        (``thread_time_ns``, so waits for the GIL are not counted) around each call, through
        instance-level wrappers removed afterwards. Returns us per request per hook."""
        totals: dict[str, int] = {}
        calls: dict[str, int] = {}
        hooks = self._hooks()

        def wrap(label: str, func: Callable[..., Any]) -> Callable[..., Any]:
            def timed(*args: Any, **kwargs: Any) -> Any:
                start = time.thread_time_ns()
                try:
                    return func(*args, **kwargs)
                finally:
                    totals[label] = totals.get(label, 0) + time.thread_time_ns() - start
                    calls[label] = calls.get(label, 0) + 1
            return timed

        for label, obj, method in hooks:
            setattr(obj, method, wrap(label, getattr(obj, method)))
        try:
            request_ns = 0
            for _ in range(n):
                request_ns += self._call(view)[1]
            self._flush_derived(30.0)  # the derive thread still calls the wrapped on_end
        finally:
            for _label, obj, method in hooks:
                with contextlib.suppress(AttributeError):
                    delattr(obj, method)
        self.flush(30.0)
        return {"request_us": request_ns / n / 1000,
                "hooks_us_per_request": {k: v / n / 1000 for k, v in sorted(totals.items(), key=lambda kv: -kv[1])},
                "calls_per_request": {k: v / n for k, v in calls.items()}}

    def op_writer_load(self, rate: float, seconds: float, steps_per_trace: int) -> dict[str, Any]:
        from bench_project import records

        return records.offer_load(self.runtime, rate=rate, seconds=seconds, steps_per_trace=steps_per_trace)


def _thread_group(name: str) -> str:
    """Stable names for per-thread CPU accounting (numbered pool threads folded together)."""
    if name == "MainThread":
        return "request thread"
    return name.rstrip("0123456789-_ ") or name


def thread_cpu_ns() -> dict[str, int]:
    """CPU time so far of every live thread of this process (``/proc/self/task/*/schedstat``, ns),
    summed per thread name; gRPC's C threads are named by their ``comm``."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    totals: dict[str, int] = {}
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return totals
    for tid in tids:
        try:
            with open(f"/proc/self/task/{tid}/schedstat") as f:
                ns = int(f.read().split()[0])
            name = names.get(int(tid))
            if name is None:
                with open(f"/proc/self/task/{tid}/comm") as f:
                    name = f.read().strip()
        except (OSError, ValueError, IndexError):
            continue
        group = _thread_group(name)
        totals[group] = totals.get(group, 0) + ns
    return totals


def _short(filename: str) -> str:
    for marker in ("site-packages/", "/work/main/"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename


def _area(where: str) -> str:
    if where.startswith("e2e_otel/"):
        return "e2e_otel/" + where.split("/")[1].split(":")[0]
    if where.startswith("opentelemetry/"):
        parts = where.split("/")
        return "/".join(parts[:3]) if parts[1] == "instrumentation" else "/".join(parts[:2])
    if where.startswith("django/"):
        return "/".join(where.split("/")[:2])
    if where.startswith(("pymysql/", "MySQLdb")):
        return "pymysql"
    if where.startswith(("~", "<")):
        return "builtins"
    return where.split("/")[0].split(":")[0]


def main() -> None:
    config = sys.argv[1]
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # stray prints must not corrupt the protocol stream
    sys.stdout = sys.stderr
    try:
        worker = Worker(config)
    except Exception as exc:
        out.write(json.dumps({"error": f"{type(exc).__name__}: {exc}"}) + "\n")
        raise
    out.write(json.dumps({"ready": config, "pid": os.getpid()}) + "\n")
    for line in sys.stdin:
        message = json.loads(line)
        op = message.pop("op")
        if op == "quit":
            runtime = worker.runtime
            if runtime is not None:
                runtime.shutdown(2.0)
            out.write(json.dumps({"bye": config}) + "\n")
            return
        try:
            answer = getattr(worker, f"op_{op}")(**message)
        except Exception as exc:
            import traceback

            traceback.print_exc()
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        out.write(json.dumps(answer) + "\n")


if __name__ == "__main__":
    main()
