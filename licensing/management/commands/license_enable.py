from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from crm.exceptions import ServiceError
from crm.models import User
from licensing import services


class Command(BaseCommand):
    help = "Enable users for the Outlook Mail Connector (within the license's seats)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("usernames", nargs="*", help="users to enable")
        parser.add_argument("--all-active", action="store_true", help="every active user")
        parser.add_argument("--user", default=None, help="administrator (default: the first)")

    def handle(self, *args: Any, **options: Any) -> None:
        users = User.objects.filter(is_active=True)
        if not options["all_active"]:
            users = users.filter(username__in=options["usernames"])
            missing = set(options["usernames"]) - set(users.values_list("username", flat=True))
            if missing:
                raise CommandError(f"No active user {', '.join(sorted(missing))}.")
        actor = User.objects.filter(is_active=True, is_superuser=True)
        admin = (
            actor.filter(username=options["user"]) if options["user"] else actor.order_by("pk")
        ).first()
        if admin is None:
            raise CommandError("No active administrator to act as: pass --user.")
        try:
            enabled = services.enable_users(actor=admin, users=list(users.order_by("pk")))
        except ServiceError as exc:
            raise CommandError(f"Not enabled: {exc.detail}") from None
        names = ", ".join(u.username for u in enabled) or "nobody new"
        self.stdout.write(f"Enabled: {names}.")
