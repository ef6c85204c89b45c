from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from licensing import keys


class Command(BaseCommand):
    help = "Vendor side: sign a license key for one CRM installation and print it."
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--private-key", type=Path, required=True, help="the vendor's PEM key")
        parser.add_argument("--installation", required=True, help="the customer's installation")
        parser.add_argument("--crm-url", required=True, help="the CRM's full address")
        parser.add_argument("--users", type=int, required=True, help="how many users")
        parser.add_argument(
            "--expires", default=None, help="last valid day, YYYY-MM-DD (UTC); default never"
        )
        parser.add_argument(
            "--features",
            action="append",
            default=None,
            help=f"comma-separated or repeated (default {keys.FEATURE_MAILCONNECTOR})",
        )
        parser.add_argument("--license-id", default=None, help="default: a new UUID")

    def handle(self, *args: Any, **options: Any) -> None:
        path: Path = options["private_key"]
        try:
            private_key = keys.load_private_key(path.read_bytes())
        except OSError as exc:
            raise CommandError(f"Cannot read the private key {path}: {exc.strerror}.") from None
        except ValueError as exc:
            raise CommandError(f"{path} is not a usable private key: {exc}.") from None
        if options["users"] < 1:
            raise CommandError("--users must be at least 1.")
        expires_on = None
        if options["expires"]:
            try:
                expires_on = date.fromisoformat(options["expires"])
            except ValueError:
                raise CommandError("--expires must be a date like 2026-12-31.") from None
            if expires_on < timezone.now().date():
                raise CommandError(f"--expires {expires_on} is already past.")
        features = tuple(
            name.strip()
            for value in (options["features"] or [keys.FEATURE_MAILCONNECTOR])
            for name in value.split(",")
            if name.strip()
        )
        try:
            payload = keys.new_payload(
                installation=options["installation"],
                crm_url=options["crm_url"],
                users=options["users"],
                features=features,
                expires_on=expires_on,
                now=timezone.now(),
                license_id=options["license_id"],
            )
            key = keys.issue(payload, private_key)
        except keys.InvalidKey as exc:
            raise CommandError(f"Cannot issue this key: {exc.reason}") from None
        except ValueError as exc:
            raise CommandError(f"--crm-url is not usable: {exc}.") from None
        self.stdout.write(key)
