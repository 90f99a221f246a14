"""The ``E2E_OTEL`` settings accessor.

One dict in Django settings, merged over the documented defaults below. Precedence for every key:
explicit argument > ``E2E_OTEL[key]`` > the standard ``OTEL_*`` environment variable(s) > the
environment profile's default > the plain default. Settings are read on access, never at import,
and the cache is cleared on ``setting_changed`` so ``override_settings`` works in tests.

Exporter details the SDK already reads from the environment (``OTEL_EXPORTER_OTLP_*_ENDPOINT``,
``_HEADERS``, ``_TIMEOUT``, ``_COMPRESSION``, ``_CERTIFICATE``) are left to the SDK when the
``E2E_OTEL`` dict does not set them, so the spec's own precedence rules apply unchanged.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from .routes import DEFAULT_IGNORE_PATHS, check_pattern

ENVIRONMENTS = ("development", "production", "testing")
PROTOCOLS = ("grpc", "http/protobuf")
EXPORTERS = ("otlp", "console", "none")


class ConfigError(ValueError):
    """An ``E2E_OTEL`` value that cannot be used; ``key`` names the offending setting."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"E2E_OTEL[{key!r}]: {message}")
        self.key = key
        self.message = message


# --- parsers: raw value (from settings or environment) -> typed value, ValueError when invalid ---


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected a boolean, got {value!r}")


def _choice(*choices: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        text = str(value).strip().lower()
        if text not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}; got {value!r}")
        return text

    return parse


def _exporter_list(value: Any) -> str:
    """``OTEL_TRACES_EXPORTER`` may name several exporters (``otlp,console``); kept as that string."""
    names: list[str] = []
    for item in str(value).split(","):
        name = _choice(*EXPORTERS)(item)
        if name not in names:
            names.append(name)
    if "none" in names and len(names) > 1:
        raise ValueError(f"'none' cannot be combined with other exporters, got {value!r}")
    return ",".join(names)


def _optional_str(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _str(value: Any) -> str:
    text = str(value).strip()
    if not text:
        raise ValueError(f"must not be empty, got {value!r}")
    return text


def _number(low: float, high: float | None = None, integer: bool = False) -> Callable[[Any], float]:
    def parse(value: Any) -> float:
        if isinstance(value, bool):
            raise ValueError(f"expected a number, got {value!r}")
        # NaN passes every bound below (its comparisons are all false), and int(inf) overflows.
        if not math.isfinite(float(value)):
            raise ValueError(f"must be a finite number, got {value!r}")
        number = int(value) if integer else float(value)
        if number < low or (high is not None and number > high):
            bounds = f"between {low} and {high}" if high is not None else f">= {low}"
            raise ValueError(f"must be {bounds}, got {value!r}")
        return number

    return parse


def _headers(value: Any) -> dict[str, str]:
    """``{"k": "v"}`` or the OTLP env form ``k=v,k2=v2``."""
    if isinstance(value, Mapping):
        return {str(k): str(v) for k, v in value.items()}
    result: dict[str, str] = {}
    for item in str(value).split(","):
        if not item.strip():
            continue
        key, sep, val = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"expected key=value pairs, got {item!r}")
        result[key.strip()] = val.strip()
    return result


def _str_list(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(v.strip() for v in value.split(",") if v.strip())
    if isinstance(value, (list, tuple, set, frozenset)):
        return tuple(str(v) for v in value)
    raise ValueError(f"expected a list of strings, got {value!r}")


def _workflow_rules(value: Any) -> dict[str, tuple[str, ...]]:
    if not isinstance(value, Mapping):
        raise ValueError('expected {"workflow_type": ["METHOD /route/pattern*", ...]}, '
                         f"got {type(value).__name__}")
    rules: dict[str, tuple[str, ...]] = {}
    for name, patterns in value.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"workflow names must be non-empty strings, got {name!r}")
        rules[name] = _str_list(patterns)
    return rules


def _ignore_paths(value: Any) -> tuple[str, ...]:
    patterns = _str_list(value)
    for pattern in patterns:
        check_pattern(pattern)
    return patterns


def _mapping(value: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ValueError(f"expected a dict, got {type(value).__name__}")
    return dict(value)


def _sampler_from_env(environ: Mapping[str, str]) -> float | None:
    """Map ``OTEL_TRACES_SAMPLER`` (+ ``_ARG``) onto a head-sampling rate (always parent-based)."""
    sampler = environ.get("OTEL_TRACES_SAMPLER", "").strip().lower()
    if not sampler:
        return None
    if sampler in ("always_on", "parentbased_always_on"):
        return 1.0
    if sampler in ("always_off", "parentbased_always_off"):
        return 0.0
    if sampler in ("traceidratio", "parentbased_traceidratio"):
        arg = environ.get("OTEL_TRACES_SAMPLER_ARG", "1.0")
        return float(arg)
    raise ValueError(f"unsupported OTEL_TRACES_SAMPLER {sampler!r}")


def _disabled_from_env(environ: Mapping[str, str]) -> bool | None:
    return False if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true" else None


@dataclass(frozen=True)
class Option:
    """One documented setting: its default, the env variables that feed it, and its parser."""

    default: Any
    doc: str
    parse: Callable[[Any], Any]
    env: tuple[str, ...] = ()
    env_reader: Callable[[Mapping[str, str]], Any] | None = None
    profile: Mapping[str, Any] = field(default_factory=dict)


OPTIONS: dict[str, Option] = {
    # --- core ---
    "ENABLED": Option(True, "Master switch. OTEL_SDK_DISABLED=true also turns everything off.", _bool,
                      env_reader=_disabled_from_env),
    "ENVIRONMENT": Option("development", "development | production | testing: picks profile defaults.",
                          _choice(*ENVIRONMENTS), env=("E2E_OTEL_ENVIRONMENT",)),
    "SERVICE_NAME": Option("django-app", "service.name resource attribute.", _str, env=("OTEL_SERVICE_NAME",)),
    "SERVICE_VERSION": Option(None, "service.version resource attribute.", _optional_str),
    "RESOURCE_ATTRIBUTES": Option({}, "Extra resource attributes; OTEL_RESOURCE_ATTRIBUTES is merged below.",
                                  _mapping),
    # --- export ---
    "TRACES_EXPORTER": Option("otlp", "otlp | console | none, or a comma list such as otlp,console.",
                              _exporter_list,
                              env=("OTEL_TRACES_EXPORTER",), profile={"testing": "none"}),
    "OTLP_ENDPOINT": Option(None, "Collector endpoint. Unset: the SDK reads OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT "
                            "or uses localhost:4317 / :4318.", _optional_str),
    "OTLP_PROTOCOL": Option("grpc", "grpc | http/protobuf.", _choice(*PROTOCOLS),
                            env=("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")),
    "OTLP_HEADERS": Option(None, "Export headers (dict). Unset: OTEL_EXPORTER_OTLP_[TRACES_]HEADERS.",
                           lambda v: None if v is None else _headers(v)),
    "OTLP_TIMEOUT": Option(None, "Export timeout in seconds. Unset: OTEL_EXPORTER_OTLP_[TRACES_]TIMEOUT.",
                           lambda v: None if v is None else _number(0.1, 300)(v)),
    "SAMPLE_RATE": Option(1.0, "Parent-based head sampling ratio; OTEL_TRACES_SAMPLER(+_ARG) feeds it.",
                          _number(0.0, 1.0), env_reader=_sampler_from_env, profile={"production": 0.1}),
    "SHUTDOWN_TIMEOUT": Option(2.0, "Seconds the exit flush may take before pending spans are dropped "
                               "(a healthy collector needs milliseconds; keeps exit well under 5 s "
                               "when it is down).",
                               _number(0.0, 120)),
    # --- instrumentation ---
    "INSTRUMENT_DJANGO": Option(True, "Instrument Django requests.", _bool),
    "INSTRUMENT_PYMYSQL": Option(True, "Instrument PyMySQL (also as Django's MySQL driver).", _bool),
    "INSTRUMENT_REQUESTS": Option(True, "Instrument `requests` when installed.", _bool),
    "INSTRUMENT_SQLITE": Option(True, "Trace SQLite queries (Django's SQLite backend) with upstream's DB-API "
                                "integration; parameter values are not captured.", _bool),
    "CORRELATION_HEADER": Option("X-Correlation-ID", "Header that carries the correlation id.", _str),
    # --- privacy ---
    "MASK_SENSITIVE_DATA": Option(True, "Mask secrets in metadata, messages and stack traces.", _bool),
    "SENSITIVE_KEYS": Option((), "Extra key names to mask (added to the built-in deny-list).", _str_list),
    # --- records ---
    "RECORDS_ENABLED": Option(True, "Derive WorkflowSession/TraceStep/ErrorLog rows from spans.", _bool),
    "DATABASE_ALIAS": Option("default", "Database alias of the records (MySQL/MariaDB, SQLite or PostgreSQL), "
                             "for the writer, API, admin, evaluator and reports; another alias puts "
                             "e2e_otel.routers.RecordsRouter first in DATABASE_ROUTERS "
                             "(then: migrate --database ALIAS).",
                             _str),
    "RECORD_QUEUE_SIZE": Option(10_000, "Bound of the span->record queue; overflow is dropped and counted.",
                                _number(1, integer=True)),
    "RECORD_BATCH_SIZE": Option(500, "Rows per bulk write.", _number(1, 10_000, integer=True)),
    "RECORD_FLUSH_INTERVAL": Option(1.0, "Seconds between writer flushes.", _number(0.01, 60)),
    "WORKFLOWS": Option({}, 'Route rules: {"checkout": ["POST /api/v1/checkout/*"]}.', _workflow_rules),
    "IGNORE_PATHS": Option(
        DEFAULT_IGNORE_PATHS,
        "Requests that are never workflows: no WorkflowSession/steps/errors rows, no workflow counters, "
        "reports or breaches; still traced and exported (5xx and exceptions count in e2e_otel_steps_total "
        "and e2e_otel_errors_total). Patterns as in WORKFLOWS, on the route template: \"/path/glob*\" "
        "(any method) or \"METHOD /path/glob*\". {admin} = every admin site's prefix (reversed "
        "<namespace>:index), {static}/{media} = STATIC_URL/MEDIA_URL. The whole admin site is excluded by "
        "default (not a business workflow); drop \"{admin}*\" to record the host's own admin pages. "
        "Always excluded whatever this says: e2e-otel's API, ingestion, /metrics and the admin of its "
        "models, and requests no route matched (counted in e2e_otel_unmatched_requests_total).",
        _ignore_paths),
    "WORKFLOW_IDLE_TIMEOUT": Option(300.0, "Seconds without spans after which a workflow is closed.",
                                    _number(1, 86_400)),
    "SLOW_SPAN_MS": Option(1000.0, "Unsampled spans slower than this are still recorded locally.",
                           _number(0)),
    "MAX_STEPS_PER_WORKFLOW": Option(500, "Further steps of one workflow are counted, not stored.",
                                     _number(1, integer=True)),
    "RETENTION_DAYS": Option(14, "prune_debugging_records: age limit for ordinary records.",
                             _number(1, integer=True)),
    "FAILED_RETENTION_DAYS": Option(60, "prune_debugging_records: age limit for failed workflows, and "
                                    "for unresolved error groups (by last_seen).",
                                    _number(1, integer=True)),
    "MAX_WORKFLOW_SESSIONS": Option(100_000, "prune_debugging_records: cap on stored sessions.",
                                    _number(1, integer=True)),
    # --- API, ingestion, metrics ---
    "API_KEY": Option(None, "Bearer key for the debugging API (staff sessions also pass).", _optional_str,
                      env=("E2E_OTEL_API_KEY",)),
    "INGEST_KEY": Option(None, "X-E2E-Ingest-Key required by the browser span ingestion endpoint.",
                         _optional_str, env=("E2E_OTEL_INGEST_KEY",)),
    "INGEST_ALLOWED_ORIGINS": Option((), "CORS allow-list for browser ingestion.", _str_list),
    "INGEST_MAX_BODY_BYTES": Option(512 * 1024, "Largest accepted ingestion body.", _number(1024, integer=True)),
    "INGEST_RATE_LIMIT": Option(120, "Ingestion requests per minute per client.", _number(1, integer=True)),
    "INGEST_MAX_DECOMPRESSED_BYTES": Option(1024 * 1024, "Largest gzip-decompressed ingestion body "
                                            "(zip-bomb guard; past 64 KiB a gzip ratio above 50:1 is "
                                            "refused too).", _number(1024, integer=True)),
    "INGEST_MAX_SPANS": Option(512, "Spans per ingestion request (the OTel JS batch processor sends "
                               "at most 512).", _number(1, 1000, integer=True)),
    "INGEST_MAX_EXCEPTIONS": Option(20, "Exception events kept per ingestion request (each can open an "
                                    "error group); the rest are dropped and reported in partial_success.",
                                    _number(0, 1000, integer=True)),
    "INGEST_TRUSTED_PROXIES": Option(0, "Reverse proxies in front of the app: 0 = rate-limit ingestion per "
                                     "REMOTE_ADDR; N = per the N-th X-Forwarded-For address from the right.",
                                     _number(0, 10, integer=True)),
    "METRICS_ENABLED": Option(True, "Export prometheus_client metrics derived from spans.", _bool),
    "METRICS_KEY": Option(None, "Bearer key for /metrics (unset: open).", _optional_str,
                          env=("E2E_OTEL_METRICS_KEY",)),
    "METRICS_MAX_COMPONENTS": Option(200, "Distinct component label values per layer before 'other' "
                                     "(frontend: min(50, this)).", _number(1, integer=True)),
    "THRESHOLD_REFRESH_INTERVAL": Option(30.0, "Seconds between threshold rule reloads.", _number(1)),
    "TRACE_URL_TEMPLATE": Option(None, "Link to a trace, e.g. http://localhost:16686/trace/{trace_id}.",
                                 _optional_str),
    "SLOW_QUERY_MS": Option(100.0, "SQL slower than this is a slow-query finding.", _number(0)),
    "N_PLUS_ONE_THRESHOLD": Option(5, "Repeats of one query shape in a trace that make an N+1 finding.",
                                   _number(2, integer=True)),
}


#: Options whose values are credentials: never shown in ``repr``.
SECRET_OPTIONS = frozenset({"API_KEY", "INGEST_KEY", "METRICS_KEY", "OTLP_HEADERS"})


class Config(Mapping[str, Any]):
    """Resolved settings: read-only, attribute or item access; unknown names raise."""

    def __init__(self, values: dict[str, Any], errors: list[ConfigError], unknown: list[str],
                 explicit: frozenset[str]) -> None:
        self._values = values
        self.errors = errors
        self.unknown = unknown
        self.explicit = explicit

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["_values"][name]
        except KeyError:
            raise AttributeError(f"no E2E_OTEL setting named {name!r}") from None

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        # Masked: a Config in a traceback's locals (Django's debug page, error trackers) must not
        # show keys or export headers.
        shown = {k: ("********" if k in SECRET_OPTIONS and v else v) for k, v in self._values.items()}
        return f"Config({shown!r})"

    @property
    def is_active(self) -> bool:
        return bool(self._values["ENABLED"])


def _env_value(option: Option, environ: Mapping[str, str]) -> Any:
    if option.env_reader is not None:
        return option.env_reader(environ)
    for name in option.env:
        raw = environ.get(name)
        if raw is not None and raw.strip():
            return raw
    return None


def resolve(user: Mapping[str, Any] | None, environ: Mapping[str, str] | None = None, *,
            test_run: bool = False, **overrides: Any) -> Config:
    """Resolve settings from explicit ``overrides``, the ``user`` dict, the environment and defaults.

    Invalid values fall back to the default and are reported in ``Config.errors`` (shown by the
    system checks) instead of raising, so a typo never stops the host app from booting. With
    ``test_run`` (``manage.py test``, pytest-django) the testing profile is the default unless
    ENVIRONMENT or TRACES_EXPORTER is set in ``E2E_OTEL`` or the environment.
    """
    environ = os.environ if environ is None else environ
    user = dict(user or {})
    user.update(overrides)
    implied: frozenset[str] = frozenset()
    if test_run and not _chooses_profile(user, environ):
        user["ENVIRONMENT"], implied = "testing", frozenset({"ENVIRONMENT"})
    unknown = sorted(k for k in user if k not in OPTIONS)
    errors: list[ConfigError] = []

    def value_of(key: str, environment: str) -> Any:
        option = OPTIONS[key]
        raw: Any = None
        source = None
        if key in user:
            raw, source = user[key], "E2E_OTEL"
        else:
            try:
                env_raw = _env_value(option, environ)
            except ValueError as exc:
                errors.append(ConfigError(key, f"from environment: {exc}"))
                env_raw = None
            if env_raw is not None:
                raw, source = env_raw, "environment"
        if source is None:
            return option.profile.get(environment, option.default)
        try:
            return option.parse(raw)
        except (TypeError, ValueError, OverflowError) as exc:  # float(10**400) overflows
            errors.append(ConfigError(key, f"{exc} (from {source})"))
            return option.profile.get(environment, option.default)

    environment = value_of("ENVIRONMENT", "development")
    values = {"ENVIRONMENT": environment}
    for key in OPTIONS:
        if key != "ENVIRONMENT":
            values[key] = value_of(key, environment)
    if _disabled_from_env(environ) is False:
        values["ENABLED"] = False  # the spec's kill switch wins over everything
    return Config(values, errors, unknown, frozenset(k for k in user if k in OPTIONS) - implied)


def _chooses_profile(user: Mapping[str, Any], environ: Mapping[str, str]) -> bool:
    """Whether the user picked an environment or an exporter themselves (then a test run keeps it)."""
    keys = ("ENVIRONMENT", "TRACES_EXPORTER")
    return any(k in user for k in keys) or any(
        (environ.get(name) or "").strip() for k in keys for name in OPTIONS[k].env)


_test_run = False


def mark_test_run(active: bool = True) -> None:
    """Tell ``get_config`` the process runs a test suite (``e2e_otel.testrun`` and the pytest plugin
    call this before ``ready()``); clears the cached config."""
    global _test_run
    _test_run = active
    get_config.cache_clear()


def is_test_run() -> bool:
    return _test_run


@lru_cache(maxsize=1)
def get_config() -> Config:
    """The process's resolved settings (cached; cleared when ``E2E_OTEL`` changes)."""
    from django.conf import settings

    user = getattr(settings, "E2E_OTEL", None)
    if user is not None and not isinstance(user, Mapping):
        cfg = resolve(None, test_run=_test_run)
        cfg.errors.append(ConfigError("E2E_OTEL", f"must be a dict, got {type(user).__name__}"))
        return cfg
    return resolve(user, test_run=_test_run)


def _on_setting_changed(*, setting: str, **kwargs: Any) -> None:
    if setting == "E2E_OTEL":
        get_config.cache_clear()


def connect_signals() -> None:
    from django.core.signals import setting_changed

    setting_changed.connect(_on_setting_changed, dispatch_uid="e2e_otel.conf")
