from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from crm.exceptions import ServiceError
from crm.models import User
from licensing import services


class Command(BaseCommand):
    help = "Activate a license key for the Outlook Mail Connector on this CRM."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("key", nargs="?", help="the license key")
        parser.add_argument("--file", type=Path, help="read the key from this file ('-': stdin)")
        parser.add_argument("--user", default=None, help="administrator (default: the first)")

    def handle(self, *args: Any, **options: Any) -> None:
        key = self._key(options["key"], options["file"])
        actor = self._actor(options["user"])
        try:
            services.activate(actor=actor, key=key)
        except ServiceError as exc:
            raise CommandError(f"The key was not activated: {exc.detail}") from None
        info = services.summary()
        if info is None:  # another key replaced it at once; nothing more to say
            return
        expires = f"{info.expires_at:%Y-%m-%d %H:%M} UTC" if info.expires_at else "never"
        self.stdout.write(f"License activated for {info.installation} ({info.crm_url}).")
        self.stdout.write(f"Users: {info.users_used} of {info.users_allowed} enabled.")
        self.stdout.write(f"Expires: {expires}.")
        if info.license.users_disabled:
            self.stdout.write(
                f"Disabled (beyond the new limit): {', '.join(info.license.users_disabled)}."
            )
        if info.warning:
            self.stdout.write(info.warning)

    def _key(self, key: str | None, path: Path | None) -> str:
        if bool(key) == bool(path):
            raise CommandError("Give the key, or --file with the key (not both).")
        if key or path is None:
            return key or ""
        if str(path) == "-":
            return sys.stdin.read()
        try:
            return path.read_text(encoding="ascii", errors="replace")
        except OSError as exc:
            raise CommandError(f"Cannot read {path}: {exc.strerror}.") from None

    def _actor(self, username: str | None) -> User:
        admins = User.objects.filter(is_active=True, is_superuser=True)
        user = (admins.filter(username=username) if username else admins.order_by("pk")).first()
        if user is None:
            raise CommandError(
                f"{username!r} is not an active administrator."
                if username
                else "No active administrator: create one, or pass --user."
            )
        return user
