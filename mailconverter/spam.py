"""Mark converter tickets as spam, and undo it.

ARCHITECTURE.md, "Mail converter", Spam. One mark, for one ticket or many:

- each ticket goes to the recycle bin (`crm.services.records.delete`, so the actor needs delete
  permission on it: who may not bin a ticket may not call it spam either);
- its emails go with it: a Message has no bin of its own and is seen only through live records
  (`crm.access.can_see_message`), so its links stay as they are and come back whole on undo;
- the Lead the converter created for the ticket alone goes to the bin too, unless something
  else now uses it (another email, a reference from another record, a comment);
- the sender is blocked on the ticket's mailbox: the scanner records their next mail as
  "blocked" and converts nothing;
- the email on the server is queued for the mailbox's spam folder: the next scan of its folder
  moves it (IMAP needs the scan's session; the move happens only after this commit).

A SpamMark row remembers exactly what this mark did, so `undo` restores what it binned, lifts
the blocks it added (not blocks an administrator set before), and cancels a move still queued.
A message the scan already moved stays in the spam folder: undo says so.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from imapclient.exceptions import IMAPClientError

from crm import access
from crm.email.addresses import normalise_email
from crm.exceptions import Invalid
from crm.models import Comment, MessageLink, Record, RecordReference, User
from crm.services import records as record_service
from mailconverter.imap import ImapError, Session
from mailconverter.models import (
    BlockedSender,
    Folder,
    LedgerEntry,
    Mailbox,
    SpamMark,
    TicketOrigin,
)

log = logging.getLogger(__name__)

__all__ = ["UndoResult", "mark", "move_pending", "undo"]


@transaction.atomic
def mark(*, actor: User, tickets: Iterable[Record]) -> SpamMark:
    """Bin the tickets (and what came with them), block their senders, queue the moves.

    All or nothing: one ticket the actor may not delete (Forbidden), may not see (NotFound) or
    that did not come from a mailbox (Invalid) leaves every ticket as it was.
    """
    locked = _lock(tickets)
    origins = _origins(actor, locked)
    spam = SpamMark.objects.create(actor=actor, created_at=timezone.now())
    for ticket in locked:
        record_service.delete(actor=actor, record=ticket)
    spam.tickets.set(locked)
    spam.leads.set(_bin_leads(actor, origins, locked))
    spam.blocked = _block_senders(origins)
    spam.save(update_fields=["blocked"])
    spam.ledger_entries.set(_queue_moves(origins))
    return spam


def _lock(tickets: Iterable[Record]) -> list[Record]:
    ids = sorted({t.pk for t in tickets})
    if not ids:
        raise Invalid(fields={"records": "Choose at least one ticket."})
    # In id order: two marks of overlapping tickets wait for each other instead of deadlocking.
    return list(
        Record.objects.select_for_update(of=("self",), no_key=True)  # as records._locked
        .select_related("module")
        .filter(pk__in=ids)
        .order_by("pk")
    )


def _origins(actor: User, tickets: list[Record]) -> list[TicketOrigin]:
    """Check every ticket before changing any; their origins, in ticket order."""
    found = {
        o.ticket_id: o
        for o in TicketOrigin.objects.select_related("mailbox", "created_lead").filter(
            ticket__in=tickets
        )
    }
    origins = []
    for ticket in tickets:
        if ticket.is_deleted:  # binned by someone else since the page was shown
            access.require(actor, "restore", ticket)
            raise Invalid(f"{ticket.number} is already in the recycle bin.", code="deleted")
        access.require(actor, "delete", ticket)
        origin = found.get(ticket.pk)
        if origin is None:
            raise Invalid(
                f"{ticket.number} did not come from a mailbox; move it to the recycle bin instead.",
                code="not_from_mailbox",
            )
        origins.append(origin)
    return origins


def _bin_leads(actor: User, origins: list[TicketOrigin], tickets: list[Record]) -> list[Record]:
    """Leads made for these tickets alone that nothing else uses now, and the actor may bin."""
    binned = []
    messages = MessageLink.objects.filter(record__in=tickets).values("message_id")
    for lead in {o.created_lead.pk: o.created_lead for o in origins if o.created_lead}.values():
        if lead.is_deleted or not access.can(actor, "delete", lead):
            continue
        other_mail = MessageLink.objects.filter(record=lead).exclude(message_id__in=messages)
        referenced = RecordReference.objects.filter(target=lead, record__deleted_at=None).exclude(
            record__in=tickets
        )
        if other_mail.exists() or referenced.exists() or Comment.objects.filter(record=lead):
            continue
        record_service.delete(actor=actor, record=lead)
        binned.append(lead)
    return binned


def _block_senders(origins: list[TicketOrigin]) -> list[dict[str, object]]:
    """Block each (mailbox, sender). Every sender is listed; `added` says this mark blocked
    them (a block set before, by an administrator or another mark, is not this mark's to lift).
    """
    listed: list[dict[str, object]] = []
    now = timezone.now()
    for mailbox_id, address in dict.fromkeys(
        (o.mailbox_id, _address(o.sender_address)) for o in origins if o.mailbox_id
    ):
        if not address:
            continue
        _, created = BlockedSender.objects.get_or_create(
            mailbox_id=mailbox_id,
            address=address,
            defaults={"reason": "Marked as spam", "created_at": now},
        )
        listed.append({"mailbox": mailbox_id, "address": address, "added": created})
    return listed


def _address(value: str) -> str:
    # As the scanner compares it (mailconverter.scanner._sender).
    return (normalise_email(value) or value.strip().lower())[:320]


def _queue_moves(origins: list[TicketOrigin]) -> list[LedgerEntry]:
    """Queue the ticket's emails in its mailbox for the spam folder, where one is set.

    The first email and the replies the converter added to the ticket all came from the sender.
    Returns the rows queued.
    """
    queued: list[LedgerEntry] = []
    for origin in origins:
        if origin.mailbox is None or not origin.mailbox.spam_folder:
            continue
        rows = LedgerEntry.objects.filter(mailbox=origin.mailbox).filter(
            Q(records=origin.ticket_id) | Q(pk=origin.ledger_entry_id)
        )
        found = list(rows.distinct())
        LedgerEntry.objects.filter(pk__in=[e.pk for e in found]).update(spam_move_pending=True)
        queued.extend(found)
    return queued


# --- undo --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UndoResult:
    mark: SpamMark
    restored: list[Record]
    unblocked: list[str]
    moves_cancelled: int
    already_moved: int  # emails the scan had moved to the spam folder: they stay there

    @property
    def summary(self) -> str:
        numbers = ", ".join(r.number for r in self.restored) or "nothing"
        text = f"Restored {numbers}."
        if self.unblocked:
            text += f" Unblocked {', '.join(sorted(set(self.unblocked)))}."
        if self.already_moved:
            text += (
                f" {self.already_moved} email(s) had already been moved to the spam folder on the"
                " mail server and stay there."
            )
        return text


@transaction.atomic
def undo(*, actor: User, mark: SpamMark) -> UndoResult:
    """Put back what the mark did. Only its author or an administrator may undo it.

    Each record is restored through `crm.services.records.restore` (which checks the actor's
    rights); a record restored or purged meanwhile is left as it is.
    """
    spam = SpamMark.objects.select_for_update().get(pk=mark.pk)
    if spam.actor_id != actor.pk and not actor.is_superuser:
        raise Invalid("Only the person who marked these tickets as spam can undo it.")
    if spam.undone_at is not None:
        raise Invalid("This has already been undone.", code="already_undone")
    restored = []
    for record in [*spam.tickets.order_by("pk"), *spam.leads.order_by("pk")]:
        if record.is_deleted:
            record_service.restore(actor=actor, record=record)
            restored.append(record)
    unblocked = _unblock(spam)
    queued = spam.ledger_entries.all()
    cancelled = queued.filter(spam_move_pending=True).update(spam_move_pending=False)
    spam.undone_at, spam.undone_by = timezone.now(), actor
    spam.save(update_fields=["undone_at", "undone_by"])
    return UndoResult(spam, restored, unblocked, cancelled, queued.count() - cancelled)


def _unblock(spam: SpamMark) -> list[str]:
    """Lift the blocks this mark added. Another standing mark of the same sender keeps the
    block, and takes it over, so that undoing that one lifts it."""
    lifted = []
    for block in spam.blocked:
        mailbox_id, address = block["mailbox"], str(block["address"])
        other = (
            SpamMark.objects.select_for_update()
            .filter(
                undone_at=None,
                tickets__mail_origin__mailbox_id=mailbox_id,
                tickets__mail_origin__sender_address__iexact=address,
            )
            .exclude(pk=spam.pk)
            .order_by("-created_at")
            .first()
        )
        if other is not None:
            if block.get("added"):
                other.blocked = [
                    {**b, "added": True}
                    if (b["mailbox"], b["address"]) == (mailbox_id, address)
                    else b
                    for b in other.blocked
                ]
                other.save(update_fields=["blocked"])
            continue
        if block.get("added"):
            BlockedSender.objects.filter(mailbox_id=mailbox_id, address=address).delete()
            lifted.append(address)
    return lifted


# --- on the server, during the next scan --------------------------------------------------------


def move_pending(imap: Session, folder: Folder, validity: int) -> int:
    """Move this folder's emails queued by "Mark as spam" to the mailbox's spam folder.

    Called by the scan at the end of the folder, after the scan's own commits. An email the
    scan had already moved on (after scan: move to a folder) is looked for there by its
    Message-ID. One no longer anywhere (deleted by a user, or the folder's UIDs renumbered) is
    forgotten quietly. Returns how many were moved.
    """
    queued = list(
        LedgerEntry.objects.filter(folder=folder, spam_move_pending=True).select_related(
            "mailbox", "message"
        )
    )
    if not queued:
        return 0
    mailbox = folder.mailbox
    target = mailbox.spam_folder
    moved = 0
    if target:
        by_uid = {e.uid: e for e in queued if e.uidvalidity == validity}
        present = sorted(imap.sizes(list(by_uid))) if by_uid else []
        if present and target != folder.name:
            imap.move(present, target)
            moved += len(present)
        here = {by_uid[uid].pk for uid in present}
        elsewhere = [e for e in queued if e.pk not in here and e.message_id is not None]
        if elsewhere and mailbox.after_scan == Mailbox.AfterScan.MOVE:
            moved += _move_from_after_scan_folders(imap, mailbox, folder, elsewhere)
    LedgerEntry.objects.filter(pk__in=[e.pk for e in queued]).update(spam_move_pending=False)
    return moved


def _move_from_after_scan_folders(
    imap: Session, mailbox: Mailbox, folder: Folder, entries: list[LedgerEntry]
) -> int:
    """Find the emails in the folders the scan moves mail to, by Message-ID (RFC 3501 §6.4.4
    SEARCH HEADER), and move them on. Leaves another folder selected: call it last."""
    ids = [e.message.message_id for e in entries if e.message and e.message.message_id]
    moved = 0
    for name in dict.fromkeys([mailbox.processed_folder, mailbox.unmatched_folder]):
        if not ids or not name or name in (folder.name, mailbox.spam_folder):
            continue
        try:
            imap.select(name)
            found = {
                uid for mid in ids for uid in imap.client.search(["HEADER", "Message-ID", mid])
            }
            if found:
                imap.move(sorted(found), mailbox.spam_folder)
                moved += len(found)
        except (ImapError, IMAPClientError) as exc:  # a folder renamed or gone on the server
            log.info("spam move: %s/%s skipped: %s", mailbox.name, name, exc)
    return moved
