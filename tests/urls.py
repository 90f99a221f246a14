from django.contrib import admin
from django.urls import include, path

from tests.testapp import views

urlpatterns = [
    path("ping/", views.ping),
    path("items/", views.items),
    path("items/<int:pk>/", views.item_detail),
    path("items-n-plus-one/", views.items_n_plus_one),
    path("raw-sql/", views.raw_sql),
    path("slow/", views.slow),
    path("slow-sql/", views.slow_sql),
    path("fail/", views.fail),
    path("login/", views.login),
    path("pid/", views.pid),
    path("call-out/", views.call_out),
    path("browser/checkout/", views.browser_checkout),
    path("admin/", admin.site.urls),
    path("", include("e2e_otel.urls")),
]
