"""Django admin for the six record models, with a timing waterfall on each workflow session.

Span-derived rows (sessions, steps, errors, snapshots) are read-only here: they mirror what the
spans said. Only user-owned fields are editable (error resolution, thresholds, configurations).
Request thread; ``register_admins`` runs once, when ``django.contrib.admin`` autodiscovers this module.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from django.contrib import admin, messages
from django.db.models import Model, QuerySet
from django.http import HttpRequest, HttpResponse
from django.utils import timezone

from .conf import get_config
from .models import (
    DebugConfiguration,
    ErrorLog,
    Layer,
    PerformanceSnapshot,
    PerformanceThreshold,
    QueryFinding,
    TraceStep,
    WorkflowSession,
)
from .propagation import parse_correlation_id

#: bar colour per layer in the waterfall (also used for the legend)
LAYER_COLOURS: dict[str, str] = {
    "frontend": "#8e44ad",
    "api": "#2e86de",
    "database": "#e67e22",
    "cache": "#16a085",
    "external": "#d4a017",
    "internal": "#7f8c8d",
    "system": "#34495e",
}
logger = logging.getLogger(__name__)

#: failed steps: a colour no layer uses, plus a hatch, so failure never reads as a layer
FAILED_COLOUR = "#d0021b"
MAX_WATERFALL_STEPS = 500
MAX_WATERFALL_ERRORS = 50
MIN_BAR_PERCENT = 0.4


class CorrelationSearchMixin:
    """Search by correlation id in any form (UUID with dashes or 32 hex digits) as an exact match."""

    def get_search_results(self, request: HttpRequest, queryset: QuerySet[Any],
                           search_term: str) -> tuple[QuerySet[Any], bool]:
        trace_id = parse_correlation_id(search_term.strip())
        if trace_id is not None:
            return queryset.filter(correlation_id=uuid.UUID(int=trace_id)), False
        return super().get_search_results(request, queryset, search_term)  # type: ignore[misc]


class ReadOnlyRecordAdmin(CorrelationSearchMixin, admin.ModelAdmin):
    """Rows written by the record writer: viewable and deletable, never added or edited by hand."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


def waterfall(session: WorkflowSession, steps: list[TraceStep],
              errors: list[ErrorLog] | None = None) -> dict[str, Any]:
    """Bars positioned by start offset and duration as percentages of the session's time span;
    each failed step carries its status, its error message and its ErrorLog group."""
    error_of = {error.span_id: error for error in reversed(errors or []) if error.span_id}
    starts = [step.start_time for step in steps] + [session.start_time]
    t0 = min(starts)
    ends = [step.end_time or step.start_time for step in steps]
    if session.end_time:
        ends.append(session.end_time)
    t_end = max([*ends, t0])
    total_ms = max((t_end - t0).total_seconds() * 1000, 0.001)
    depth_of: dict[str, int] = {}
    rows = []
    for step in steps:
        depth = depth_of.get(step.parent_span_id, -1) + 1 if step.parent_span_id else 0
        depth_of[step.span_id] = depth
        offset_ms = (step.start_time - t0).total_seconds() * 1000
        duration_ms = step.duration_ms
        if duration_ms is None:
            duration_ms = ((step.end_time - step.start_time).total_seconds() * 1000) if step.end_time else 0.0
        left = min(100.0, max(0.0, offset_ms / total_ms * 100))
        width = max(MIN_BAR_PERCENT, min(100.0 - left, duration_ms / total_ms * 100))
        error = error_of.get(step.span_id)
        failed = step.status == "error" or error is not None
        rows.append({
            "step": step,
            "offset_ms": _ms(offset_ms),
            "duration_ms": _ms(duration_ms),
            "left": f"{left:.3f}",
            "width": f"{width:.3f}",
            "indent": min(depth, 8) * 12,
            "colour": FAILED_COLOUR if failed else LAYER_COLOURS.get(step.layer, "#95a5a6"),
            "failed": failed,
            "error": error,
        })
    return {
        "rows": rows,
        "total_ms": _ms(total_ms),
        "failed_count": sum(1 for row in rows if row["failed"]),
        "failed_colour": FAILED_COLOUR,
        "legend": [(label, LAYER_COLOURS[value]) for value, label in Layer.choices if value in LAYER_COLOURS],
    }


def _ms(value: float) -> str:
    """Milliseconds for people: one decimal below 100 ms, whole numbers above (never 665.4839999)."""
    return f"{value:,.1f}" if abs(value) < 100 else f"{value:,.0f}"


def trace_link(session: WorkflowSession) -> str | None:
    template = get_config().TRACE_URL_TEMPLATE
    return template.replace("{trace_id}", session.trace_id) if template else None


class WorkflowSessionAdmin(ReadOnlyRecordAdmin):
    change_form_template = "admin/e2e_otel/workflowsession/change_form.html"
    list_display = ("correlation_id", "workflow_type", "status", "user_id", "service", "start_time",
                    "duration_ms", "step_count", "error_count")
    list_filter = ("status", "workflow_type_source", "service", "environment", "start_time")
    search_fields = ("workflow_type", "user_id")
    date_hierarchy = "start_time"
    ordering = ("-start_time",)

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "",
                    extra_context: dict[str, Any] | None = None) -> HttpResponse:
        context = dict(extra_context or {})
        session = self.get_object(request, object_id)
        if session is not None:
            steps = list(session.steps.order_by("start_time", "id")[:MAX_WATERFALL_STEPS])
            errors = list(ErrorLog.objects.filter(correlation_id=session.correlation_id)
                          .order_by("-last_seen")[:MAX_WATERFALL_ERRORS])
            context["waterfall"] = waterfall(session, steps, errors)
            context["session_errors"] = errors
            context["trace_url"] = trace_link(session)
            context["steps_truncated"] = session.steps.count() > MAX_WATERFALL_STEPS
        return super().change_view(request, object_id, form_url, extra_context=context)


class TraceStepAdmin(ReadOnlyRecordAdmin):
    list_display = ("name", "layer", "component", "operation", "status", "start_time", "duration_ms",
                    "workflow_session")
    list_filter = ("layer", "status", "start_time")
    search_fields = ("component", "operation", "name", "span_id")
    list_select_related = ("workflow_session",)
    raw_id_fields = ("workflow_session",)


class ErrorLogAdmin(CorrelationSearchMixin, admin.ModelAdmin):
    list_display = ("error_type", "layer", "component", "severity", "occurrences", "resolved", "last_seen",
                    "correlation_id")
    list_filter = ("resolved", "severity", "layer", "category", "last_seen")
    search_fields = ("error_type", "error_message", "fingerprint", "component")
    actions = ["mark_resolved"]
    fields = ("correlation_id", "span_id", "timestamp", "last_seen", "layer", "component", "error_type",
              "error_message", "stack_trace", "fingerprint", "occurrences", "severity", "category", "user_id",
              "metadata", "resolved", "resolved_at", "resolved_by", "resolution_notes")
    readonly_fields = tuple(f for f in fields if f not in ("resolved", "resolution_notes"))

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: ErrorLog, form: Any, change: bool) -> None:
        if obj.resolved and not obj.resolved_at:
            obj.resolved_at = timezone.now()
            obj.resolved_by = request.user.get_username()[:150]
        elif not obj.resolved:
            obj.resolved_at, obj.resolved_by = None, ""
        super().save_model(request, obj, form, change)

    @admin.action(description="Mark selected errors resolved")
    def mark_resolved(self, request: HttpRequest, queryset: QuerySet[ErrorLog]) -> None:
        updated = queryset.filter(resolved=False).update(
            resolved=True, resolved_at=timezone.now(), resolved_by=request.user.get_username()[:150]
        )
        self.message_user(request, f"{updated} error group(s) marked resolved.", messages.SUCCESS)


class PerformanceSnapshotAdmin(ReadOnlyRecordAdmin):
    list_display = ("timestamp", "layer", "component", "metric_name", "metric_value", "unit",
                    "threshold_status", "correlation_id")
    list_filter = ("threshold_status", "layer", "metric_name", "timestamp")
    search_fields = ("component", "metric_name")
    date_hierarchy = "timestamp"


class QueryFindingAdmin(ReadOnlyRecordAdmin):
    list_display = ("created_at", "kind", "table", "route", "count", "max_ms", "correlation_id")
    list_filter = ("kind", "created_at")
    search_fields = ("table", "route")


class DebugConfigurationAdmin(admin.ModelAdmin):
    list_display = ("name", "enabled", "description", "updated_at")
    list_filter = ("enabled",)
    search_fields = ("name", "description")


class PerformanceThresholdAdmin(admin.ModelAdmin):
    list_display = ("metric_name", "layer", "component", "warning_threshold", "critical_threshold",
                    "direction", "unit", "enabled")
    list_filter = ("layer", "direction", "enabled")
    list_editable = ("enabled",)
    search_fields = ("metric_name", "component", "description")


#: Our admin for each model, registered by ``register_admins``.
MODEL_ADMINS: tuple[tuple[type[Model], type[admin.ModelAdmin[Any]]], ...] = (
    (WorkflowSession, WorkflowSessionAdmin),
    (TraceStep, TraceStepAdmin),
    (ErrorLog, ErrorLogAdmin),
    (PerformanceSnapshot, PerformanceSnapshotAdmin),
    (QueryFinding, QueryFindingAdmin),
    (DebugConfiguration, DebugConfigurationAdmin),
    (PerformanceThreshold, PerformanceThresholdAdmin),
)


def register_admins(site: admin.AdminSite) -> None:
    """Register our ModelAdmins, coexisting with host code that already registered our models.

    Projects often register every model from one app (``for model in apps.get_models():
    admin.site.register(model)``); when that app comes before e2e_otel, a plain ``register`` here
    raised ``AlreadyRegistered`` out of ``django.setup()``. A registration with the bare
    ``ModelAdmin`` is taken over (ours shows the waterfall and keeps span rows read-only); one with
    the host's own ModelAdmin subclass is left alone. Each case is logged once.
    """
    taken: list[str] = []
    kept: list[str] = []
    for model, model_admin in MODEL_ADMINS:
        existing = site._registry.get(model)  # is_registered/get_model_admin: not all of Django 4.2
        try:
            if isinstance(existing, model_admin):
                continue  # ours already (registered twice): nothing to say
            if existing is not None and type(existing) is not admin.ModelAdmin:
                kept.append(f"{model.__name__} ({type(existing).__module__}.{type(existing).__qualname__})")
                continue
            if existing is not None:
                site.unregister(model)
                taken.append(model.__name__)
            site.register(model, model_admin)
        except Exception:  # the admin is a convenience: never stop the host's start-up for it
            logger.exception("e2e-otel: could not register the admin for %s", model.__name__)
    if taken:
        logger.info("e2e-otel: replaced the plain admin registration of %s with e2e-otel's admin",
                    ", ".join(taken))
    if kept:
        logger.info("e2e-otel: %s already registered in the admin by the project; that registration is "
                    "kept and e2e-otel's admin pages are not used", ", ".join(kept))


register_admins(admin.site)
