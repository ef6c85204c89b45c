from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from crm.services import mail


class Command(BaseCommand):
    help = (
        "Send outgoing mail whose retry is due. Celery beat does this every minute; an "
        "installation without Redis runs this command from cron instead."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        count = mail.retry_due()
        self.stdout.write(f"{count} email{'' if count == 1 else 's'} due, attempted.")
