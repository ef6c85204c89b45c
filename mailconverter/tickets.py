"""Converter tickets: where each one came from (mailbox, ledger row, email, sender, recipients).

Written by the create-ticket action in the message's transaction, so a ticket and its origin
commit or roll back together. Read by the ticket's page ("Mail information") and by
"Mark as spam", which needs the mailbox, the sender and the ledger row to act on.
"""

from __future__ import annotations

from django.utils import timezone

from crm import statements
from crm.models import Message, Record
from mailconverter.models import LedgerEntry, Mailbox, TicketOrigin

__all__ = ["origin_of", "record_origin"]


def record_origin(
    *,
    ticket: Record,
    mailbox: Mailbox,
    message: Message,
    created_lead: Record | None,
    entry: LedgerEntry | None = None,
) -> TicketOrigin:
    """`entry` is the ledger row acting on the email, when the caller holds it."""
    if entry is None:
        # The ledger row that acts on an email is the one per identity with `acted` set; the
        # scanner claims it before running the rules, inside this same transaction.
        entry = LedgerEntry.objects.filter(
            mailbox=mailbox, identity=message.identity, acted=True
        ).first()
    origin = TicketOrigin(
        ticket=ticket,
        mailbox=mailbox,
        ledger_entry=entry,
        message=message,
        sender_address=message.from_address[:320],
        sender_name=message.from_name[:255],
        recipients={"to": list(message.to), "cc": list(message.cc)},
        created_lead=created_lead,
        received_at=message.date or (entry.created_at if entry else None),
        created_at=timezone.now(),
    )
    statements.insert(origin)  # one per ticket a scan opens
    return origin


def origin_of(ticket: Record) -> TicketOrigin | None:
    """The origin of a ticket the caller may already see (access is the caller's check)."""
    return TicketOrigin.objects.select_related("mailbox").filter(ticket=ticket).first()
