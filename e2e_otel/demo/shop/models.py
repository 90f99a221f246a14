"""Catalogue, cart and orders: just enough of a shop to make the four seed workflows real."""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.db import models


class Category(models.Model):
    name = models.CharField(max_length=100)
    slug = models.SlugField(max_length=100, unique=True)

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "categories"

    def __str__(self) -> str:
        return self.name


class Product(models.Model):
    category = models.ForeignKey(Category, on_delete=models.PROTECT, related_name="products")
    name = models.CharField(max_length=150)
    slug = models.SlugField(max_length=150, unique=True)
    description = models.TextField(blank=True, default="")
    price = models.DecimalField(max_digits=10, decimal_places=2)
    stock = models.PositiveIntegerField(default=0)
    is_active = models.BooleanField(default=True)

    class Meta:
        ordering = ["name"]
        indexes = [models.Index(fields=["category", "is_active"], name="shop_product_cat_active")]

    def __str__(self) -> str:
        return self.name


class Cart(models.Model):
    """One open cart per user; checkout empties it."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="cart")
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"cart of {self.user}"

    def total(self) -> Decimal:
        # self.items.all(): uses the prefetched rows when the caller prefetched them.
        items = self.items.all()  # type: ignore[attr-defined]
        return sum((item.product.price * item.quantity for item in items), Decimal(0))


class CartItem(models.Model):
    cart = models.ForeignKey(Cart, on_delete=models.CASCADE, related_name="items")
    product = models.ForeignKey(Product, on_delete=models.CASCADE)
    quantity = models.PositiveIntegerField()

    class Meta:
        ordering = ["id"]
        constraints = [models.UniqueConstraint(fields=["cart", "product"], name="shop_cartitem_unique")]

    def __str__(self) -> str:
        return f"{self.quantity} x {self.product}"


class Order(models.Model):
    class Status(models.TextChoices):
        PAID = "paid", "Paid"
        SHIPPED = "shipped", "Shipped"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="orders")
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PAID)
    total = models.DecimalField(max_digits=12, decimal_places=2)
    shipping_address = models.CharField(max_length=190)
    shipping_cost = models.DecimalField(max_digits=8, decimal_places=2, default=Decimal(0))
    # The workflow's correlation id, so support can jump from an order to its trace.
    correlation_id = models.CharField(max_length=36, blank=True, default="", db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"order #{self.pk} ({self.status})"


class OrderItem(models.Model):
    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="items")
    product = models.ForeignKey(Product, on_delete=models.PROTECT)
    quantity = models.PositiveIntegerField()
    unit_price = models.DecimalField(max_digits=10, decimal_places=2)

    def __str__(self) -> str:
        return f"{self.quantity} x {self.product}"
