"""Two small tables: enough for one indexed lookup and a ten-query page."""

from __future__ import annotations

from django.db import models


class Category(models.Model):
    name = models.CharField(max_length=100, unique=True)

    class Meta:
        app_label = "bench_shop"


class Product(models.Model):
    category = models.ForeignKey(Category, on_delete=models.CASCADE, related_name="products")
    name = models.CharField(max_length=100)
    price_cents = models.IntegerField()
    stock = models.IntegerField(default=0)

    class Meta:
        app_label = "bench_shop"
        indexes = [models.Index(fields=["category", "price_cents"])]
