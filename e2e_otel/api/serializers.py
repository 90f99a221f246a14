"""Serializers for the six record models and the API's action payloads. Request thread."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from ..conf import get_config
from ..models import (
    DebugConfiguration,
    Direction,
    ErrorLog,
    PerformanceSnapshot,
    PerformanceThreshold,
    TraceStep,
    WorkflowSession,
    WorkflowStatus,
)
from ..sanitize import Sanitizer, default_sanitizer

MAX_METADATA_KEYS = 128


def sanitize_metadata(value: Any) -> dict[str, Any]:
    """User-supplied metadata is masked like span attributes before it is stored."""
    if not isinstance(value, dict):
        raise serializers.ValidationError("expected a JSON object")
    if len(value) > MAX_METADATA_KEYS:
        raise serializers.ValidationError(f"at most {MAX_METADATA_KEYS} keys")
    from ..bootstrap import get_runtime

    runtime = get_runtime()
    if runtime is not None:
        return dict(runtime.sanitizer.clean_mapping(value))
    return value


def trace_url(trace_id: str) -> str | None:
    template = get_config().TRACE_URL_TEMPLATE
    return template.replace("{trace_id}", trace_id) if template else None


class TraceStepSerializer(serializers.ModelSerializer):
    class Meta:
        model = TraceStep
        fields = [
            "id", "workflow_session", "correlation_id", "span_id", "parent_span_id", "name", "layer",
            "component", "operation", "start_time", "end_time", "duration_ms", "status", "metadata",
        ]
        read_only_fields = fields


class WorkflowSessionSerializer(serializers.ModelSerializer):
    trace_id = serializers.CharField(read_only=True)
    trace_url = serializers.SerializerMethodField()

    class Meta:
        model = WorkflowSession
        fields = [
            "id", "correlation_id", "trace_id", "trace_url", "workflow_type", "workflow_type_source",
            "user_id", "service", "environment", "start_time", "end_time", "last_activity", "duration_ms",
            "status", "status_explicit", "step_count", "error_count", "dropped_step_count", "metadata",
            "created_at", "updated_at",
        ]
        read_only_fields = fields

    def get_trace_url(self, obj: WorkflowSession) -> str | None:
        return trace_url(obj.trace_id)


class WorkflowSessionDetailSerializer(WorkflowSessionSerializer):
    steps = serializers.SerializerMethodField()

    class Meta(WorkflowSessionSerializer.Meta):
        fields = [*WorkflowSessionSerializer.Meta.fields, "steps"]
        read_only_fields = fields

    def get_steps(self, obj: WorkflowSession) -> list[dict[str, Any]]:
        steps = TraceStep.objects.filter(workflow_session=obj).order_by("start_time", "id")
        return list(TraceStepSerializer(steps, many=True).data)


class WorkflowCreateSerializer(serializers.Serializer):
    workflow_type = serializers.CharField(max_length=100)
    correlation_id = serializers.UUIDField(required=False)
    user_id = serializers.CharField(max_length=150, required=False, allow_blank=True, default="")
    metadata = serializers.JSONField(required=False, default=dict)

    def validate_metadata(self, value: Any) -> dict[str, Any]:
        return sanitize_metadata(value)

    def validate_correlation_id(self, value: Any) -> Any:
        if value.int == 0:
            raise serializers.ValidationError("the all-zero id is not a valid trace id")
        if WorkflowSession.objects.filter(correlation_id=value).exists():
            raise serializers.ValidationError("a workflow session with this correlation id already exists")
        return value


class WorkflowCompleteSerializer(serializers.Serializer):
    status = serializers.ChoiceField(
        choices=[WorkflowStatus.COMPLETED, WorkflowStatus.FAILED], default=WorkflowStatus.COMPLETED
    )
    error_message = serializers.CharField(required=False, allow_blank=True, max_length=4096)
    metadata = serializers.JSONField(required=False, default=dict)

    def validate_metadata(self, value: Any) -> dict[str, Any]:
        return sanitize_metadata(value)


class ErrorLogSerializer(serializers.ModelSerializer):
    class Meta:
        model = ErrorLog
        fields = [
            "id", "correlation_id", "span_id", "timestamp", "last_seen", "layer", "component", "error_type",
            "error_message", "stack_trace", "fingerprint", "occurrences", "severity", "category",
            "resolved", "resolved_at", "resolved_by", "resolution_notes", "user_id", "metadata",
        ]
        read_only_fields = fields


class ResolveSerializer(serializers.Serializer):
    resolution_notes = serializers.CharField(required=False, allow_blank=True, default="", max_length=10_000)


class PerformanceSnapshotSerializer(serializers.ModelSerializer):
    class Meta:
        model = PerformanceSnapshot
        fields = [
            "id", "timestamp", "layer", "component", "metric_name", "metric_value", "unit",
            "threshold_status", "correlation_id", "metadata",
        ]
        read_only_fields = ["id"]

    def validate_metadata(self, value: Any) -> dict[str, Any]:
        return sanitize_metadata(value)


def _configuration_sanitizer() -> Sanitizer:
    from ..bootstrap import get_runtime

    runtime = get_runtime()
    return runtime.sanitizer if runtime is not None else default_sanitizer()


class DebugConfigurationSerializer(serializers.ModelSerializer):
    """Debug configurations are masked both ways, like span attributes: on the way in, so no secret
    is ever stored (``{"api_key": "…"}`` is saved as ``"[REDACTED]"``: this is not a secret store),
    and on the way out, for rows written before masking existed or by the admin / the ORM."""

    class Meta:
        model = DebugConfiguration
        fields = ["id", "name", "enabled", "description", "config_data", "created_at", "updated_at"]
        read_only_fields = ["id", "created_at", "updated_at"]

    def validate_config_data(self, value: Any) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise serializers.ValidationError("expected a JSON object")
        if len(value) > MAX_METADATA_KEYS:
            raise serializers.ValidationError(f"at most {MAX_METADATA_KEYS} keys")
        return _configuration_sanitizer().clean_mapping(value)

    def validate_description(self, value: str) -> str:
        return _configuration_sanitizer().scrub_text(value)

    def to_representation(self, instance: Any) -> dict[str, Any]:
        data = dict(super().to_representation(instance))
        sanitizer = _configuration_sanitizer()
        config = data.get("config_data")
        data["config_data"] = sanitizer.clean_mapping(config) if isinstance(config, dict) else {}
        if data.get("description"):
            data["description"] = sanitizer.scrub_text(data["description"])
        return data


class PerformanceThresholdSerializer(serializers.ModelSerializer):
    class Meta:
        model = PerformanceThreshold
        fields = [
            "id", "metric_name", "layer", "component", "warning_threshold", "critical_threshold",
            "direction", "unit", "description", "enabled", "created_at", "updated_at",
        ]
        read_only_fields = ["id", "created_at", "updated_at"]

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        def current(name: str, default: Any = None) -> Any:
            if name in attrs:
                return attrs[name]
            return getattr(self.instance, name, default)

        warning = current("warning_threshold")
        critical = current("critical_threshold")
        direction = current("direction", Direction.ABOVE)
        if warning is not None and critical is not None:
            ordered = critical >= warning if direction == Direction.ABOVE else critical <= warning
            if not ordered:
                relation = "at or above" if direction == Direction.ABOVE else "at or below"
                message = f"must be {relation} warning_threshold ({warning}) for direction '{direction}'"
                raise serializers.ValidationError({"critical_threshold": [message]})
        return attrs
