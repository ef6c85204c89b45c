from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from crm.email import sources
from crm.exceptions import ServiceError
from crm.models import User
from crm.services import mail_import


class Command(BaseCommand):
    help = "Import emails from .eml files, mbox files or Maildir folders, optionally onto a record."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("paths", nargs="+", type=Path, help=".eml, mbox or Maildir")
        parser.add_argument("--link", metavar="MODULE:NUMBER", help="e.g. Contacts:CON12")
        parser.add_argument("--user", default=None, help="who imports (default: a superuser)")

    def handle(self, *args: Any, **options: Any) -> None:
        paths: list[Path] = options["paths"]
        for path in paths:
            if not path.exists():
                raise CommandError(f"{path} does not exist.")
        actor = self._actor(options["user"])
        record = None
        if options["link"]:
            module, _, number = options["link"].partition(":")
            try:
                record = mail_import.find_target(actor=actor, module_name=module, number=number)
            except ServiceError as exc:
                raise CommandError(f"Cannot link to {options['link']}: {exc.detail}") from exc
        try:
            total = sources.count(paths)
            with tqdm(total=total, unit="email", file=self.stdout) as bar:
                report = mail_import.import_messages(
                    messages=sources.read(paths),
                    actor=actor,
                    record=record,
                    progress=lambda origin: bar.update(1),
                )
        except (OSError, ValueError) as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(
            f"{report.stored} stored, {report.already_there} already there, "
            f"{report.linked} newly linked, {len(report.failed)} failed."
        )
        for origin, reason in report.failed:
            self.stderr.write(f"  {origin}: {reason}")
        if report.failed:
            raise CommandError(f"{len(report.failed)} emails could not be imported (listed above).")

    def _actor(self, username: str | None) -> User:
        users = User.objects.filter(is_active=True)
        user = (
            users.filter(username=username)
            if username
            else users.filter(is_superuser=True).order_by("pk")
        ).first()
        if user is None:
            raise CommandError(
                f"No active user {username!r}."
                if username
                else "No active administrator: pass --user."
            )
        return user
