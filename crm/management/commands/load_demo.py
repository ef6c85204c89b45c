from __future__ import annotations

from argparse import ArgumentParser
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from crm.exceptions import ServiceError
from crm.services import demo


class Command(BaseCommand):
    help = (
        "Load the demo organisation (roles, profiles, groups, users with known passwords, "
        "a custom module and about 200 records) into an empty CRM, and print its logins."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "--path",
            type=Path,
            default=Path(settings.BASE_DIR) / "fixtures" / "demo.json",
            help="The file describing the demo (default: %(default)s).",
        )

    def handle(self, *args: Any, path: Path, **options: Any) -> None:
        try:
            summary = demo.load(path=path)
        except ServiceError as exc:
            raise CommandError(exc.detail) from exc
        self.stdout.write(self.style.SUCCESS(summary.message))
        if summary.counts:
            self.stdout.write(
                "Created: " + ", ".join(f"{k} {n}" for k, n in summary.counts.items())
            )
            self.stdout.write(
                "Records: " + ", ".join(f"{m} {n}" for m, n in summary.records.items())
            )
        self._write_logins(summary.logins)

    def _write_logins(self, logins: list[demo.DemoLogin]) -> None:
        self.stdout.write("\nLogins (passwords as shipped in the demo file):")
        rows = [("username", "password", "role", "what they can see")]
        rows += [(x.username, x.password, x.role, x.note) for x in logins]
        widths = [max(len(row[i]) for row in rows) for i in range(3)]
        indent = " " * (sum(widths) + 8)
        for i, row in enumerate(rows):
            cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
            self.stdout.write(f"  {'  '.join(cells)}  {row[3]}")
            if i:
                seen = logins[i - 1].visible
                self.stdout.write(indent + " · ".join(f"{m} {n}" for m, n in seen.items()))
