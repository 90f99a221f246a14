"""``manage.py check`` reports bad E2E_OTEL settings with stable ids and hints."""

from __future__ import annotations

import io
import subprocess

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import override_settings

from e2e_otel.checks import (
    INCLUDE_LINE,
    URL_ENDPOINTS,
    check_migrations,
    check_settings,
    check_urls,
    mysql_driver_warnings,
    provider_settings_warnings,
    unapplied_migrations,
    url_messages,
)
from tests.servers import PYTHON, REPO_ROOT, subprocess_env


def _ids(messages) -> list[str]:
    return sorted(m.id for m in messages)


def test_valid_test_settings_have_no_errors() -> None:
    assert [m for m in check_settings() if m.is_serious()] == []
    out = io.StringIO()
    call_command("check", stdout=out)
    assert "no issues" in out.getvalue()


def test_unknown_key_is_e001_with_a_suggestion() -> None:
    with override_settings(E2E_OTEL={"SAMPLE_RATIO": 0.5}):
        messages = check_settings()
    assert _ids(messages) == ["e2e_otel.E001"]
    assert "'SAMPLE_RATIO'" in messages[0].msg
    assert "Did you mean SAMPLE_RATE" in messages[0].hint


def test_invalid_value_is_e002_with_the_option_doc_as_hint() -> None:
    with override_settings(E2E_OTEL={"OTLP_PROTOCOL": "udp", "SAMPLE_RATE": 2}):
        messages = check_settings()
    assert _ids(messages) == ["e2e_otel.E002", "e2e_otel.E002"]
    by_key = {m.msg.split("]")[0]: m for m in messages}
    protocol = by_key["E2E_OTEL['OTLP_PROTOCOL'"]
    assert "'udp'" in protocol.msg and "grpc | http/protobuf" in protocol.hint
    assert "default is used" in protocol.hint


def test_invalid_environment_variable_is_e002(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "sometimes")
    with override_settings(E2E_OTEL={}):
        messages = check_settings()
    assert _ids(messages) == ["e2e_otel.E002"]
    assert "OTEL_TRACES_SAMPLER" in messages[0].msg or "sometimes" in messages[0].msg


def test_non_dict_setting_is_e002() -> None:
    with override_settings(E2E_OTEL="shop"):
        messages = check_settings()
    assert _ids(messages) == ["e2e_otel.E002"]
    assert "must be a dict" in messages[0].msg


def test_call_command_check_fails_on_errors() -> None:
    with (override_settings(E2E_OTEL={"SAMPLE_RATIO": 0.5, "TRACES_EXPORTER": "jaeger"}),
          pytest.raises(SystemCheckError) as excinfo):
        call_command("check", stdout=io.StringIO(), stderr=io.StringIO())
    text = str(excinfo.value)
    assert "e2e_otel.E001" in text and "e2e_otel.E002" in text
    assert "HINT:" in text


def test_production_without_api_key_warns() -> None:
    with override_settings(E2E_OTEL={"ENVIRONMENT": "production"}):
        assert "e2e_otel.W001" in _ids(check_settings())
    with override_settings(E2E_OTEL={"ENVIRONMENT": "production", "API_KEY": "k" * 40}):
        assert "e2e_otel.W001" not in _ids(check_settings())


@pytest.mark.slow
def test_manage_py_check_in_a_subprocess_shows_ids_and_hints() -> None:
    env = subprocess_env({"DJANGO_SETTINGS_MODULE": "tests.settings_bad", "E2E_TEST_DB": "sqlite"})
    result = subprocess.run([PYTHON, "-m", "django", "check"], cwd=REPO_ROOT, env=env,
                            capture_output=True, text=True, timeout=60, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "e2e_otel.E001" in output and "'SAMPLE_RATIO'" in output
    assert "e2e_otel.E002" in output and "'carrier-pigeon'" in output
    assert "HINT: Did you mean SAMPLE_RATE" in output


def test_mysql_served_by_pymysql_has_no_w003() -> None:
    from django.db import connection

    if connection.vendor != "mysql":
        pytest.skip("W003 concerns MySQL databases")
    assert "e2e_otel.W003" not in _ids(check_settings())


def test_mysql_served_by_another_driver_is_w003(monkeypatch: pytest.MonkeyPatch) -> None:
    """A stand-in module named like mysqlclient's, to see the check tell the drivers apart."""
    import types

    from django.db import connection
    from django.db.backends.mysql import base

    mysql = {"ENGINE": "django.db.backends.mysql", "NAME": "shop"}
    sqlite = {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}
    assert mysql_driver_warnings({"default": mysql, "other": sqlite}) == []  # PyMySQL is installed
    monkeypatch.setattr(base, "Database", types.ModuleType("MySQLdb"))
    messages = mysql_driver_warnings({"default": sqlite, "shop": mysql})
    assert _ids(messages) == ["e2e_otel.W003"]
    assert "DATABASES['shop']" in messages[0].msg and "'MySQLdb'" in messages[0].msg
    assert "install_as_MySQLdb" in messages[0].hint
    if connection.vendor == "mysql":  # the live settings: reported, unless the user opted out
        assert "e2e_otel.W003" in _ids(check_settings())
        with override_settings(E2E_OTEL={"INSTRUMENT_PYMYSQL": False}):
            assert "e2e_otel.W003" not in _ids(check_settings())


def test_provider_keys_under_a_foreign_provider_are_w004(monkeypatch: pytest.MonkeyPatch) -> None:
    from opentelemetry.sdk.trace import TracerProvider

    from e2e_otel import bootstrap
    from e2e_otel.conf import resolve

    config = resolve({"SERVICE_NAME": "shop", "OTLP_ENDPOINT": "http://c:4317", "RECORDS_ENABLED": False,
                      "METRICS_ENABLED": False}, {})
    assert provider_settings_warnings(config) == []  # the live runtime owns its provider
    foreign = bootstrap.build_runtime(config, provider=TracerProvider(), with_derived=False)
    monkeypatch.setattr(bootstrap, "_runtime", foreign)
    messages = provider_settings_warnings(config)
    assert _ids(messages) == ["e2e_otel.W004"]
    assert "OTLP_ENDPOINT, SERVICE_NAME" in messages[0].msg and "OTEL_SERVICE_NAME" in messages[0].hint
    assert provider_settings_warnings(resolve({"API_KEY": "k"}, {})) == []


# --- W007 / I001: e2e-otel's URLs reachable through ROOT_URLCONF --------------------------------------


def test_the_readme_placement_has_no_url_message() -> None:
    assert url_messages("tests.urls", URL_ENDPOINTS) == []
    assert check_urls() == []


def test_a_catch_all_before_the_include_is_w007_naming_the_pattern() -> None:
    messages = url_messages("tests.hostproject.urls_shadowed", URL_ENDPOINTS)
    assert _ids(messages) == ["e2e_otel.W007"] * 3
    assert "the debugging API is mounted at /api/v1/debugging/workflow-sessions/" in messages[0].msg
    for message in messages:
        assert "pattern '^(?P<path>.*)$' (view django.views.static.serve)" in message.msg
        assert "Move the include of e2e_otel.urls above the pattern '^(?P<path>.*)$'" in message.hint
    with override_settings(ROOT_URLCONF="tests.hostproject.urls_shadowed"):
        assert _ids(check_urls()) == ["e2e_otel.W007"] * 3
    with override_settings(ROOT_URLCONF="tests.hostproject.urls_shadowed", E2E_OTEL={"METRICS_ENABLED": False}):
        assert len(check_urls()) == 2  # /metrics is not served then


class MetricsShadowed:
    """A URLconf (any object with ``urlpatterns``) whose own /metrics comes before the include."""

    from django.http import HttpResponse
    from django.urls import include, path

    urlpatterns = [path("metrics", lambda request: MetricsShadowed.HttpResponse("mine"), name="host-metrics"),
                   path("", include("e2e_otel.urls"))]


def test_one_shadowed_url_is_one_w007() -> None:
    messages = url_messages(MetricsShadowed, URL_ENDPOINTS)  # type: ignore[arg-type]
    assert _ids(messages) == ["e2e_otel.W007"]
    assert "/metrics is mounted at /metrics, but that URL resolves to pattern 'metrics'" in messages[0].msg


def test_a_script_prefix_is_not_a_shadow() -> None:
    from django.urls import get_script_prefix, set_script_prefix

    before = get_script_prefix()
    set_script_prefix("/shop/")  # what django.setup() does with FORCE_SCRIPT_NAME = "/shop"
    try:
        assert url_messages("tests.urls", URL_ENDPOINTS) == []
    finally:
        set_script_prefix(before)


def test_urls_not_included_is_i001_with_the_include_line() -> None:
    messages = url_messages("tests.hostproject.urls_without", URL_ENDPOINTS)
    assert _ids(messages) == ["e2e_otel.I001"]
    assert "/api/v1/debugging/otlp/v1/traces" in messages[0].msg and "/metrics" in messages[0].msg
    assert INCLUDE_LINE in messages[0].hint
    assert not messages[0].is_serious()


def test_a_broken_urlconf_is_left_to_django() -> None:
    with override_settings(ROOT_URLCONF="tests.no_such_urlconf"):
        assert check_urls() == []


# --- E003 / W006: the record database and its migrations ------------------------------------------------


def test_an_unknown_database_alias_is_e003() -> None:
    with override_settings(E2E_OTEL={"DATABASE_ALIAS": "records"}):
        messages = check_migrations()
    assert _ids(messages) == ["e2e_otel.E003"]
    assert "'records'" in messages[0].msg and "'default'" in messages[0].hint


@pytest.mark.django_db
def test_the_migrated_test_database_has_no_unapplied_migrations() -> None:
    assert unapplied_migrations("default", timeout=10) == []
    assert check_migrations(databases=None) == []


def test_an_unreachable_database_gives_no_message_within_the_timeout() -> None:
    import time

    started = time.monotonic()
    assert unapplied_migrations("unreachable", timeout=3) is None
    assert time.monotonic() - started < 3.5


def _host_manage(args: list[str], env: dict[str, str]) -> str:
    env = subprocess_env({"DJANGO_SETTINGS_MODULE": "tests.hostproject.settings", "HOST_EVERYTHING": "0", **env})
    result = subprocess.run([PYTHON, str(REPO_ROOT / "tests" / "hostproject" / "manage.py"), *args], cwd=REPO_ROOT,
                            env=env, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


@pytest.mark.slow
def test_unapplied_migrations_are_w006_until_migrate(tmp_path) -> None:
    env = {"HOST_DB_NAME": str(tmp_path / "host.sqlite3")}
    output = _host_manage(["check"], env)
    assert "e2e_otel.W006" in output and "not applied on database 'default'" in output, output
    assert "HINT: Run `manage.py migrate e2e_otel`." in output
    migrate = _host_manage(["migrate", "-v", "0"], env)
    assert "W006" not in migrate  # migrate passes its database: no warning about what it is applying
    assert "e2e_otel.W006" not in _host_manage(["check"], env)


@pytest.mark.slow
def test_check_with_the_database_down_neither_fails_nor_hangs() -> None:
    import time

    started = time.monotonic()
    output = _host_manage(["check"], {"HOST_DB": "mysql", "HOST_DB_PORT": "1"})
    assert "W006" not in output and "Traceback" not in output
    assert time.monotonic() - started < 20


def test_w010_is_a_registered_check(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """``manage.py check`` runs the multiprocess-metrics check (``e2e_otel.metrics_multiprocess``)."""
    from django.core import checks
    from django.core.checks import Warning

    import e2e_otel.metrics_multiprocess as mp

    monkeypatch.setattr(mp, "check_multiprocess_metrics",
                        lambda *a, **k: [Warning("workers cannot be summed", id="e2e_otel.W010")])
    assert "e2e_otel.W010" in {m.id for m in checks.run_checks(tags=["e2e_otel"])}
