"""The two measured views. Both are deterministic so every configuration does identical work."""

from __future__ import annotations

from django.db.models import Avg, Count, Max, Min
from django.http import HttpRequest, JsonResponse

from .models import Category, Product

#: How many SQL queries each view runs; the worker checks this during warm-up.
QUERIES = {"one": 1, "heavy": 10}


def one(request: HttpRequest) -> JsonResponse:
    """One ORM query (primary-key lookup)."""
    product = Product.objects.filter(pk=7).values("id", "name", "price_cents").first()
    return JsonResponse({"product": product})


def heavy(request: HttpRequest) -> JsonResponse:
    """Ten different queries, like a dashboard page. Deliberately ten distinct statements: a loop of
    one statement would be an N+1, which e2e-otel reports as a finding; that path is not the
    steady-state cost this benchmark is about."""
    products = Product.objects.all()
    page = {
        "categories": list(Category.objects.order_by("id").values_list("name", flat=True)[:8]),
        "products": products.count(),
        "in_stock": products.filter(stock__gt=0).count(),
        "cheapest": products.order_by("price_cents").values_list("name", flat=True).first(),
        "dearest": products.order_by("-price_cents").values_list("name", flat=True).first(),
        "category_3": list(products.filter(category__name="category-03").order_by("price_cents")
                           .values_list("name", flat=True)[:3]),
        "price": products.aggregate(avg=Avg("price_cents"), low=Min("price_cents"), high=Max("price_cents")),
        "stocked_categories": list(Category.objects.filter(products__stock__gt=2).distinct()
                                   .values_list("id", flat=True)[:5]),
        "by_name": products.filter(name="product-1-07").values("id", "price_cents").first(),
        "category_count": Category.objects.annotate(n=Count("products")).filter(n__gt=0).count(),
    }
    return JsonResponse(page)
