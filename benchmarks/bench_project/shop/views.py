"""The two measured views. Both are deterministic so every configuration does identical work."""

from __future__ import annotations

from django.db.models import Count
from django.http import HttpRequest, JsonResponse

from .models import Category, Product

#: How many SQL queries each view runs; the worker checks this during warm-up.
QUERIES = {"one": 1, "heavy": 10}


def one(request: HttpRequest) -> JsonResponse:
    """One ORM query (primary-key lookup)."""
    product = Product.objects.filter(pk=7).values("id", "name", "price_cents").first()
    return JsonResponse({"product": product})


def heavy(request: HttpRequest) -> JsonResponse:
    """Ten queries: a category list, the cheapest products of eight categories, a stock total."""
    categories = list(Category.objects.order_by("id").values_list("id", "name")[:8])
    cheapest = {
        name: list(Product.objects.filter(category_id=cid).order_by("price_cents")
                   .values_list("name", flat=True)[:3])
        for cid, name in categories
    }
    in_stock = Product.objects.filter(stock__gt=0).aggregate(n=Count("id"))["n"]
    return JsonResponse({"cheapest": cheapest, "in_stock": in_stock})
