from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from mailconnector import manifest


class Command(BaseCommand):
    help = "Write the Outlook add-in's XML manifest for this CRM (to sideload or deploy)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--url",
            default=None,
            help="the CRM's public https address (default: CRM_BASE_URL)",
        )
        parser.add_argument("--name", default=manifest.DEFAULT_NAME, help="the add-in's name")
        parser.add_argument(
            "--id", default="", help="the add-in's GUID (default: derived from the URL)"
        )
        parser.add_argument("--output", type=Path, help="write to this file (default: stdout)")
        parser.add_argument(
            "--pane-url",
            default="",
            help="where the task pane's files are hosted, if not by the CRM (<url>/addin/)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        url = options["url"] or getattr(settings, "CRM_BASE_URL", "")
        if not url:
            raise CommandError("Give the CRM's address with --url https://crm.example.com.")
        installation = manifest.Installation(
            url=url, name=options["name"], id=options["id"], pane_url=options["pane_url"]
        )
        try:
            xml = manifest.build(installation)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        output: Path | None = options["output"]
        if output is None:
            self.stdout.write(xml.decode("utf-8"), ending="")
            return
        try:
            output.write_bytes(xml)
        except OSError as exc:
            raise CommandError(f"Cannot write {output}: {exc.strerror}.") from None
        self.stdout.write(
            f"Wrote the manifest for {installation.base} to {output} "
            f"(add-in id {installation.addin_id})."
        )
