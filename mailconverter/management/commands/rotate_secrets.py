from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from crm.services import secret_rotation
from mailconverter import services


class Command(BaseCommand):
    help = (
        "Re-encrypt every secret stored at rest (mailbox, OAuth2 and SMTP passwords) with the "
        "first key of FIELD_ENCRYPTION_KEY. Put the new key first, run this, then drop the old."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        count = secret_rotation.rotate_secrets() + services.rotate_secrets()
        self.stdout.write(f"{count} secrets re-encrypted with the first key.")
