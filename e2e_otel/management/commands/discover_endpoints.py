"""``manage.py discover_endpoints [--format text|json]``: every route as a template (the form of workflow
types, components and labels), its view, methods and workflow rule; then the WORKFLOWS patterns that
match nothing. JSON also gives each route's raw ``http.route`` pattern."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from ...discovery import discover_endpoints, unmatched_rules


class Command(BaseCommand):
    help = "List URL routes (as route templates) with their workflow rule; flag rules matching nothing."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--format", choices=["text", "json"], default="text", dest="fmt")

    def handle(self, *args: Any, **options: Any) -> None:
        endpoints = discover_endpoints()
        unmatched = unmatched_rules(endpoints)
        if options["fmt"] == "json":
            body = {"endpoints": [asdict(e) for e in endpoints], "unmatched_rules": [asdict(u) for u in unmatched]}
            self.stdout.write(json.dumps(body, indent=2))
            return
        rows = [(",".join(e.methods), e.route, f"(not a workflow: {e.not_workflow})" if e.not_workflow
                 else _workflows(e.workflows), e.view) for e in endpoints]
        widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(_HEADER)]
        for row in [_HEADER, tuple("-" * w for w in widths), *rows]:
            self.stdout.write("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        self.stdout.write(f"\n{len(endpoints)} endpoints")
        for rule in unmatched:
            close = f" (close: {', '.join(rule.close)})" if rule.close else ""
            self.stdout.write(f"WORKFLOWS rule {rule.pattern!r} for workflow {rule.workflow!r} "
                              f"matches no URL pattern{close}")


_HEADER = ("methods", "route", "workflow", "view")


def _workflows(workflows: dict[str, str]) -> str:
    names = sorted(set(workflows.values()))
    if len(names) == 1:
        return f"{names[0]} ({','.join(sorted(workflows))})"
    return "; ".join(f"{m}:{w}" for m, w in sorted(workflows.items())) or "-"
