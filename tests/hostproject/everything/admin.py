"""The register-everything pattern found in real projects (it runs before e2e_otel's admin)."""

import os

from django.apps import apps
from django.contrib import admin
from django.contrib.admin.sites import AlreadyRegistered

if os.environ.get("HOST_CUSTOM_ADMIN") == "1":
    from e2e_otel.models import WorkflowSession

    @admin.register(WorkflowSession)
    class HostWorkflowSessionAdmin(admin.ModelAdmin):
        list_display = ("correlation_id", "status")


for model in apps.get_models():
    try:  # noqa: SIM105  (written as the issue quotes it)
        admin.site.register(model)
    except AlreadyRegistered:
        pass
