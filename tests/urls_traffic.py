"""A URLconf with the routes issue #10 is about: DRF routers (trailing slash and not, nested in a
namespaced include), ``re_path`` with named and unnamed groups, the admin at ``/staff/``, and a custom
404 page that queries the database."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import include, path, re_path
from rest_framework import routers, viewsets
from rest_framework.request import Request
from rest_framework.response import Response

from tests.testapp.models import Item


class ArticleViewSet(viewsets.ViewSet):
    lookup_field = "slug"

    def list(self, request: Request, **kwargs: str) -> Response:
        return Response([])

    def retrieve(self, request: Request, slug: str | None = None, **kwargs: str) -> Response:
        return Response({"slug": slug})


class CommentViewSet(viewsets.ViewSet):
    def list(self, request: Request, **kwargs: str) -> Response:
        return Response([])

    def retrieve(self, request: Request, pk: str | None = None, **kwargs: str) -> Response:
        return Response({"pk": pk})


def archive(request: HttpRequest, *args: str, **kwargs: str) -> JsonResponse:
    return JsonResponse({"args": list(args), "kwargs": kwargs})


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """A site 404 page that reads the database, as a template showing the user would."""
    return HttpResponse(f"not found ({Item.objects.count()} items)", status=404)


router = routers.DefaultRouter()
router.register("articles", ArticleViewSet, basename="article")
flat = routers.DefaultRouter(trailing_slash=False)
flat.register("comments", CommentViewSet, basename="comment")

handler404 = not_found

urlpatterns = [
    path("api/", include(router.urls)),
    path("v2/", include(([path("shop/", include((flat.urls, "shop"), namespace="shop"))], "v2"), namespace="v2")),
    path("blog/", include([re_path(r"^(?P<year>[0-9]{4})/(\d+)/?$", archive)])),
    re_path(r"^files/(?P<path>.*)$", archive),
    path("staff/", admin.site.urls),
    path("", include("e2e_otel.urls")),
]
