from __future__ import annotations

from django.urls import path

from bench_project.shop import views

urlpatterns = [
    path("one/", views.one),
    path("heavy/", views.heavy),
]
