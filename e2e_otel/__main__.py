"""The ``e2e-otel`` command line (console script and ``python -m e2e_otel``).

``e2e-otel demo`` migrates, seeds thresholds and demo data, serves the demo shop on 127.0.0.1, drives
the four seed workflows through it over real HTTP and prints what e2e-otel recorded.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="e2e-otel", description="e2e-otel command line tools.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = commands.add_parser(
        "demo", help="run the demo shop with traffic and print what e2e-otel recorded",
        description="Migrate, seed, serve the demo shop, drive the login / product fetch / cart update / "
                    "checkout workflows through it and print a summary. SQLite by default; set "
                    "DATABASE_URL=mysql://user:pass@host:port/db[?charset=..&ssl_ca=..&ssl_cert=..&ssl_key=..] "
                    "for MySQL. The database must be empty or one the demo created before (see --reset). "
                    "Traces are exported only when OTEL_EXPORTER_OTLP_ENDPOINT or E2E_OTEL_OTLP_ENDPOINT is set. "
                    "Exit status: 0 done, 1 error, 130 after Ctrl-C, 143 after SIGTERM.",
    )
    demo.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    demo.add_argument("--port", type=int, default=None,
                      help="port (default 8000, or a free one when 8000 is taken; 0 picks a free one)")
    demo.add_argument("--workflows", type=int, default=40, metavar="N",
                      help="workflows to drive before the summary (default 40; 0 = none)")
    demo.add_argument("--no-serve", action="store_true", help="exit after the summary instead of serving")
    demo.add_argument("--db", metavar="PATH",
                      help="SQLite file to use and keep (default: a new file for this run under "
                           "~/.cache/e2e-otel/demo-runs/, deleted when the run ends); one demo at a time per "
                           "file; ignored when DATABASE_URL is set")
    demo.add_argument("--faults", default=os.environ.get("E2E_DEMO_FAULTS", "all"), metavar="SPEC",
                      help="all | none | comma list of n_plus_one, slow_checkout[=rate], "
                           "payment_failure[=rate], invalid_payload (default all)")
    demo.add_argument("--reset", action="store_true",
                      help="use a database that is not empty and was not created by the demo anyway: migrate "
                           "into it, mark it as the demo's and (re)create the e2e-demo-* users; other users "
                           "and rows are left alone")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "demo":
        return run_demo(args)
    parser.print_help()
    return 2


def _configure_environment(args: argparse.Namespace) -> Path | None:
    """Settings of the demo come from the environment; fill it before ``django.setup()``.

    Returns the per-run SQLite file when neither ``--db`` nor ``DATABASE_URL`` names a database.
    """
    from .demo.isolation import per_run_sqlite_path
    from .demo.shop.faults import parse_faults

    try:
        parse_faults(args.faults)
    except ValueError as exc:
        raise SystemExit(f"e2e-otel demo: --faults: {exc}") from None
    if args.workflows < 0:
        raise SystemExit("e2e-otel demo: --workflows must be >= 0")
    # The demo always uses its own settings, even inside a shell set up for another project.
    os.environ["DJANGO_SETTINGS_MODULE"] = "e2e_otel.demo.settings"
    os.environ["E2E_DEMO_FAULTS"] = args.faults
    os.environ["E2E_DEMO_HOST"] = args.host
    database_url = os.environ.get("DATABASE_URL", "").strip()
    if database_url:
        from django.core.exceptions import ImproperlyConfigured

        from .demo.databases import database_from_url

        try:
            database_from_url(database_url)
        except ImproperlyConfigured as exc:
            raise SystemExit(f"e2e-otel demo: {exc}") from None
        return None
    if args.db:
        os.environ["E2E_DEMO_DB"] = str(Path(args.db).expanduser().resolve())
        return None
    # Its own file, so that a second demo never re-seeds or flushes a running one's database.
    per_run = per_run_sqlite_path()
    os.environ["E2E_DEMO_DB"] = str(per_run)
    return per_run


class _Terminated(KeyboardInterrupt):
    """SIGTERM, unwound like Ctrl-C but exiting 143."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise _Terminated


def _ignore_signals() -> None:
    """Shutdown runs once: a second Ctrl-C/SIGTERM must not interrupt it with a traceback."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


EXIT_SIGINT = 128 + signal.SIGINT
EXIT_SIGTERM = 128 + signal.SIGTERM


def run_demo(args: argparse.Namespace) -> int:
    per_run_db = _configure_environment(args)
    import django

    django.setup()

    from django.conf import settings
    from django.db import DatabaseError, connection

    from .demo.isolation import DatabaseInUse, lock_database, remove_sqlite_files, remove_stale_runs

    out = sys.stdout
    db = settings.DATABASES["default"]
    database = (f"MySQL {db['NAME']} on {db['HOST']}:{db['PORT']}" if connection.vendor == "mysql"
                else f"SQLite {db['NAME']}")
    if per_run_db is not None:
        remove_stale_runs(per_run_db.parent)  # files of killed runs: nobody holds their lock
    print(f"e2e-otel demo: preparing {database}"
          + (" (new for this run, deleted when it ends; --db PATH keeps one)" if per_run_db else ""),
          file=out, flush=True)
    try:
        connection.ensure_connection()
        lock = lock_database(connection)
    except DatabaseError as exc:
        print(f"e2e-otel demo: cannot open {database}: {exc}", file=sys.stderr)
        return 1
    except DatabaseInUse as exc:
        print(f"e2e-otel demo: {exc}", file=sys.stderr)
        return 1
    try:
        return _run_locked(args, database)
    finally:
        lock.release()
        if per_run_db is not None:
            from django.db import connections

            connections.close_all()
            remove_sqlite_files(per_run_db)


def _run_locked(args: argparse.Namespace, database: str) -> int:
    """The demo itself, once this process holds the database (see ``demo/isolation.py``)."""
    from django.core.management import call_command, get_commands
    from django.utils import timezone
    from opentelemetry.instrumentation.utils import suppress_instrumentation

    from .bootstrap import get_runtime
    from .conf import get_config
    from .demo.seed import ForeignDatabase, check_database_is_demo, seed
    from .demo.server import bind_server
    from .demo.shop.faults import get_faults
    from .demo.summary import Links, build_summary, scrape_metrics, wait_for_sessions
    from .demo.traffic import ProgressBar, TrafficDriver

    out = sys.stdout
    try:
        # Bound before the database is touched: a port taken by someone else changes nothing there.
        server, port_note = bind_server(args.host, args.port)
    except OSError as exc:
        print(f"e2e-otel demo: cannot listen on {args.host}:{args.port}: {exc} (try --port 0)", file=sys.stderr)
        return 1
    try:
        check_database_is_demo(reset=args.reset)
    except ForeignDatabase as exc:
        server.httpd.server_close()
        print(f"e2e-otel demo: refusing {database}: {exc}", file=sys.stderr)
        return 1
    # Setup SQL is not part of any workflow: keep it out of the traces and records.
    with suppress_instrumentation():
        call_command("migrate", interactive=False, verbosity=0)
        if "setup_debugging_defaults" in get_commands():
            call_command("setup_debugging_defaults", verbosity=0)
        else:
            print("  note: setup_debugging_defaults is not available; built-in threshold defaults apply",
                  file=out)
        seeded = seed(customer_password=os.environ.get("E2E_DEMO_CUSTOMER_PASSWORD") or None)
    config = get_config()

    server.start()
    exit_code = 0
    signal.signal(signal.SIGTERM, _raise_terminated)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started with SIGINT ignored
    print(f"Demo shop listening on {server.url}  (faults: {', '.join(get_faults().enabled) or 'none'})",
          file=out, flush=True)
    if port_note:
        print(f"  note: {port_note}", file=out, flush=True)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"  warning: listening on {args.host}, not only this machine: anyone who can reach it can use "
              "the shop and log in with the credentials printed below", file=out, flush=True)
    try:
        runs = []
        started = timezone.now()
        began = time.perf_counter()
        if args.workflows:
            driver = TrafficDriver(
                server.url, ingest_key=config.INGEST_KEY, customers=seeded.customers,
                password=seeded.customer_password, product_ids=seeded.product_ids,
                category_slugs=seeded.category_slugs, invalid_payload=get_faults().invalid_payload,
            )
            print(f"Driving {args.workflows} workflows (login, product_fetch, cart_update, checkout) ...",
                  file=out, flush=True)
            runs = driver.run(args.workflows, ProgressBar(args.workflows))
            wait_for_sessions([r.correlation_id for r in runs])
        elapsed = time.perf_counter() - began
        runtime = get_runtime()
        links = Links(
            base_url=server.url, api_key=config.API_KEY, admin_username=seeded.admin_username,
            admin_password=seeded.admin_password, customers=seeded.customers,
            customer_password=seeded.customer_password, database=database,
            otlp_endpoint=(config.OTLP_ENDPOINT or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"))
            if runtime is not None and runtime.exporter is not None else None,
        )
        metrics_text = scrape_metrics(server.url, config.METRICS_KEY)
        print(build_summary(runs, started=started, elapsed=elapsed, links=links, metrics_text=metrics_text),
              file=out, flush=True)
        if not args.no_serve:
            print(f"Serving on {server.url} until Ctrl-C ...", file=out, flush=True)
            while True:
                time.sleep(3600)
    except KeyboardInterrupt as exc:
        _ignore_signals()
        exit_code = EXIT_SIGTERM if isinstance(exc, _Terminated) else EXIT_SIGINT
        print("\nStopping.", file=out, flush=True)
    finally:
        _ignore_signals()
        server.stop()
        runtime = get_runtime()
        if runtime is not None:
            runtime.shutdown()
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
