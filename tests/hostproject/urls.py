"""The README's placement: e2e-otel's URLs included at the root."""

from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.urls import include, path


def ping(request: HttpRequest) -> HttpResponse:
    return HttpResponse("pong")


urlpatterns = [
    path("ping/", ping),
    path("admin/", admin.site.urls),
    path("", include("e2e_otel.urls")),
]
