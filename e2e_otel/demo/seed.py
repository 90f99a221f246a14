"""Demo data: a catalogue, three shop customers and an admin. Idempotent; passwords are new per run.

The demo only ever writes users with its own ``e2e-demo-`` names, and only into a database it created
(an empty one, which it then marks with the :data:`MARKER` DebugConfiguration row) unless told to
``--reset``: pointing DATABASE_URL at a real project's database must not hand out its accounts.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from decimal import Decimal

CATALOGUE: dict[str, list[tuple[str, str]]] = {
    "Books": [("The Pragmatic Tracer", "34.90"), ("Distributed Systems Field Guide", "49.00"),
              ("SQL Performance Explained", "29.50"), ("Designing Data Pipelines", "44.00"),
              ("Observability in Practice", "39.90"), ("The Latency Book", "24.00")],
    "Coffee": [("Espresso Roast 1kg", "21.90"), ("Filter Blend 500g", "12.50"), ("Decaf Colombia 250g", "8.90"),
               ("Cold Brew Kit", "27.00"), ("Ceramic Dripper", "18.00"), ("Burr Grinder", "89.00")],
    "Gadgets": [("USB-C Hub", "39.00"), ("Mechanical Keyboard", "119.00"), ("Noise-cancelling Headphones", "199.00"),
                ("Desk Lamp", "45.00"), ("Webcam HD", "59.00"), ("Laptop Stand", "35.00")],
    "Garden": [("Herb Planter", "19.90"), ("Watering Can", "14.50"), ("Pruning Shears", "22.00"),
               ("Seed Collection", "9.90"), ("Compost Bin", "64.00"), ("Garden Gloves", "7.50")],
}
CUSTOMERS = ("e2e-demo-alice", "e2e-demo-bob", "e2e-demo-carol")
ADMIN_USERNAME = "e2e-demo-admin"
MARKER = "e2e_demo"
STOCK = 100_000


@dataclass(frozen=True)
class SeedResult:
    customers: tuple[str, ...]
    customer_password: str
    admin_username: str
    admin_password: str
    product_ids: tuple[int, ...]
    category_slugs: tuple[str, ...]


class ForeignDatabase(Exception):
    """The database has tables but no demo marker: it belongs to something else."""


def check_database_is_demo(*, reset: bool = False) -> bool:
    """Raise :class:`ForeignDatabase` unless the database is empty, marked as the demo's, or ``reset``.

    Call before ``migrate``. Returns whether the database was empty (freshly created).
    """
    from django.db import DatabaseError, connection

    tables = set(connection.introspection.table_names())
    if not tables:
        return True
    if reset:
        return False
    marked = False
    if "debugging_configuration" in tables:
        from e2e_otel.models import DebugConfiguration

        try:
            marked = DebugConfiguration.objects.filter(name=MARKER).exists()
        except DatabaseError:
            marked = False
    if not marked:
        raise ForeignDatabase(
            f"the database is not empty and was not created by e2e-otel demo ({len(tables)} tables, no "
            f"{MARKER!r} marker); use an empty database, or pass --reset to use this one anyway "
            "(the demo adds its tables and e2e-demo-* users; other users are never changed)"
        )
    return False


def seed(*, customer_password: str | None = None, admin_password: str | None = None) -> SeedResult:
    """Create or refresh the demo catalogue and users; returns the credentials to print once."""
    from django.contrib.auth import get_user_model
    from django.db import transaction
    from django.utils.text import slugify
    from rest_framework.authtoken.models import Token

    from e2e_otel.models import DebugConfiguration

    from .shop.models import Category, Product

    customer_password = customer_password or secrets.token_urlsafe(9)
    admin_password = admin_password or secrets.token_urlsafe(12)
    user_model = get_user_model()
    with transaction.atomic():
        DebugConfiguration.objects.update_or_create(
            name=MARKER, defaults={"enabled": True, "description": "This database was created by e2e-otel demo."})
        for category_name, products in CATALOGUE.items():
            category, _ = Category.objects.get_or_create(slug=slugify(category_name),
                                                         defaults={"name": category_name})
            for name, price in products:
                Product.objects.update_or_create(
                    slug=slugify(name),
                    defaults={"category": category, "name": name, "price": Decimal(price), "stock": STOCK,
                              "is_active": True, "description": f"{name} from the {category_name} aisle."},
                )
        for username in CUSTOMERS:
            user, _ = user_model.objects.get_or_create(
                username=username,
                defaults={"email": f"{username}@shop.example", "first_name": username.rsplit("-", 1)[-1].title()},
            )
            user.set_password(customer_password)
            user.save()
        admin, _ = user_model.objects.get_or_create(username=ADMIN_USERNAME,
                                                     defaults={"email": "admin@shop.example"})
        admin.is_staff = admin.is_superuser = True  # type: ignore[attr-defined]
        admin.set_password(admin_password)
        admin.save()
        # Tokens handed out by an earlier run die with that run's passwords.
        Token.objects.filter(user__username__in=(*CUSTOMERS, ADMIN_USERNAME)).delete()
    return SeedResult(
        customers=CUSTOMERS,
        customer_password=customer_password,
        admin_username=ADMIN_USERNAME,
        admin_password=admin_password,
        product_ids=tuple(Product.objects.filter(is_active=True).order_by("pk").values_list("pk", flat=True)),
        category_slugs=tuple(Category.objects.order_by("slug").values_list("slug", flat=True)),
    )
