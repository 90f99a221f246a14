"""The seven record models. Rows are derived from spans by the record writer; nothing else writes them
except explicit user actions (resolving an error, editing thresholds/configurations).

MySQL notes: indexed ``CharField``s stay at or below 190 characters (utf8mb4 index limit), every API
filter leads an index and API orderings on the big tables have a composite index with the filter they
go with (see ``e2e_otel.api.filters``), span/trace ids are fixed-width hex.
"""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from .fields import CorrelationIdField


class Layer(models.TextChoices):
    FRONTEND = "frontend", "Frontend"
    API = "api", "API"
    DATABASE = "database", "Database"
    CACHE = "cache", "Cache"
    EXTERNAL = "external", "External"
    INTERNAL = "internal", "Internal"
    SYSTEM = "system", "System"


class WorkflowStatus(models.TextChoices):
    IN_PROGRESS = "in_progress", "In progress"
    COMPLETED = "completed", "Completed"
    FAILED = "failed", "Failed"


class StepStatus(models.TextChoices):
    OK = "ok", "OK"
    ERROR = "error", "Error"


class Severity(models.TextChoices):
    DEBUG = "debug", "Debug"
    INFO = "info", "Info"
    WARNING = "warning", "Warning"
    ERROR = "error", "Error"
    CRITICAL = "critical", "Critical"


class ThresholdStatus(models.TextChoices):
    OK = "ok", "OK"
    WARNING = "warning", "Warning"
    CRITICAL = "critical", "Critical"


class Direction(models.TextChoices):
    ABOVE = "above", "Breach when above"
    BELOW = "below", "Breach when below"


class WorkflowSession(models.Model):
    """One business workflow = one trace id (the correlation id)."""

    correlation_id = CorrelationIdField(unique=True)
    workflow_type = models.CharField(max_length=100, db_index=True)
    workflow_type_source = models.CharField(
        max_length=20, default="route", help_text="explicit | baggage | rule | route"
    )
    user_id = models.CharField(max_length=150, blank=True, default="", db_index=True)
    service = models.CharField(max_length=100, blank=True, default="")
    environment = models.CharField(max_length=20, blank=True, default="")
    start_time = models.DateTimeField(default=timezone.now, db_index=True)
    end_time = models.DateTimeField(null=True, blank=True)
    last_activity = models.DateTimeField(default=timezone.now, db_index=True)
    duration_ms = models.FloatField(null=True, blank=True)
    status = models.CharField(
        max_length=20, choices=WorkflowStatus.choices, default=WorkflowStatus.IN_PROGRESS, db_index=True
    )
    status_explicit = models.BooleanField(
        default=False, help_text="Set by complete_workflow()/fail_workflow(); span-derived status won't override it."
    )
    root_span_id = models.CharField(max_length=16, blank=True, default="")
    step_count = models.PositiveIntegerField(default=0)
    error_count = models.PositiveIntegerField(default=0)
    dropped_step_count = models.PositiveIntegerField(default=0)
    metadata = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "debugging_workflow_session"
        ordering = ["-start_time"]
        indexes = [
            models.Index(fields=["status", "start_time"], name="dbg_ws_status_start"),
            models.Index(fields=["workflow_type", "start_time"], name="dbg_ws_type_start"),
            models.Index(fields=["status", "last_activity"], name="dbg_ws_status_activity"),
            models.Index(fields=["service", "start_time"], name="dbg_ws_service_start"),
            models.Index(fields=["status", "duration_ms"], name="dbg_ws_status_duration"),
        ]

    def __str__(self) -> str:
        return f"{self.workflow_type} {self.correlation_id} ({self.status})"

    @property
    def trace_id(self) -> str:
        return self.correlation_id.hex


class TraceStep(models.Model):
    """One span of a workflow, placed on a layer."""

    workflow_session = models.ForeignKey(WorkflowSession, on_delete=models.CASCADE, related_name="steps")
    correlation_id = CorrelationIdField(db_index=True)
    span_id = models.CharField(max_length=16)
    parent_span_id = models.CharField(max_length=16, blank=True, default="")
    name = models.CharField(max_length=190, blank=True, default="")
    layer = models.CharField(max_length=20, choices=Layer.choices, db_index=True)
    component = models.CharField(max_length=190, db_index=True)
    operation = models.CharField(max_length=190)
    start_time = models.DateTimeField(db_index=True)
    end_time = models.DateTimeField(null=True, blank=True)
    duration_ms = models.FloatField(null=True, blank=True)
    status = models.CharField(max_length=10, choices=StepStatus.choices, default=StepStatus.OK, db_index=True)
    metadata = models.JSONField(default=dict, blank=True)

    class Meta:
        db_table = "debugging_trace_step"
        ordering = ["start_time", "id"]
        constraints = [
            models.UniqueConstraint(fields=["workflow_session", "span_id"], name="dbg_step_unique_span"),
        ]
        indexes = [
            models.Index(fields=["workflow_session", "start_time"], name="dbg_step_session_start"),
            models.Index(fields=["layer", "component"], name="dbg_step_layer_component"),
            models.Index(fields=["layer", "duration_ms"], name="dbg_step_layer_duration"),
        ]

    def __str__(self) -> str:
        return f"{self.layer}:{self.component} {self.operation}"


class ErrorLog(models.Model):
    """A group of identical errors (same fingerprint); ``occurrences`` counts repeats while open."""

    correlation_id = CorrelationIdField(null=True, blank=True, db_index=True)
    span_id = models.CharField(max_length=16, blank=True, default="")
    timestamp = models.DateTimeField(default=timezone.now, db_index=True, help_text="First seen.")
    last_seen = models.DateTimeField(default=timezone.now, db_index=True)
    layer = models.CharField(max_length=20, choices=Layer.choices, db_index=True)
    component = models.CharField(max_length=190, blank=True, default="")
    error_type = models.CharField(max_length=190, db_index=True)
    error_message = models.TextField(blank=True, default="")
    stack_trace = models.TextField(blank=True, default="")
    fingerprint = models.CharField(max_length=64, db_index=True)
    occurrences = models.PositiveIntegerField(default=1)
    severity = models.CharField(max_length=10, choices=Severity.choices, default=Severity.ERROR, db_index=True)
    category = models.CharField(max_length=50, blank=True, default="", db_index=True)
    resolved = models.BooleanField(default=False, db_index=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolved_by = models.CharField(max_length=150, blank=True, default="")
    resolution_notes = models.TextField(blank=True, default="")
    user_id = models.CharField(max_length=150, blank=True, default="")
    metadata = models.JSONField(default=dict, blank=True)

    class Meta:
        db_table = "debugging_error_log"
        ordering = ["resolved", "-last_seen"]
        indexes = [
            models.Index(fields=["fingerprint", "resolved"], name="dbg_err_fp_resolved"),
            models.Index(fields=["resolved", "last_seen"], name="dbg_err_resolved_seen"),
            models.Index(fields=["component", "last_seen"], name="dbg_err_component_seen"),
            models.Index(fields=["resolved", "occurrences"], name="dbg_err_resolved_occurrences"),
        ]

    def __str__(self) -> str:
        return f"{self.error_type} x{self.occurrences} ({self.layer}:{self.component})"


class PerformanceSnapshot(models.Model):
    """A metric sample worth keeping: explicit PerformanceMonitor samples and threshold breaches."""

    timestamp = models.DateTimeField(default=timezone.now, db_index=True)
    layer = models.CharField(max_length=20, choices=Layer.choices, db_index=True)
    component = models.CharField(max_length=190, blank=True, default="", db_index=True)
    metric_name = models.CharField(max_length=100, db_index=True)
    metric_value = models.FloatField()
    unit = models.CharField(max_length=20, blank=True, default="")
    threshold_status = models.CharField(
        max_length=10, choices=ThresholdStatus.choices, default=ThresholdStatus.OK, db_index=True
    )
    correlation_id = CorrelationIdField(null=True, blank=True, db_index=True)
    metadata = models.JSONField(default=dict, blank=True)

    class Meta:
        db_table = "debugging_performance_snapshot"
        ordering = ["-timestamp"]
        indexes = [
            models.Index(fields=["metric_name", "timestamp"], name="dbg_snap_metric_time"),
            models.Index(fields=["threshold_status", "timestamp"], name="dbg_snap_status_time"),
            models.Index(fields=["metric_name", "metric_value"], name="dbg_snap_metric_value"),
        ]

    def __str__(self) -> str:
        return f"{self.layer}.{self.metric_name}={self.metric_value}"


class DebugConfiguration(models.Model):
    """Named, switchable runtime options (feature flags for debugging features)."""

    name = models.CharField(max_length=100, unique=True)
    enabled = models.BooleanField(default=True, db_index=True)
    description = models.TextField(blank=True, default="")
    config_data = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "debugging_configuration"
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class PerformanceThreshold(models.Model):
    """A warning/critical rule for one metric on one layer (optionally one component)."""

    metric_name = models.CharField(max_length=100, db_index=True)
    layer = models.CharField(max_length=20, choices=Layer.choices, db_index=True)
    component = models.CharField(max_length=190, blank=True, default="", help_text="Empty: every component.")
    warning_threshold = models.FloatField()
    critical_threshold = models.FloatField()
    direction = models.CharField(max_length=10, choices=Direction.choices, default=Direction.ABOVE)
    unit = models.CharField(max_length=20, blank=True, default="")
    description = models.CharField(max_length=190, blank=True, default="")
    enabled = models.BooleanField(default=True, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "debugging_performance_threshold"
        ordering = ["layer", "metric_name"]
        constraints = [
            models.UniqueConstraint(fields=["metric_name", "layer", "component"], name="dbg_threshold_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.layer}.{self.metric_name} {self.direction} {self.warning_threshold}/{self.critical_threshold}"

    def clean(self) -> None:
        from django.core.exceptions import ValidationError

        ordered = (
            self.critical_threshold >= self.warning_threshold
            if self.direction == Direction.ABOVE
            else self.critical_threshold <= self.warning_threshold
        )
        if not ordered:
            raise ValidationError(
                {"critical_threshold": "critical must be beyond warning in the rule's direction"}
            )


class FindingKind(models.TextChoices):
    N_PLUS_ONE = "n_plus_one", "N+1 queries"
    SLOW_QUERY = "slow_query", "Slow query"


class QueryFinding(models.Model):
    """One N+1 or slow-query problem found in one trace's database spans (``QueryAnalyzer``, derive
    thread), written by the record writer thread. One row per occurrence; ``fingerprint`` (kind +
    statement shape + route) is equal for every occurrence of the same problem, so occurrences can
    be aggregated across traces. ``statement`` is the scrubbed shape: no literal value is stored."""

    kind = models.CharField(max_length=20, choices=FindingKind.choices)
    fingerprint = models.CharField(max_length=64, help_text="sha256 hex of kind, statement shape and route.")
    correlation_id = CorrelationIdField(db_index=True)
    route = models.CharField(max_length=190, blank=True, default="", help_text="http.route, else the root span name.")
    table = models.CharField(max_length=190, blank=True, default="")
    operation = models.CharField(max_length=20, blank=True, default="")
    statement = models.TextField(help_text="Scrubbed: literals replaced by ?.")
    count = models.PositiveIntegerField(default=1, help_text="Executions of the statement in the trace.")
    total_ms = models.FloatField(default=0.0)
    max_ms = models.FloatField(default=0.0)
    advice = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now, db_index=True, help_text="When it was detected.")

    class Meta:
        db_table = "debugging_query_finding"
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["kind", "created_at"], name="dbg_qf_kind_created"),
            models.Index(fields=["table", "created_at"], name="dbg_qf_table_created"),
            models.Index(fields=["fingerprint", "created_at"], name="dbg_qf_fp_created"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} on {self.table or '?'} x{self.count} ({self.correlation_id})"

    def as_dict(self) -> dict[str, object]:
        """The API's and the reports' shape (``queries.FindingData.as_dict`` has the same keys)."""
        return {
            "kind": self.kind, "correlation_id": str(self.correlation_id), "route": self.route,
            "table": self.table, "operation": self.operation, "statement": self.statement,
            "fingerprint": self.fingerprint, "count": self.count, "total_ms": self.total_ms,
            "max_ms": self.max_ms, "advice": self.advice, "detected_at": self.created_at.timestamp(),
        }
