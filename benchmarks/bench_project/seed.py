"""Create the benchmark schema and data: ``python -m bench_project.seed`` (from ``benchmarks/``).

Uses the e2e-otel settings with the SDK switched off, so the e2e-otel tables are migrated too but
no tracing runs while seeding.
"""

from __future__ import annotations

import json
import os


def main() -> None:
    os.environ["DJANGO_SETTINGS_MODULE"] = "bench_project.settings_e2e"
    os.environ["OTEL_SDK_DISABLED"] = "true"
    import django

    django.setup()
    from django.core.management import call_command
    from django.core.management.base import CommandError

    from bench_project.shop.models import Category, Product

    call_command("migrate", verbosity=0, interactive=False)
    Product.objects.all().delete()
    Category.objects.all().delete()
    categories = Category.objects.bulk_create(Category(name=f"category-{i:02d}") for i in range(12))
    Product.objects.bulk_create(
        Product(category=category, name=f"product-{category.pk}-{j:02d}",
                price_cents=100 + (j * 37 + category.pk * 11) % 5000, stock=j % 4)
        for category in categories for j in range(40)
    )
    thresholds = "not available"
    try:
        call_command("setup_debugging_defaults", verbosity=0)
        thresholds = "seeded by setup_debugging_defaults"
    except CommandError as exc:
        thresholds = f"not seeded: {exc}"
    print(json.dumps({"categories": Category.objects.count(), "products": Product.objects.count(),
                      "thresholds": thresholds}))


if __name__ == "__main__":
    main()
