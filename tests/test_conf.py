"""Settings resolution: defaults, profiles, precedence E2E_OTEL > OTEL_* env > profile > default."""

from __future__ import annotations

import pytest
from django.test import override_settings

from e2e_otel.conf import OPTIONS, ConfigError, get_config, resolve


def test_defaults_without_settings_or_environment() -> None:
    cfg = resolve(None, {})
    assert cfg.ENABLED is True
    assert cfg.ENVIRONMENT == "development"
    assert cfg.SERVICE_NAME == "django-app"
    assert cfg.OTLP_PROTOCOL == "grpc"
    assert cfg.TRACES_EXPORTER == "none"  # no collector named (see test_export_only_with_a_collector)
    assert cfg.SAMPLE_RATE == 1.0
    assert cfg.OTLP_ENDPOINT is None and cfg.OTLP_HEADERS is None
    assert cfg.MASK_SENSITIVE_DATA is True
    assert cfg.errors == [] and cfg.unknown == []
    assert set(cfg) == set(OPTIONS)
    assert cfg.is_active


def test_unknown_attribute_raises_instead_of_returning_none() -> None:
    cfg = resolve(None, {})
    with pytest.raises(AttributeError, match="SAMPLE_RATIO"):
        cfg.SAMPLE_RATIO  # noqa: B018


@pytest.mark.parametrize(
    ("key", "env_name", "env_value", "user_value", "default", "expected_env"),
    [
        ("SERVICE_NAME", "OTEL_SERVICE_NAME", "from-env", "from-settings", "django-app", "from-env"),
        ("OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf", "grpc", "grpc", "http/protobuf"),
        ("TRACES_EXPORTER", "OTEL_TRACES_EXPORTER", "console", "otlp,console", "none", "console"),
    ],
)
def test_precedence_settings_over_env_over_default(key, env_name, env_value, user_value, default,
                                                   expected_env) -> None:
    assert resolve(None, {})[key] == default
    assert resolve(None, {env_name: env_value})[key] == expected_env
    assert resolve({key: user_value}, {env_name: env_value})[key] == user_value
    # explicit argument beats the settings dict
    assert resolve({key: user_value}, {env_name: env_value}, **{key: default})[key] == default


def test_traces_protocol_variable_beats_the_generic_one() -> None:
    env = {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf"}
    assert resolve(None, env).OTLP_PROTOCOL == "http/protobuf"


@pytest.mark.parametrize(
    ("sampler", "arg", "expected"),
    [
        ("always_on", None, 1.0),
        ("always_off", None, 0.0),
        ("parentbased_always_off", None, 0.0),
        ("traceidratio", "0.25", 0.25),
        ("parentbased_traceidratio", "0.5", 0.5),
        ("parentbased_traceidratio", None, 1.0),
    ],
)
def test_sample_rate_from_otel_traces_sampler(sampler, arg, expected) -> None:
    env = {"OTEL_TRACES_SAMPLER": sampler}
    if arg is not None:
        env["OTEL_TRACES_SAMPLER_ARG"] = arg
    cfg = resolve(None, env)
    assert expected == cfg.SAMPLE_RATE and cfg.errors == []
    # production profile default yields to the env variable, the settings dict beats both
    assert expected == resolve({"ENVIRONMENT": "production"}, env).SAMPLE_RATE
    assert resolve({"SAMPLE_RATE": 0.75}, env).SAMPLE_RATE == 0.75


@pytest.mark.parametrize(
    "env",
    [
        {"OTEL_TRACES_SAMPLER": "jaeger_remote"},
        {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "lots"},
        {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "1.5"},
    ],
)
def test_invalid_sampler_environment_is_an_error_and_keeps_the_default(env) -> None:
    cfg = resolve({"ENVIRONMENT": "production"}, env)
    assert cfg.SAMPLE_RATE == 0.1
    assert [e.key for e in cfg.errors] == ["SAMPLE_RATE"]
    assert "environment" in cfg.errors[0].message


def test_profiles() -> None:
    collector = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel-collector:4317"}
    production = resolve({"ENVIRONMENT": "production"}, collector)
    assert production.SAMPLE_RATE == 0.1
    assert production.TRACES_EXPORTER == "otlp"
    assert production.MASK_SENSITIVE_DATA is True
    testing = resolve({"ENVIRONMENT": "testing"}, collector)
    assert testing.TRACES_EXPORTER == "none"
    assert testing.SAMPLE_RATE == 1.0
    development = resolve({"ENVIRONMENT": "development"}, collector)
    assert development.SAMPLE_RATE == 1.0 and development.TRACES_EXPORTER == "otlp"
    # env picks the profile too, and explicit values beat the profile
    assert resolve(None, {"E2E_OTEL_ENVIRONMENT": "production"}).SAMPLE_RATE == 0.1
    assert resolve({"ENVIRONMENT": "testing", "TRACES_EXPORTER": "otlp"}, {}).TRACES_EXPORTER == "otlp"
    assert resolve({"ENVIRONMENT": "testing"}, {"OTEL_TRACES_EXPORTER": "otlp"}).TRACES_EXPORTER == "otlp"


@pytest.mark.parametrize("value", ["true", "TRUE", " True "])
def test_otel_sdk_disabled_turns_everything_off(value) -> None:
    cfg = resolve({"ENABLED": True}, {"OTEL_SDK_DISABLED": value})
    assert cfg.ENABLED is False and not cfg.is_active
    assert cfg.errors == []


@pytest.mark.parametrize("value", ["false", "", "0"])
def test_otel_sdk_disabled_other_values_keep_it_on(value) -> None:
    assert resolve(None, {"OTEL_SDK_DISABLED": value}).is_active


def test_enabled_false_in_settings() -> None:
    assert not resolve({"ENABLED": False}, {}).is_active
    assert not resolve({"ENABLED": "off"}, {}).is_active


def test_headers_from_settings_dict_or_string_form() -> None:
    assert resolve({"OTLP_HEADERS": {"x-team": "shop"}}, {}).OTLP_HEADERS == {"x-team": "shop"}
    assert resolve({"OTLP_HEADERS": "a=1, b = 2"}, {}).OTLP_HEADERS == {"a": "1", "b": "2"}
    cfg = resolve({"OTLP_HEADERS": "novalue"}, {})
    assert cfg.OTLP_HEADERS is None and [e.key for e in cfg.errors] == ["OTLP_HEADERS"]
    # unset: left to the SDK, which reads OTEL_EXPORTER_OTLP_[TRACES_]HEADERS itself
    assert resolve(None, {"OTEL_EXPORTER_OTLP_HEADERS": "a=1"}).OTLP_HEADERS is None


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("SAMPLE_RATE", 1.5),
        ("SAMPLE_RATE", "half"),
        ("SAMPLE_RATE", True),
        ("OTLP_PROTOCOL", "udp"),
        ("TRACES_EXPORTER", "jaeger"),
        ("ENVIRONMENT", "staging"),
        ("ENABLED", "maybe"),
        ("SERVICE_NAME", "   "),
        ("RECORD_QUEUE_SIZE", 0),
        ("WORKFLOWS", ["checkout"]),
        ("RESOURCE_ATTRIBUTES", "team=shop"),
    ],
)
def test_invalid_values_fall_back_to_default_and_are_reported(key, value) -> None:
    cfg = resolve({key: value}, {})
    assert cfg[key] == resolve(None, {})[key]
    assert len(cfg.errors) == 1
    error = cfg.errors[0]
    assert isinstance(error, ConfigError) and error.key == key
    assert f"E2E_OTEL[{key!r}]" in str(error)
    assert repr(value) in str(error) or f"got {type(value).__name__}" in str(error)


def test_invalid_environment_variable_is_reported() -> None:
    cfg = resolve(None, {"OTEL_EXPORTER_OTLP_PROTOCOL": "smoke-signals"})
    assert cfg.OTLP_PROTOCOL == "grpc"
    assert [e.key for e in cfg.errors] == ["OTLP_PROTOCOL"]
    assert "from environment" in str(cfg.errors[0])


def test_unknown_keys_are_collected() -> None:
    cfg = resolve({"SAMPLE_RATIO": 0.5, "SERVICE_NAME": "shop"}, {})
    assert cfg.unknown == ["SAMPLE_RATIO"]
    assert cfg.SERVICE_NAME == "shop"
    assert cfg.explicit == frozenset({"SERVICE_NAME"})


def test_get_config_reads_settings_and_override_settings_clears_cache() -> None:
    first = get_config()
    assert first is get_config()  # cached
    assert first.SERVICE_NAME == "e2e-otel-tests"
    with override_settings(E2E_OTEL={"SERVICE_NAME": "overridden", "ENVIRONMENT": "production"}):
        inside = get_config()
        assert inside.SERVICE_NAME == "overridden"
        assert inside.SAMPLE_RATE == 0.1
    after = get_config()
    assert after.SERVICE_NAME == "e2e-otel-tests"


def test_non_dict_setting_is_an_error() -> None:
    with override_settings(E2E_OTEL=["SERVICE_NAME", "shop"]):
        cfg = get_config()
        assert [e.key for e in cfg.errors] == ["E2E_OTEL"]
        assert cfg.SERVICE_NAME  # defaults still usable


def test_traces_exporter_accepts_the_spec_comma_list() -> None:
    from e2e_otel.bootstrap import build_sanitizer
    from e2e_otel.exporters import MultiSpanExporter, build_span_exporter

    cfg = resolve(None, {"OTEL_TRACES_EXPORTER": "otlp, console,otlp"})
    assert cfg.errors == [] and cfg.TRACES_EXPORTER == "otlp,console"
    exporter = build_span_exporter(cfg, build_sanitizer(cfg))
    assert isinstance(exporter.inner, MultiSpanExporter) and len(exporter.inner.exporters) == 2
    bad = resolve(None, {"OTEL_TRACES_EXPORTER": "none,console"})
    assert [e.key for e in bad.errors] == ["TRACES_EXPORTER"]


def test_repr_never_shows_credentials() -> None:
    cfg = resolve({"API_KEY": "sekret-api", "INGEST_KEY": "sekret-ingest", "METRICS_KEY": "sekret-metrics",
                   "OTLP_HEADERS": {"authorization": "Bearer sekret-otlp"}}, {})
    assert "sekret" not in repr(cfg) and "sekret" not in str(cfg)
    assert cfg.API_KEY == "sekret-api"


@pytest.mark.parametrize(
    ("user", "environ", "exporter", "computed"),
    [
        ({}, {}, "none", True),  # a laptop without a collector: nothing to fail against
        ({}, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://localhost:4317"}, "otlp", True),
        ({}, {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, "otlp", True),
        ({}, {"OTEL_EXPORTER_OTLP_ENDPOINT": "  "}, "none", True),
        ({}, {"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://c:4317"}, "none", True),  # not where spans go
        ({"OTLP_ENDPOINT": "http://collector:4317"}, {}, "otlp", True),
        ({}, {"OTEL_TRACES_EXPORTER": "otlp"}, "otlp", False),  # asked for: localhost:4317
        ({"TRACES_EXPORTER": "console"}, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317"}, "console", False),
        ({"ENVIRONMENT": "production"}, {}, "none", True),
        ({"ENVIRONMENT": "testing"}, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317"}, "none", False),
    ],
)
def test_export_only_with_a_collector(user, environ, exporter, computed) -> None:
    cfg = resolve(user, environ)
    assert cfg.errors == []
    assert cfg["TRACES_EXPORTER"] == exporter
    assert ("TRACES_EXPORTER" in cfg.computed) is computed
