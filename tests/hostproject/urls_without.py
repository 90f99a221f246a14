"""A host URLconf that does not include e2e-otel's URLs."""

from django.urls import path

from tests.hostproject.urls import ping

urlpatterns = [path("ping/", ping)]
