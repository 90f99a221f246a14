"""``manage.py debugging_report [--since 24h] [--format text|markdown|json] [--output FILE] [--top N]``.

Prints (or writes) the report of :mod:`e2e_otel.reports` for the last ``--since`` window.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ...report_render import FORMATS, render
from ...reports import build_report, parse_since

MAX_TOP = 50


class Command(BaseCommand):
    help = "Report workflows, slowest steps, threshold breaches, unresolved errors and query findings."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--since", default="24h", help="Window ending now: 90m, 24h, 7d, 2w (default 24h).")
        parser.add_argument("--format", choices=sorted(FORMATS), default="text", dest="fmt")
        parser.add_argument("--output", default=None, help="Write to this file instead of stdout.")
        parser.add_argument("--top", type=int, default=5, help=f"Slowest steps per layer, 1..{MAX_TOP} (default 5).")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            window = parse_since(options["since"])
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        if not 1 <= options["top"] <= MAX_TOP:  # the API's bound; a huge LIMIT is a database error
            raise CommandError(f"--top must be between 1 and {MAX_TOP}")
        text = render(build_report(since=window, top=options["top"]), options["fmt"])
        if options["output"]:
            Path(options["output"]).write_text(text, encoding="utf-8")
            self.stderr.write(f"report written to {options['output']}")
        else:
            self.stdout.write(text, ending="")
