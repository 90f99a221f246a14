"""A catch-all before e2e-otel's include. ``static("/")`` (``MEDIA_URL = "/"``) produces exactly this
pattern under DEBUG; it is written out so the URLconf shadows e2e-otel with DEBUG off too."""

from django.urls import include, path, re_path
from django.views.static import serve

from tests.hostproject.urls import ping

urlpatterns = [
    path("ping/", ping),
    re_path(r"^(?P<path>.*)$", serve, {"document_root": "/nonexistent"}),
    path("", include("e2e_otel.urls")),
]
