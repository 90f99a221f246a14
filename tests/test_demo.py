"""``e2e-otel demo`` end to end on SQLite: the CLI in a subprocess, its output and its records.

Also unit tests of the demo's own pieces (faults schedule, DATABASE_URL parsing, summary parsing).
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Self

import pytest
from django.core.exceptions import ImproperlyConfigured

from e2e_otel.demo.databases import database_from_url
from e2e_otel.demo.shop.faults import RateSchedule, parse_faults
from e2e_otel.demo.summary import parse_prometheus_text
from e2e_otel.demo.traffic import WORKFLOW_TYPES, otlp_payload

REPO = Path(__file__).resolve().parent.parent


def demo_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OTEL_", "E2E_OTEL_", "E2E_DEMO_", "DJANGO_")) and k != "DATABASE_URL"}
    env.update(PYTHONUNBUFFERED="1", XDG_CACHE_HOME=str(tmp_path / "cache"), HOME=str(tmp_path))
    return env


# --- the command, for real -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    tmp = tmp_path_factory.mktemp("demo")
    db = tmp / "demo.sqlite3"
    result = subprocess.run(
        [sys.executable, "-m", "e2e_otel", "demo", "--workflows", "12", "--no-serve", "--port", "0",
         "--db", str(db)],
        check=False, cwd=tmp, env=demo_env(tmp), capture_output=True, text=True, timeout=120,
    )
    return result, db


@pytest.mark.slow
def test_demo_exits_zero_and_prints_every_workflow_type(demo_run) -> None:  # type: ignore[no-untyped-def]
    result, _ = demo_run
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "Demo shop listening on http://127.0.0.1:" in out
    table = out.split("Workflows by type and status", 1)[1].split("Slowest steps per layer", 1)[0]
    rows = {line.split()[0]: line.split()[1:] for line in table.splitlines()[3:] if line.strip()}
    assert set(WORKFLOW_TYPES) <= set(rows), table
    completed, failed, in_progress = (int(x) for x in rows["checkout"][:3])
    assert failed >= 1 and completed >= 1 and in_progress == 0, table
    for wtype in ("login", "product_fetch", "cart_update"):
        assert int(rows[wtype][0]) == 3 and int(rows[wtype][1]) == 0, table
    assert "12 WorkflowSession rows for 12 workflows" in out


@pytest.mark.slow
def test_demo_summary_shows_error_group_breach_and_links(demo_run) -> None:  # type: ignore[no-untyped-def]
    result, _ = demo_run
    out = result.stdout
    errors = out.split("Grouped errors", 1)[1].split("Where to look next", 1)[0]
    match = re.search(r"PaymentDeclined x(\d+) \((\d+) workflow\(s\) of this run\)\s+\[external:", errors)
    assert match and int(match.group(1)) == int(match.group(2)) >= 1, errors
    ids = re.findall(r"correlation ids: (.*)", errors)
    assert ids and re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
                                ids[0].split(",")[0].strip()), errors
    breaches = out.split("Threshold breaches", 1)[1].split("Query findings", 1)[0]
    assert re.search(r'\{layer="api",metric="response_time",severity="(warning|critical)"\} [1-9]', breaches), breaches
    findings = out.split("Query findings", 1)[1].split("Grouped errors", 1)[0]
    assert re.search(r"n_plus_one on shop_category in api/shop/products/: [1-9]", findings), findings
    assert "/admin/" in out and "/metrics" in out and "/api/v1/debugging/" in out
    assert "http://localhost:16686" in out and "Traces stayed local" in out


@pytest.mark.slow
def test_demo_records_agree_with_the_summary(demo_run) -> None:  # type: ignore[no-untyped-def]
    result, db = demo_run
    assert result.returncode == 0
    with sqlite3.connect(db) as conn:
        by_type = dict(conn.execute(
            "SELECT workflow_type, COUNT(*) FROM debugging_workflow_session GROUP BY workflow_type").fetchall())
        failed = conn.execute("SELECT correlation_id FROM debugging_workflow_session "
                              "WHERE workflow_type='checkout' AND status='failed'").fetchall()
        layers = {row[0] for row in conn.execute("SELECT DISTINCT layer FROM debugging_trace_step")}
        error = conn.execute("SELECT error_type, occurrences FROM debugging_error_log "
                             "WHERE error_type LIKE '%PaymentDeclined'").fetchone()
        slow_ok = conn.execute(
            "SELECT MAX(s.duration_ms) FROM debugging_trace_step s JOIN debugging_workflow_session w "
            "ON s.workflow_session_id = w.id WHERE w.workflow_type = 'checkout' AND w.status = 'completed' "
            "AND s.layer = 'api'").fetchone()[0]
        orders = conn.execute("SELECT COUNT(*) FROM shop_order").fetchone()[0]
        stock_sold = conn.execute("SELECT SUM(quantity) FROM shop_orderitem").fetchone()[0] or 0
        stock_left = conn.execute("SELECT SUM(stock) FROM shop_product").fetchone()[0]
    # Exactly the driven workflows: the ingestion POSTs and the /metrics scrape are not workflows.
    assert by_type == {t: 3 for t in WORKFLOW_TYPES}
    assert failed and error is not None and error[1] == len(failed)
    assert {"frontend", "api", "database", "external", "internal"} <= layers
    assert slow_ok >= 600  # the slow-checkout fault hit a checkout that went on to succeed
    assert orders == 3 - len(failed)  # a declined payment rolls the order back ...
    assert stock_left == 24 * 100_000 - stock_sold  # ... and its stock reservation


@pytest.mark.slow
def test_demo_exports_to_otlp_only_when_an_endpoint_is_set(tmp_path: Path, otlp_receiver) -> None:  # type: ignore[no-untyped-def]
    env = demo_env(tmp_path)
    env["E2E_OTEL_OTLP_ENDPOINT"] = otlp_receiver.grpc_endpoint
    result = subprocess.run(
        [sys.executable, "-m", "e2e_otel", "demo", "--workflows", "4", "--no-serve", "--port", "0",
         "--db", str(tmp_path / "otlp.sqlite3")],
        check=False, env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"Traces exported over OTLP to {otlp_receiver.grpc_endpoint}" in result.stdout
    # The process flushed on exit: each workflow's browser and server spans arrived as one trace.
    roots = [s for s in otlp_receiver.spans if s.is_root and s.name in (
        "submit login form", "open catalogue", "click add to cart", "click checkout")]
    assert len(roots) == 4
    for root in roots:
        kinds = {s.kind_name for s in otlp_receiver.spans_for_trace(root.trace_id)}
        assert {"SPAN_KIND_SERVER", "SPAN_KIND_CLIENT"} <= kinds
    statements = [s.attributes["db.statement"] for s in otlp_receiver.spans if "db.statement" in s.attributes]
    assert statements and not any("do_not_honor" in text or "alice" in text for text in statements)


@pytest.mark.slow
def test_demo_refuses_bad_options(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "e2e_otel", "demo", "--faults", "gremlins", "--no-serve"],
                            check=False, env=demo_env(tmp_path), capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "unknown fault 'gremlins'" in result.stderr


# --- pieces ---------------------------------------------------------------------------------------------


def test_rate_schedule_is_deterministic_and_early() -> None:
    schedule = RateSchedule(0.25)
    fired = [n for n in range(1, 13) if schedule.fire()]
    assert fired == [2, 6, 10]
    slow = RateSchedule(0.34, phase=0.0)
    assert [n for n in range(1, 13) if slow.fire()] == [3, 6, 9, 12]
    always = RateSchedule(1.0)
    assert all(always.fire() for _ in range(5))
    never = RateSchedule(0.0)
    assert not any(never.fire() for _ in range(5))
    with pytest.raises(ValueError):
        RateSchedule(1.5)


def test_parse_faults() -> None:
    faults = parse_faults("n_plus_one,payment_failure=0.5")
    assert faults.n_plus_one and not faults.invalid_payload and faults.slow_checkout is None
    assert faults.payment_failure is not None and faults.payment_failure.rate == 0.5
    assert parse_faults("none").enabled == ()
    assert len(parse_faults("all").enabled) == 4
    with pytest.raises(ValueError, match="takes no rate"):
        parse_faults("n_plus_one=0.3")


def test_database_url() -> None:
    db = database_from_url("mysql://shop:p%40ss@db.example:3307/shop_demo")
    assert (db["ENGINE"], db["NAME"], db["USER"], db["PASSWORD"], db["HOST"], db["PORT"]) == (
        "django.db.backends.mysql", "shop_demo", "shop", "p@ss", "db.example", "3307")
    with pytest.raises(ImproperlyConfigured):
        database_from_url("postgres://x@y/z")
    with pytest.raises(ImproperlyConfigured):
        database_from_url("mysql://root@localhost/")


def test_prometheus_text_parsing() -> None:
    text = ('# HELP x\ne2e_otel_threshold_breaches_total{layer="api",metric="response_time",severity="warning"} 3.0\n'
            'e2e_otel_build_info{version="0.1.0"} 1\n')
    samples = parse_prometheus_text(text)
    assert samples[0] == ("e2e_otel_threshold_breaches_total",
                          {"layer": "api", "metric": "response_time", "severity": "warning"}, 3.0)


def test_frontend_payload_is_valid_otlp_json() -> None:
    from e2e_otel.demo.traffic import _Span
    from e2e_otel.otlp_decode import decode_json, to_readable_spans

    root = _Span("0af7651916cd43dd8448eb211c80319c", "click checkout", None, 1, "cart page")
    child = _Span(root.trace_id, "HTTP POST", root.span_id, 3, "cart page", {"http.request.method": "POST"})
    child.end()
    root.end()
    root.error = "POST /api/shop/checkout/ answered 502"
    request = decode_json(json.dumps(otlp_payload([root, child])).encode())
    names = {s.name: s for s in to_readable_spans(request).spans}
    assert set(names) == {"click checkout", "HTTP POST"}
    assert names["HTTP POST"].parent.span_id == int(root.span_id, 16)
    assert names["click checkout"].attributes["e2e.layer"] == "frontend"
    assert not names["click checkout"].status.is_ok


# --- review fixes: foreign databases, hosts, DATABASE_URL options, declined payments, signals ---------

DEMO_CMD = [sys.executable, "-m", "e2e_otel", "demo", "--port", "0"]


def _make_foreign_sqlite(tmp_path: Path, db: Path) -> None:
    """A database the demo did not create: the demo's schema, an ``admin`` superuser, no marker."""
    env = demo_env(tmp_path)
    env.update(DJANGO_SETTINGS_MODULE="e2e_otel.demo.settings", E2E_DEMO_DB=str(db))
    code = ("import django; django.setup()\n"
            "from django.core.management import call_command\n"
            "from django.contrib.auth import get_user_model\n"
            "call_command('migrate', interactive=False, verbosity=0)\n"
            "get_user_model().objects.create_superuser('admin', 'ops@example.com', 'their-own-password')\n")
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=tmp_path, timeout=120)


def _user(db: Path, username: str) -> tuple[str, int] | None:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT password, is_superuser FROM auth_user WHERE username = ?", (username,)).fetchone()


@pytest.mark.slow
def test_demo_refuses_a_foreign_database_and_never_touches_its_users(tmp_path: Path) -> None:
    db = tmp_path / "project.sqlite3"
    _make_foreign_sqlite(tmp_path, db)
    before = _user(db, "admin")
    assert before is not None and before[1] == 1

    refused = subprocess.run([*DEMO_CMD, "--workflows", "0", "--no-serve", "--db", str(db)], check=False,
                             env=demo_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert refused.returncode == 1, refused.stderr[-2000:]
    assert "not created by e2e-otel demo" in refused.stderr and "--reset" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert _user(db, "admin") == before and _user(db, "e2e-demo-admin") is None

    taken = subprocess.run([*DEMO_CMD, "--workflows", "0", "--no-serve", "--db", str(db), "--reset"], check=False,
                           env=demo_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert taken.returncode == 0, taken.stderr[-2000:]
    assert _user(db, "admin") == before  # same hash, still a superuser: the demo uses its own names
    demo_admin = _user(db, "e2e-demo-admin")
    assert demo_admin is not None and demo_admin[1] == 1
    assert "e2e-demo-admin" in taken.stdout
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM debugging_configuration WHERE name = 'e2e_demo'").fetchone()[0] == 1
        alice = conn.execute("SELECT id FROM auth_user WHERE username = 'e2e-demo-alice'").fetchone()[0]
        conn.execute("INSERT INTO authtoken_token (key, created, user_id) "
                     "VALUES ('stale0token0of0an0earlier0run0000000000', '2026-01-01 00:00:00', ?)", (alice,))

    # Now marked as the demo's: accepted without --reset, and the earlier run's token is gone.
    again = subprocess.run([*DEMO_CMD, "--workflows", "0", "--no-serve", "--db", str(db)], check=False,
                           env=demo_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr[-2000:]
    assert _user(db, "admin") == before
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM authtoken_token WHERE key LIKE 'stale0%'").fetchone()[0] == 0


def test_wildcard_listen_address_allows_every_host(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import importlib

    import e2e_otel.demo.settings as demo_settings

    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("E2E_DEMO_DB", str(tmp_path / "hosts.sqlite3"))
    resolved = {}
    for host in ("0.0.0.0", "::", "127.0.0.1", "10.1.2.3", "::1"):
        monkeypatch.setenv("E2E_DEMO_HOST", host)
        # a reload re-runs the module (runpy cannot: pytest's assertion rewriter loads the package)
        resolved[host] = importlib.reload(demo_settings).ALLOWED_HOSTS
    assert resolved["0.0.0.0"] == ["*"] and resolved["::"] == ["*"]
    assert "*" not in resolved["127.0.0.1"] and "localhost" in resolved["127.0.0.1"]
    assert "10.1.2.3" in resolved["10.1.2.3"] and "*" not in resolved["10.1.2.3"]
    assert "[::1]" in resolved["::1"]


def test_database_url_options_and_errors() -> None:
    db = database_from_url("mysql://u:p@h:3306/db?charset=latin1&ssl_ca=/etc/ca.pem&ssl_cert=/c.pem&ssl_key=/k.pem")
    assert db["OPTIONS"] == {"charset": "latin1", "ssl": {"ca": "/etc/ca.pem", "cert": "/c.pem", "key": "/k.pem"}}
    assert database_from_url("mysql://u@h/db")["OPTIONS"] == {"charset": "utf8mb4"}
    with pytest.raises(ImproperlyConfigured, match=r"unknown option 'sslmode'; known options: charset, ssl_ca"):
        database_from_url("mysql://u:p@h/db?sslmode=require")
    with pytest.raises(ImproperlyConfigured, match="port must be a number") as bad_port:
        database_from_url("mysql://u:secret@h:notaport/db")
    assert "secret" not in str(bad_port.value)


def test_demo_reports_a_bad_database_url_in_one_line(tmp_path: Path) -> None:
    env = demo_env(tmp_path)
    for url, expected in (("mysql://u:hunter2@h:notaport/db", "port must be a number"),
                          ("mysql://u:hunter2@h/db?ssl_mode=on", "unknown option 'ssl_mode'")):
        env["DATABASE_URL"] = url
        result = subprocess.run([*DEMO_CMD, "--no-serve"], check=False, env=env, capture_output=True, text=True,
                                timeout=60)
        assert result.returncode == 1, result.stderr
        assert result.stderr.strip().count("\n") == 0 and expected in result.stderr, result.stderr
        assert "hunter2" not in result.stderr


class _FakeShop:
    """A real HTTP server answering the shop API paths the driver uses (one request thread each)."""

    def __init__(self, checkout: tuple[int, dict]) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        shop = self
        self.paths: list[str] = []
        self.ingested: list[dict] = []
        self.products = [{"id": pid, "category": {"slug": "books"}} for pid in (11, 12, 13)]

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _answer(self, status: int, body: object) -> None:
                raw = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def do_GET(self) -> None:
                shop.paths.append(self.path)
                path = self.path.split("?", 1)[0]
                if path == "/api/shop/products/":
                    self._answer(200, shop.products)
                elif path.startswith("/api/shop/products/"):
                    self._answer(200, {"id": int(path.rstrip("/").rsplit("/", 1)[1])})
                else:
                    self._answer(200, [])

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                shop.paths.append(self.path)
                if self.path == "/api/v1/debugging/otlp/v1/traces":
                    shop.ingested.append(json.loads(raw))
                    self._answer(200, {})
                elif self.path == "/api/shop/checkout/":
                    self._answer(*checkout)
                elif self.path == "/api/shop/cart/items/":
                    self._answer(400, {"quantity": ["too small"]})
                else:
                    self._answer(200, {})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


def test_driver_opens_varied_products_and_counts_declines_as_failed() -> None:
    from e2e_otel.demo.traffic import TrafficDriver

    declined = (402, {"detail": "declined", "code": "payment_declined"})
    with _FakeShop(declined) as shop:
        driver = TrafficDriver(shop.url, ingest_key="k", customers=["u"], password="pw", product_ids=[11, 12, 13],
                               category_slugs=["books"])
        browser = driver.browsers[0]
        for _ in range(3):
            assert not driver.run_workflow("product_fetch", browser).failed
        opened = [p for p in shop.paths if p.rstrip("/").rsplit("/", 1)[-1].isdigit()]
        assert opened == ["/api/shop/products/11/", "/api/shop/products/12/", "/api/shop/products/13/"]

        checkout = driver.run_workflow("checkout", browser)
        assert [c.status for c in checkout.calls] == [402] and checkout.failed and checkout.ingest_status == 200
        spans = {s["name"]: s for s in shop.ingested[-1]["resourceSpans"][0]["scopeSpans"][0]["spans"]}
        assert spans["click checkout"]["status"] == {"code": 2, "message": "POST /api/shop/checkout/ answered 402"}
        assert spans["HTTP POST"]["status"]["code"] == 2

        invalid = driver.run_workflow("cart_update", browser)  # a 400 is the client's, not a failure
        assert {c.status for c in invalid.calls} >= {400} and not invalid.failed

    with _FakeShop((409, {"detail": "out of stock", "code": "out_of_stock"})) as shop:
        driver = TrafficDriver(shop.url, ingest_key=None, customers=["u"], password="pw", product_ids=[1],
                               category_slugs=[])
        assert not driver.run_workflow("checkout", driver.browsers[0]).failed


def _serve_until_ready(tmp_path: Path, db: Path) -> subprocess.Popen[str]:
    process = subprocess.Popen([*DEMO_CMD, "--workflows", "0", "--db", str(db)], env=demo_env(tmp_path),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    serving = threading.Event()

    def watch(stream: IO[str]) -> None:
        for line in stream:  # drained to the end so the child never blocks on a full pipe
            if "until Ctrl-C" in line:
                serving.set()

    assert process.stdout is not None
    threading.Thread(target=watch, args=(process.stdout,), daemon=True).start()
    if serving.wait(90):
        return process
    process.kill()
    raise AssertionError(f"the demo did not start serving: {process.communicate()[1][-2000:]}")


@pytest.mark.slow
@pytest.mark.parametrize(("first", "second", "code"), [(signal.SIGINT, signal.SIGTERM, 130),
                                                        (signal.SIGTERM, signal.SIGINT, 143)])
def test_demo_exit_status_after_a_signal(tmp_path_factory: pytest.TempPathFactory, first: int, second: int,
                                         code: int) -> None:
    tmp = tmp_path_factory.getbasetemp() / "signals"
    tmp.mkdir(exist_ok=True)
    process = _serve_until_ready(tmp, tmp / "signals.sqlite3")
    try:
        process.send_signal(first)
        time.sleep(0.05)
        process.send_signal(second)  # during shutdown: ignored, no traceback
        process.wait(timeout=30)
        assert process.stderr is not None
        err = process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == code, err[-2000:]
    assert "Traceback" not in err, err[-2000:]


@pytest.mark.mysql
@pytest.mark.slow
def test_demo_on_mysql_via_database_url(tmp_path: Path) -> None:
    import pymysql

    name = f"{os.environ.get('E2E_MYSQL_TEST_DATABASE', 'test_e2e')}_demo_cli"
    admin = pymysql.connect(host="127.0.0.1", port=3306, user="root", password="", autocommit=True)
    try:
        with admin.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")
            cursor.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
        env = demo_env(tmp_path)
        env["DATABASE_URL"] = f"mysql://root:@127.0.0.1:3306/{name}?charset=utf8mb4"
        result = subprocess.run([*DEMO_CMD, "--workflows", "8", "--no-serve"], check=False, env=env,
                                capture_output=True, text=True, timeout=180)
        assert result.returncode == 0, result.stderr[-3000:]
        assert f"MySQL {name} on 127.0.0.1:3306" in result.stdout
        with admin.cursor() as cursor:
            cursor.execute(f"SELECT workflow_type, COUNT(*) FROM `{name}`.debugging_workflow_session "
                           "GROUP BY workflow_type")
            assert dict(cursor.fetchall()) == {t: 2 for t in WORKFLOW_TYPES}
            cursor.execute(f"SELECT COUNT(*) FROM `{name}`.debugging_configuration WHERE name = 'e2e_demo'")
            assert cursor.fetchone()[0] == 1
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")
        admin.close()


# --- isolation: a second demo never breaks a running one; the landing page ---------------------------


class _RunningDemo:
    """``e2e-otel demo --workflows 0`` serving in the background, with what it printed parsed."""

    def __init__(self, tmp_path: Path, *extra: str) -> None:
        self.process = subprocess.Popen([*DEMO_CMD, "--workflows", "0", *extra], env=demo_env(tmp_path),
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        serving = threading.Event()

        def watch(stream: IO[str]) -> None:
            for line in stream:  # drained to the end so the child never blocks on a full pipe
                self.lines.append(line)
                if "until Ctrl-C" in line:
                    serving.set()

        assert self.process.stdout is not None
        threading.Thread(target=watch, args=(self.process.stdout,), daemon=True).start()
        if not serving.wait(90):
            self.stop()
            raise AssertionError(f"the demo did not start serving: {self.process.communicate()[1][-2000:]}")
        out = "".join(self.lines)
        self.url = re.search(r"Demo shop listening on (http://\S+)", out).group(1)  # type: ignore[union-attr]
        self.db = Path(re.search(r"preparing SQLite (\S+)", out).group(1))  # type: ignore[union-attr]
        self.admin_password = re.search(r"user 'e2e-demo-admin', password '([^']+)'", out).group(1)  # type: ignore[union-attr]
        self.api_key = re.search(r"Authorization: Bearer ([^']+)'", out).group(1)  # type: ignore[union-attr]

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def _admin_login(base_url: str, password: str) -> bool:
    """Log in through the admin's own form (CSRF cookie + token); True when it lands on the index."""
    import http.cookiejar
    import urllib.parse
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
    form = opener.open(f"{base_url}/admin/login/?next=/admin/", timeout=10).read().decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form).group(1)  # type: ignore[union-attr]
    body = urllib.parse.urlencode({"csrfmiddlewaretoken": token, "username": "e2e-demo-admin",
                                   "password": password, "next": "/admin/"}).encode()
    request = urllib.request.Request(f"{base_url}/admin/login/?next=/admin/", data=body,
                                     headers={"Referer": f"{base_url}/admin/login/"})
    with opener.open(request, timeout=10) as response:
        return response.url.rstrip("/").endswith("/admin") and "Log out" in response.read().decode()


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], str]:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=10) as response:
            return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode()


@pytest.mark.slow
def test_a_second_demo_leaves_a_running_one_alone(tmp_path: Path) -> None:
    first = _RunningDemo(tmp_path)
    try:
        assert first.db.parent.name == "demo-runs" and first.db.exists()
        assert _admin_login(first.url, first.admin_password)

        # Same user, same cache directory, default options: its own database, not the first one's.
        second = subprocess.run([*DEMO_CMD, "--workflows", "4", "--no-serve"], check=False, env=demo_env(tmp_path),
                                capture_output=True, text=True, timeout=120)
        assert second.returncode == 0, second.stderr[-2000:]
        assert _admin_login(first.url, first.admin_password)  # not re-seeded by the second run
        second_db = Path(re.search(r"preparing SQLite (\S+)", second.stdout).group(1))  # type: ignore[union-attr]
        assert second_db != first.db and not second_db.exists()  # its per-run file went with it

        # Naming the first one's database is refused before anything is written to it.
        third = subprocess.run([*DEMO_CMD, "--workflows", "0", "--no-serve", "--db", str(first.db)], check=False,
                               env=demo_env(tmp_path), capture_output=True, text=True, timeout=120)
        assert third.returncode == 1, third.stderr[-2000:]
        assert f"in use by another e2e-otel demo (pid {first.process.pid})" in third.stderr
        assert "Traceback" not in third.stderr and "Demo shop listening" not in third.stdout

        # The first demo's printed credentials and key still work.
        assert _admin_login(first.url, first.admin_password)
        status, _, body = _get(f"{first.url}/api/v1/debugging/workflow-sessions/",
                               {"Authorization": f"Bearer {first.api_key}"})
        assert status == 200, body
    finally:
        code = first.stop()
    assert code == 130
    assert not first.db.exists() and not Path(f"{first.db}.lock").exists()


@pytest.mark.slow
def test_landing_page_links_the_admin_the_api_and_metrics(tmp_path: Path) -> None:
    demo = _RunningDemo(tmp_path, "--db", str(tmp_path / "kept.sqlite3"))
    try:
        status, headers, page = _get(f"{demo.url}/")
        links = set(re.findall(r'href="([^"]+)"', page))
        for target in ("/admin/", "/api/v1/debugging/workflow-sessions/", "/api/v1/debugging/schema/", "/metrics"):
            assert target in links and _get(f"{demo.url}{target}")[0] in (200, 302, 401, 403), target
        assert _get(f"{demo.url}/metrics")[0] == 200
        correlation_id = {k.lower(): v for k, v in headers.items()}["x-correlation-id"]
    finally:
        demo.stop()
    assert status == 200 and "e2e-otel demo shop" in page
    assert f"This page view is trace <code>{correlation_id}</code>" in page
    assert demo.api_key not in page and demo.admin_password not in page  # printed in the terminal only
    assert (tmp_path / "kept.sqlite3").exists()  # --db files are the user's: kept


def test_bind_server_falls_back_to_a_free_port_only_without_an_explicit_one() -> None:
    import socket

    from e2e_otel.demo.server import bind_server

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        server, note = bind_server("127.0.0.1", None, preferred=busy)
        server.httpd.server_close()
        assert server.port != busy and note is not None and f"port {busy} is in use" in note
        with pytest.raises(OSError):
            bind_server("127.0.0.1", busy)


def test_stale_per_run_files_are_removed_unless_their_run_is_alive(tmp_path: Path) -> None:
    from e2e_otel.demo.isolation import DatabaseInUse, SQLiteLock, remove_stale_runs

    stale = tmp_path / "run-1-dead.sqlite3"
    for suffix in ("", "-wal", "-shm", ".lock"):
        Path(f"{stale}{suffix}").write_text("")
    alive = tmp_path / "run-2-live.sqlite3"
    alive.write_text("")
    lock = SQLiteLock(alive).acquire()
    try:
        with pytest.raises(DatabaseInUse, match=rf"in use by another e2e-otel demo \(pid {os.getpid()}\)"):
            SQLiteLock(alive).acquire()  # a second open file description conflicts even in one process
        assert remove_stale_runs(tmp_path) == [stale]
        assert sorted(p.name for p in tmp_path.iterdir()) == ["run-2-live.sqlite3", "run-2-live.sqlite3.lock"]
    finally:
        lock.release()
    SQLiteLock(alive).acquire().release()  # free again once released


@pytest.mark.mysql
@pytest.mark.django_db
def test_mysql_lock_refuses_a_second_holder_and_frees_on_release() -> None:
    from django.db import connection

    from e2e_otel.demo.isolation import DatabaseInUse, MySQLLock

    if connection.vendor != "mysql":
        pytest.skip("MySQL named locks")
    name = f"{connection.settings_dict['NAME']}-lock-test"
    first = MySQLLock(connection, name).acquire()
    try:
        with pytest.raises(DatabaseInUse, match=r"is in use by another e2e-otel demo \(lock 'e2e_otel_demo:.*' held by "
                                                r"connection \d+\)"):
            MySQLLock(connection, name).acquire()
    finally:
        first.release()
    MySQLLock(connection, name).acquire().release()  # the server dropped it with the connection


def test_sqlite_backend_gives_django_42_wal_and_immediate_transactions(tmp_path: Path, django_db_blocker) -> None:  # type: ignore[no-untyped-def]
    """Django < 5.1 refuses the demo's SQLite OPTIONS; the demo's backend applies them on any version."""
    from django.db.utils import ConnectionHandler

    from e2e_otel.demo.databases import sqlite_database

    settings = sqlite_database(tmp_path / "backend.sqlite3")
    settings["ENGINE"] = "e2e_otel.demo.sqlite_backend"
    connection = ConnectionHandler({"default": settings})["default"]  # a private handler, not django.db's
    with django_db_blocker.unblock():
        try:
            with connection.cursor() as cursor:
                cursor.execute("PRAGMA journal_mode")
                assert cursor.fetchone()[0] == "wal"
            connection._start_transaction_under_autocommit()  # what transaction.atomic() does first
            other = sqlite3.connect(tmp_path / "backend.sqlite3", timeout=0)
            try:
                with pytest.raises(sqlite3.OperationalError, match="locked"):
                    other.execute("BEGIN IMMEDIATE")  # the demo's transaction already holds the write lock
            finally:
                other.close()
            connection.cursor().execute("ROLLBACK")
        finally:
            connection.close()
