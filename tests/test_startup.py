"""Start-up never breaks the host, and host test runs end quietly (``apps.py``, ``testrun.py``,
``testing/pytest_plugin.py``).

The honest test of "``django.setup()`` does not raise" is a fresh interpreter with crafted settings:
each case starts the tiny project in ``tests/hostproject`` in a subprocess.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from e2e_otel.checks import format_message, settings_messages
from e2e_otel.conf import OPTIONS, resolve
from e2e_otel.testing.otlp_receiver import OTLPReceiver
from e2e_otel.testrun import is_manage_py_test
from tests.servers import PYTHON, REPO_ROOT, subprocess_env

MANAGE = str(REPO_ROOT / "tests" / "hostproject" / "manage.py")
HOSTED_TESTS = "tests.hostproject.everything.hosted_tests"

# Prints what the process ended up with; run after the crafted django.setup().
REPORT = """
import json, django
from django.contrib import admin
from django.test import Client
from e2e_otel.bootstrap import get_runtime
from e2e_otel.models import WorkflowSession
from e2e_otel.processors import WorkflowSpanProcessor
runtime = get_runtime()
print("REPORT " + json.dumps({
    "runtime": runtime is not None,
    "environment": runtime.config.ENVIRONMENT if runtime else None,
    "exporter": runtime is not None and runtime.exporter is not None,
    "records": runtime is not None and runtime.processor(WorkflowSpanProcessor) is not None,
    "session_admin": type(admin.site._registry[WorkflowSession]).__name__,
    "registered": sorted(m._meta.label for m in admin.site._registry),
    "ping": Client().get("/ping/").status_code,
}))
"""


def _run(argv: list[str], env: Mapping[str, str] | None = None,
         timeout: float = 90) -> subprocess.CompletedProcess[str]:
    full_env = subprocess_env({"DJANGO_SETTINGS_MODULE": "tests.hostproject.settings", **(env or {})})
    return subprocess.run(argv, cwd=REPO_ROOT, env=full_env, capture_output=True, text=True, timeout=timeout,
                          check=False)


def _setup(before: str = "", env: Mapping[str, str] | None = None) -> tuple[dict[str, object], str]:
    """``django.setup()`` in a fresh interpreter after ``before``; the report and stderr."""
    code = f"{before}\nimport django\ndjango.setup()\n{REPORT}"
    result = _run([PYTHON, "-c", code], env)
    assert result.returncode == 0, result.stdout + result.stderr
    line = next(x for x in result.stdout.splitlines() if x.startswith("REPORT "))
    return json.loads(line.removeprefix("REPORT ")), result.stderr


def _otel(**values: object) -> dict[str, str]:
    return {"HOST_E2E_OTEL": json.dumps({"TRACES_EXPORTER": "none", **values})}


# --- the admin: a register-everything loop listed before e2e_otel -----------------------------------


@pytest.mark.slow
def test_register_all_loop_before_e2e_otel_does_not_stop_setup() -> None:
    report, stderr = _setup(env=_otel())
    assert report["session_admin"] == "WorkflowSessionAdmin"  # the plain registration was taken over
    assert "auth.User" in report["registered"] and "e2e_otel.TraceStep" in report["registered"]
    assert report["runtime"] and report["ping"] == 200
    assert "Traceback" not in stderr


@pytest.mark.slow
def test_a_host_model_admin_is_kept() -> None:
    report, stderr = _setup(env={**_otel(), "HOST_CUSTOM_ADMIN": "1"},
                            before="import logging; logging.basicConfig(level=logging.INFO)")
    assert report["session_admin"] == "HostWorkflowSessionAdmin"
    assert report["runtime"]
    assert stderr.count("WorkflowSession (tests.hostproject.everything.admin.HostWorkflowSessionAdmin) already "
                        "registered in the admin by the project; that registration is kept") == 1, stderr


# --- bad settings, failing set-up: logged once, the host runs on --------------------------------------


@pytest.mark.slow
def test_typos_and_invalid_values_are_logged_at_startup_once() -> None:
    """What gunicorn or uWSGI do: ``django.setup()`` and serve, no checks run."""
    report, stderr = _setup(env=_otel(SAMPLE_RATIO=0.5, OTLP_PROTOCOL="carrier-pigeon"))
    assert report["runtime"] and report["ping"] == 200
    e001 = [x for x in stderr.splitlines() if "(e2e_otel.E001)" in x]
    e002 = [x for x in stderr.splitlines() if "(e2e_otel.E002)" in x]
    assert len(e001) == 1 and len(e002) == 1, stderr
    assert "E2E_OTEL has an unknown key 'SAMPLE_RATIO'. HINT: Did you mean SAMPLE_RATE" in e001[0]
    assert "'carrier-pigeon'" in e002[0]


@pytest.mark.slow
def test_manage_py_check_reports_once_not_twice() -> None:
    result = _run([PYTHON, MANAGE, "check"], _otel(SAMPLE_RATIO=0.5))
    output = result.stdout + result.stderr
    assert result.returncode == 1 and output.count("e2e_otel.E001") == 1, output


@pytest.mark.slow
def test_a_setting_that_is_not_a_dict_is_logged_and_the_defaults_apply() -> None:
    report, stderr = _setup(env={"HOST_E2E_OTEL": json.dumps("shop")})
    assert report["ping"] == 200 and report["runtime"]
    assert "(e2e_otel.E002) E2E_OTEL['E2E_OTEL']: must be a dict, got str" in stderr


@pytest.mark.slow
def test_an_exporter_that_cannot_be_built_degrades_to_no_export() -> None:
    """The gRPC exporter package missing (``None`` in ``sys.modules`` makes its import fail)."""
    missing = "import sys; sys.modules['opentelemetry.exporter.otlp.proto.grpc.trace_exporter'] = None"
    report, stderr = _setup(missing, env=_otel(TRACES_EXPORTER="otlp", OTLP_PROTOCOL="grpc"))
    assert report["runtime"] and not report["exporter"] and report["records"]
    assert report["ping"] == 200
    assert stderr.count("could not set up trace export (ModuleNotFoundError") == 1, stderr


@pytest.mark.slow
def test_a_failure_past_the_exporter_is_one_error_not_a_retry_without_export() -> None:
    """psutil missing breaks the metrics processor: export is not to blame, so it is not dropped."""
    report, stderr = _setup("import sys; sys.modules['psutil'] = None", env=_otel(TRACES_EXPORTER="otlp"))
    assert not report["runtime"] and report["ping"] == 200
    assert "could not set up trace export" not in stderr
    assert stderr.count("e2e-otel could not start (ModuleNotFoundError: import of psutil halted") == 1, stderr


@pytest.mark.slow
def test_an_exception_from_install_leaves_the_host_running_without_e2e_otel() -> None:
    boom = ("import e2e_otel.bootstrap\ndef install(config):\n    raise RuntimeError('boom')\n"
            "e2e_otel.bootstrap.install = install")
    report, stderr = _setup(boom, env=_otel())
    assert not report["runtime"] and report["ping"] == 200
    assert report["session_admin"] == "WorkflowSessionAdmin"
    assert stderr.count("e2e-otel could not start (RuntimeError: boom) and is disabled") == 1, stderr


@pytest.mark.slow
def test_any_other_failure_in_ready_is_logged_and_setup_completes() -> None:
    """Reading the settings itself fails (a stand-in for a bug of ours): nothing escapes ready()."""
    broken = ("import e2e_otel.conf\ndef get_config():\n    raise KeyError('surprise')\n"
              "e2e_otel.conf.get_config = get_config")
    report, stderr = _setup(broken, env=_otel())
    assert not report["runtime"] and report["ping"] == 200
    assert stderr.count("e2e-otel failed to start and is disabled in this process") == 1, stderr


NUMERIC_OPTIONS = [key for key, option in OPTIONS.items()
                   if option.parse.__qualname__.startswith("_number") or key in ("OTLP_TIMEOUT",)]


@pytest.mark.parametrize("key", NUMERIC_OPTIONS)
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf"), "nan", "1e999", 10**400])
def test_a_non_finite_number_is_an_invalid_value_not_a_crash(key: str, value: object) -> None:
    """NaN passed every bound (comparisons with NaN are false) and then broke the sampler in
    install(); int(inf) raised OverflowError out of resolve()."""
    config = resolve({key: value}, {})
    assert [e.key for e in config.errors] == [key]
    assert config[key] == resolve({}, {})[key]


def test_a_nan_sampler_argument_from_the_environment_is_e002() -> None:
    from e2e_otel.sampling import build_sampler

    config = resolve(None, {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "nan"})
    assert [e.key for e in config.errors] == ["SAMPLE_RATE"] and config.SAMPLE_RATE == 1.0
    build_sampler(config.SAMPLE_RATE, record_unsampled=True)


ANY_VALUE = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6)
NUMBER_LIKE = (st.floats() | st.integers() | st.integers(min_value=10**300)
               | st.sampled_from(["nan", "inf", "-inf", "1e999", "-1", "0.5", " 3 ", "true"]))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.tuples(
    st.dictionaries(st.sampled_from([*OPTIONS, "SAMPLE_RATIO", "", "enabled"]), ANY_VALUE, max_size=5),
    st.dictionaries(st.sampled_from(NUMERIC_OPTIONS), NUMBER_LIKE, max_size=4),
).map(lambda dicts: {**dicts[0], **dicts[1]}))
def test_no_settings_value_makes_resolution_or_its_report_raise(user: dict[str, object]) -> None:
    """Whatever the dict holds, resolving it and reporting it do not raise, and what reaches the
    runtime is usable: finite numbers, a sampler that builds."""
    import math

    from e2e_otel.sampling import build_sampler

    config = resolve(user, {}, test_run=True)
    for message in settings_messages(config):
        assert format_message(message).startswith(f"({message.id}) ")
    for key in NUMERIC_OPTIONS:
        assert config[key] is None or math.isfinite(config[key])
    build_sampler(config.SAMPLE_RATE, record_unsampled=True)


# --- test runs: the testing profile on its own ----------------------------------------------------------


@pytest.mark.parametrize(("argv", "expected"), [
    (["manage.py", "test"], True),
    (["/usr/lib/python3/site-packages/django/__main__.py", "test", "shop"], True),
    (["manage.py", "runserver", "test"], False),
    (["gunicorn", "shop.wsgi"], False),
    (["manage.py"], False),
])
def test_manage_py_test_is_argv_1(argv: list[str], expected: bool) -> None:
    assert is_manage_py_test(argv) is expected


def test_a_test_run_implies_the_testing_profile_unless_the_user_chose() -> None:
    assert resolve({}, {}, test_run=True).ENVIRONMENT == "testing"
    assert resolve({}, {}, test_run=True).TRACES_EXPORTER == "none"
    assert "ENVIRONMENT" not in resolve({}, {}, test_run=True).explicit
    assert resolve({}, {}).ENVIRONMENT == "development"
    assert resolve({"ENVIRONMENT": "production"}, {}, test_run=True).ENVIRONMENT == "production"
    assert resolve({}, {"E2E_OTEL_ENVIRONMENT": "development"}, test_run=True).ENVIRONMENT == "development"
    chosen = resolve({"TRACES_EXPORTER": "otlp"}, {}, test_run=True)
    assert (chosen.ENVIRONMENT, chosen.TRACES_EXPORTER) == ("development", "otlp")
    assert resolve({}, {"OTEL_TRACES_EXPORTER": "console"}, test_run=True).ENVIRONMENT == "development"
    # an endpoint alone (a dev container's OTEL_EXPORTER_OTLP_ENDPOINT) is not a choice to export tests
    assert resolve({}, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317"}, test_run=True).TRACES_EXPORTER == "none"


def _host_database(name: str) -> list[str]:
    """Tables of database ``name`` on the MariaDB server (created empty when missing)."""
    import pymysql

    connection = pymysql.connect(host="127.0.0.1", user="root", connect_timeout=2)
    try:
        with connection.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE IF NOT EXISTS `{name}`")
            cursor.execute(f"SHOW TABLES FROM `{name}`")
            return [row[0] for row in cursor.fetchall()]
    finally:
        connection.close()


#: Everything a quiet Django/pytest run prints; any other line (a refused record, an export retry, a
#: traceback) fails the test.
QUIET_LINES = ("Found 1 test(s).", "System check identified no issues (0 silenced).",
               "Creating test database for alias 'default'...", "Destroying test database for alias 'default'...",
               ".", "OK", "Ran 1 test in", "-" * 70, "1 passed in", "[100%]")


def _noise(output: str) -> list[str]:
    return [line for line in output.splitlines()
            if line.strip() and not any(line.strip().startswith(q) or line.strip().endswith(q) for q in QUIET_LINES)]


def _test_run_env(receiver: OTLPReceiver, name: str) -> dict[str, str]:
    assert _host_database(name) == []  # the developer's database: it must stay untouched
    return {"HOST_DB": "mysql", "HOST_EVERYTHING": "0", "HOST_DB_NAME": name, "HOST_TEST_DB_NAME": f"test_{name}",
            # Where a dev container would send traces: a test run must not.
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.grpc_endpoint, "OTEL_EXPORTER_OTLP_INSECURE": "true"}


@pytest.mark.mysql
@pytest.mark.slow
def test_manage_py_test_records_in_the_test_database_exports_nothing_and_ends_quietly(
        otlp_receiver: OTLPReceiver) -> None:
    name = "e2e_startup_host_django"
    result = _run([PYTHON, MANAGE, "test", HOSTED_TESTS], _test_run_env(otlp_receiver, name))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert _noise(output) == [], output
    assert otlp_receiver.spans == []
    assert _host_database(name) == []


def _pytest_argv(test_module: str, rootdir: Path) -> list[str]:
    test_file = str(REPO_ROOT / "tests" / "hostproject" / "everything" / f"{test_module}.py")
    return [PYTHON, "-m", "pytest", "-p", "e2e_otel.testing.pytest_plugin", "--noconftest", "-c", "/dev/null",
            "--rootdir", str(rootdir), "-p", "no:cacheprovider", "-q", "--ds", "tests.hostproject.settings",
            test_file]


@pytest.mark.mysql
@pytest.mark.slow
def test_pytest_django_run_records_in_the_test_database_exports_nothing_and_ends_quietly(
        otlp_receiver: OTLPReceiver, tmp_path: Path) -> None:
    name = "e2e_startup_host_pytest"
    result = _run(_pytest_argv("hosted_tests", tmp_path), _test_run_env(otlp_receiver, name))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert _noise(output) == [], output
    assert otlp_receiver.spans == []
    assert _host_database(name) == []


@pytest.mark.mysql
@pytest.mark.slow
def test_a_pytest_session_without_a_test_database_records_nothing(otlp_receiver: OTLPReceiver,
                                                                  tmp_path: Path) -> None:
    """No test database is made, so the traffic is not recorded: at exit, with pytest-django no longer
    blocking database access, the writer would have written it to the developer's database."""
    name = "e2e_startup_host_nodb"
    result = _run(_pytest_argv("hosted_nodb_tests", tmp_path), _test_run_env(otlp_receiver, name))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert _noise(output) == [], output
    assert _host_database(name) == []


@pytest.mark.slow
def test_the_plugin_imports_without_grpc() -> None:
    """Loaded by entry point in every pytest run of a project: it must not need the receiver's grpc."""
    code = ("import sys; sys.modules['grpc'] = None\nimport e2e_otel.testing.pytest_plugin as p\n"
            "print(p.otlp_receiver.__name__)")
    result = subprocess.run([PYTHON, "-c", code], cwd=REPO_ROOT, env=subprocess_env(), capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr


@pytest.fixture
def clean_test_run(monkeypatch: pytest.MonkeyPatch):
    """``prepare`` marks the process and records the wrapped runner: undone after the test."""
    from e2e_otel import conf, testrun

    monkeypatch.setattr(testrun, "_wrapped_runner_path", None)
    yield
    conf.mark_test_run(False)
    testrun.host_test_runner.cache_clear()


def test_manage_py_test_wraps_the_configured_runner(clean_test_run: None) -> None:
    from types import SimpleNamespace

    from django.test.runner import DiscoverRunner

    from e2e_otel.conf import is_test_run
    from e2e_otel.testrun import HOST_RUNNER_PATH, StopRecordsBeforeTeardown, prepare

    fake_settings = SimpleNamespace(TEST_RUNNER="django.test.runner.DiscoverRunner")
    assert prepare(["manage.py", "test", "shop"], fake_settings) is True and is_test_run()
    assert fake_settings.TEST_RUNNER == HOST_RUNNER_PATH
    from e2e_otel.testrun import HostTestRunner  # what get_runner() imports

    assert issubclass(HostTestRunner, DiscoverRunner) and issubclass(HostTestRunner, StopRecordsBeforeTeardown)
    assert HostTestRunner.__name__ == "DiscoverRunner"
    prepare(["manage.py", "test"], fake_settings)  # twice: not wrapped around itself
    assert fake_settings.TEST_RUNNER == HOST_RUNNER_PATH


def test_an_explicit_testrunner_is_left_alone(clean_test_run: None) -> None:
    from types import SimpleNamespace

    from e2e_otel.conf import mark_test_run
    from e2e_otel.testrun import prepare

    fake_settings = SimpleNamespace(TEST_RUNNER="django.test.runner.DiscoverRunner")
    assert prepare(["manage.py", "test", "--testrunner", "shop.Runner"], fake_settings) is True
    assert fake_settings.TEST_RUNNER == "django.test.runner.DiscoverRunner"
    mark_test_run(False)
    fake_settings = SimpleNamespace(TEST_RUNNER="django.test.runner.DiscoverRunner")
    assert prepare(["gunicorn", "shop.wsgi"], fake_settings) is False
    assert fake_settings.TEST_RUNNER == "django.test.runner.DiscoverRunner"


def test_the_runtime_stops_before_the_databases_are_torn_down(monkeypatch: pytest.MonkeyPatch) -> None:
    from e2e_otel import bootstrap
    from e2e_otel.testrun import StopRecordsBeforeTeardown

    calls: list[str] = []

    class FakeRuntime:
        def shutdown(self) -> bool:
            calls.append("runtime stopped")
            return True

    class Runner:
        def teardown_databases(self, old_config: object, **kwargs: object) -> None:
            calls.append(f"databases destroyed {old_config}")

    class HostRunner(StopRecordsBeforeTeardown, Runner):
        pass

    monkeypatch.setattr(bootstrap, "_runtime", FakeRuntime())
    HostRunner().teardown_databases("cfg")
    assert calls == ["runtime stopped", "databases destroyed cfg"]
