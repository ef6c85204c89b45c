"""Mailbox operations an administrator starts: test the connection, refresh folders, retry.

Thin callers (pages, commands) call these; the scan itself is `mailconverter.scanner.scan`.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db import transaction
from django.utils import timezone

from crm.exceptions import Forbidden, Invalid
from crm.models import User
from crm.services import blobs
from mailconverter import imap, scanner, secrets
from mailconverter.models import Folder, LedgerEntry, Mailbox, Outcome, QuarantinedMail


@dataclass(frozen=True)
class ConnectionCheck:
    ok: bool
    message: str  # in words, for the page


def test_connection(mailbox: Mailbox) -> ConnectionCheck:
    try:
        return ConnectionCheck(True, imap.test_connection(scanner.connection_settings(mailbox)))
    except imap.ImapError as exc:
        return ConnectionCheck(False, str(exc))


test_connection.__test__ = False  # type: ignore[attr-defined]


def refresh_folders(mailbox: Mailbox) -> list[Folder]:
    """The server's folders with their counts; a folder gone from the server stays, marked.

    Trash, Drafts and Junk are listed but never selectable for scanning.
    """
    with imap.Session(scanner.connection_settings(mailbox)) as session:
        listed = [f for f in session.folders() if f.selectable]
        counts = {f.name: session.status(f.name) for f in listed}
    names = {f.name for f in listed}
    with transaction.atomic():
        for info in listed:
            messages, unseen = counts[info.name]
            folder, _ = Folder.objects.update_or_create(
                mailbox=mailbox,
                name=info.name,
                defaults={
                    "special_use": info.special_use,
                    "message_count": messages,
                    "unseen_count": unseen,
                    "exists_on_server": True,
                },
            )
            if not info.scannable and folder.selected:
                Folder.objects.filter(pk=folder.pk).update(selected=False)
        Folder.objects.filter(mailbox=mailbox).exclude(name__in=names).update(
            exists_on_server=False
        )
    return list(Folder.objects.filter(mailbox=mailbox, exists_on_server=True))


def retry(*, actor: User, entry: LedgerEntry) -> LedgerEntry:
    """An administrator's retry of a quarantined message, from its stored bytes.

    On success the ledger row is settled and the quarantine resolved; marking it read or moving
    it on the server follows on the folder's next scan (it needs the IMAP session).
    """
    if not actor.is_superuser:
        raise Forbidden("Only administrators retry quarantined mail.")
    if entry.outcome != Outcome.FAILED:
        raise Invalid("Only failed messages can be retried.", code="not_failed")
    held = QuarantinedMail.objects.filter(entry=entry).first()
    if held is None or held.kind != QuarantinedMail.Kind.ERROR:
        raise Invalid("There are no stored bytes to retry.", code="no_bytes")
    raw = blobs.read(held.raw.name)
    QuarantinedMail.objects.filter(pk=held.pk).update(updated_at=timezone.now())
    return scanner.process(entry.mailbox, entry.folder, entry.uidvalidity, entry.uid, raw)


def rotate_secrets() -> int:
    """Re-encrypt every stored mailbox secret with the first FIELD_ENCRYPTION_KEY.

    Rotation: put the new key first in the setting (keep the old one after it), run this, then
    drop the old key. Returns how many secrets were rewritten.
    """
    rotated = 0
    with transaction.atomic():
        for pk, token in (
            Mailbox.objects.select_for_update().exclude(secret="").values_list("pk", "secret")
        ):
            Mailbox.objects.filter(pk=pk).update(secret=secrets.rotate(token))
            rotated += 1
    return rotated
