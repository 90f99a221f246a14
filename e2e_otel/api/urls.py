"""Routes of the debugging API, relative to ``api/v1/debugging/`` (see ``e2e_otel.urls``)."""

from __future__ import annotations

from django.urls import URLPattern, URLResolver, include, path
from drf_spectacular.views import SpectacularAPIView
from rest_framework.routers import SimpleRouter

from . import schema as _schema  # noqa: F401  (registers the auth scheme)
from . import views
from .endpoints import EndpointDiscoveryView
from .findings import QueryFindingsView
from .permissions import AUTHENTICATION_CLASSES, IsStaffOrApiKey
from .reports import DebuggingReportView

API_PREFIX = "api/v1/debugging/"

router = SimpleRouter()
router.register("workflow-sessions", views.WorkflowSessionViewSet, basename="workflow-session")
router.register("trace-steps", views.TraceStepViewSet, basename="trace-step")
router.register("performance-snapshots", views.PerformanceSnapshotViewSet, basename="performance-snapshot")
router.register("error-logs", views.ErrorLogViewSet, basename="error-log")
router.register("debug-configurations", views.DebugConfigurationViewSet, basename="debug-configuration")
router.register("performance-thresholds", views.PerformanceThresholdViewSet, basename="performance-threshold")

api_patterns: list[URLPattern | URLResolver] = [
    path("system-health/", views.SystemHealthView.as_view(), name="system-health"),
    path("query-findings/", QueryFindingsView.as_view(), name="query-findings"),
    path("reports/", DebuggingReportView.as_view(), name="reports"),
    path("endpoints/", EndpointDiscoveryView.as_view(), name="endpoints"),
    *router.urls,
]


class DebuggingSchemaView(SpectacularAPIView):
    """OpenAPI 3 schema of the debugging API only (paths shown as if mounted at the site root)."""

    authentication_classes = AUTHENTICATION_CLASSES
    permission_classes = [IsStaffOrApiKey]
    patterns = [path(API_PREFIX, include(api_patterns))]
    custom_settings = {
        "TITLE": "e2e-otel debugging API",
        "VERSION": "1",
        "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums",
                                 "e2e_otel.api.schema.document_error_responses"],
    }


urlpatterns: list[URLPattern | URLResolver] = [
    path("schema/", DebuggingSchemaView.as_view(), name="schema"),
    *api_patterns,
]
