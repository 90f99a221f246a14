"""A pretend payment gateway: a remote call with latency that declines at the configured rate."""

from __future__ import annotations

import random
import time
from decimal import Decimal

from opentelemetry import trace
from opentelemetry.trace import SpanKind
from rest_framework import status
from rest_framework.exceptions import APIException

from .faults import get_faults

tracer = trace.get_tracer("e2e_otel.demo.shop")

# Reserved .invalid name: nothing is ever sent; the latency is simulated.
PAYMENT_HOST = "payments.demo.invalid"


class PaymentDeclined(APIException):
    """The gateway refused the charge: 402 with code ``payment_declined``.

    A decline is the card's answer, not a broken gateway, so it is not a 5xx; clients recognise it by
    the code. The workflow is still closed as failed (see ``CheckoutView``).
    """

    status_code = status.HTTP_402_PAYMENT_REQUIRED
    default_detail = "The payment provider declined the charge."
    default_code = "payment_declined"


def charge(amount: Decimal, method: str) -> str:
    """Charge ``amount``; returns a payment reference or raises :class:`PaymentDeclined`.

    The span is a CLIENT span with HTTP client attributes like a real call to a provider would be, so
    it lands on the external layer; the exception is recorded on it before it propagates.
    """
    with tracer.start_as_current_span(
        "payment.charge",
        kind=SpanKind.CLIENT,
        attributes={"http.request.method": "POST", "server.address": PAYMENT_HOST, "peer.service": "demo-payments",
                    "payment.method": method, "payment.amount": float(amount)},
    ):
        time.sleep(random.uniform(0.02, 0.06))
        schedule = get_faults().payment_failure
        if schedule is not None and schedule.fire():
            raise PaymentDeclined(f"card issuer declined the charge of {amount} EUR (do_not_honor)")
        return f"pay_{random.getrandbits(48):012x}"
