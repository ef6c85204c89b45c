"""Re-encrypt the CRM's own secrets at rest with the first FIELD_ENCRYPTION_KEY.

Rotation (crm.secrets): put the new key first in the setting, keep the old one after it, run
`manage.py rotate_secrets`, then drop the old key. The mail converter rotates its own rows
(mailbox passwords, OAuth2 tokens, "info" SMTP passwords) in `mailconverter.services`; the
command runs both.
"""

from __future__ import annotations

from django.db import transaction

from crm import secrets
from crm.models import OutgoingMail, OutgoingMailSettings


def rotate_secrets() -> int:
    """The outgoing server's password and those of emails still waiting for an "info" server;
    returns how many secrets were rewritten."""
    rotated = 0
    with transaction.atomic():
        for pk, token in (
            OutgoingMailSettings.objects.select_for_update()
            .exclude(secret="")
            .values_list("pk", "secret")
        ):
            OutgoingMailSettings.objects.filter(pk=pk).update(secret=secrets.rotate(token))
            rotated += 1
        for row in OutgoingMail.objects.select_for_update().exclude(smtp={}):
            token = row.smtp.get("secret", "")
            if token:
                row.smtp = {**row.smtp, "secret": secrets.rotate(token)}
                row.save(update_fields=["smtp"])
                rotated += 1
    return rotated
