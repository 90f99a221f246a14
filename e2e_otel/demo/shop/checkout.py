"""Checkout: reserve stock, quote shipping, charge, create the order — one transaction, named steps.

Each step is its own span so the waterfall shows where the time went; a declined payment rolls the
whole transaction back (stock included) and propagates as :class:`PaymentDeclined`.
"""

from __future__ import annotations

import time
from decimal import Decimal

from django.db import transaction
from django.db.models import F
from opentelemetry import trace
from rest_framework.exceptions import APIException, ValidationError

import e2e_otel

from . import payments
from .faults import SLOW_CHECKOUT_SECONDS, get_faults
from .models import CartItem, Order, OrderItem, Product

tracer = trace.get_tracer("e2e_otel.demo.shop")

FREE_SHIPPING_FROM = Decimal("50.00")


class OutOfStock(APIException):
    status_code = 409
    default_detail = "Some items are no longer in stock."
    default_code = "out_of_stock"


def place_order(user, *, shipping_address: str, payment_method: str) -> Order:  # type: ignore[no-untyped-def]
    with transaction.atomic():
        with tracer.start_as_current_span("checkout.reserve_stock"):
            items = list(CartItem.objects.select_related("product").filter(cart__user=user))
            if not items:
                raise ValidationError({"cart": "the cart is empty"})
            # Lock the rows so two checkouts can't both take the last unit.
            locked = {p.pk: p for p in Product.objects.select_for_update().filter(pk__in=[i.product_id for i in items])}
            short = [i.product.name for i in items if locked[i.product_id].stock < i.quantity]
            if short:
                raise OutOfStock(f"not enough stock for: {', '.join(short)}")
            for item in items:
                Product.objects.filter(pk=item.product_id).update(stock=F("stock") - item.quantity)
        subtotal = sum((i.product.price * i.quantity for i in items), Decimal(0))

        with tracer.start_as_current_span("checkout.shipping_quote") as span:
            schedule = get_faults().slow_checkout
            if schedule is not None and schedule.fire():
                # The fault: a synchronous call to a slow carrier API on the request path.
                span.set_attribute("demo.fault", "slow_checkout")
                time.sleep(SLOW_CHECKOUT_SECONDS)
            shipping = Decimal(0) if subtotal >= FREE_SHIPPING_FROM else Decimal("4.90")

        total = subtotal + shipping
        payments.charge(total, payment_method)

        with tracer.start_as_current_span("checkout.create_order"):
            order = Order.objects.create(
                user=user,
                total=total,
                shipping_cost=shipping,
                shipping_address=shipping_address,
                correlation_id=e2e_otel.get_correlation_id() or "",
            )
            OrderItem.objects.bulk_create(
                OrderItem(order=order, product=i.product, quantity=i.quantity, unit_price=i.product.price)
                for i in items
            )
            CartItem.objects.filter(cart__user=user).delete()
    return order
