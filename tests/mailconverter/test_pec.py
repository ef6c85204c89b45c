"""Certified mail (PEC) through the scan loop, against a real Dovecot.

What is delivered comes from the project's PEC fixtures (tests/fixtures/emails/pec/, described
in MANIFEST.json "pec"); expected titles, senders and file names are the fixtures' own facts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from crm.models import Comment, DocumentLink, Message, MessageLink, Record
from crm.services import blobs, ingest
from mailconverter import scanner
from mailconverter.models import LedgerEntry, Outcome
from tests.conftest import Org
from tests.factories import make_record
from tests.mailconverter.conftest import Account
from tests.mailconverter.helpers import corpus, mail
from tests.mailconverter.test_scanner import UPDATE_ELSE_CREATE, make_mailbox, tickets

pytestmark = [pytest.mark.imap, pytest.mark.django_db]

PEC = Path(__file__).resolve().parents[1] / "fixtures" / "emails" / "pec"
ORIGINAL_SUBJECT = "Richiesta di assistenza ordine 4711"
SENDER = "mario.rossi@pec.cliente.example"


def pec_mail(name: str) -> bytes:
    return (PEC / name).read_bytes()


def documents(record: Record) -> set[str]:
    return set(DocumentLink.objects.filter(record=record).values_list("document__title", flat=True))


def subjects(record: Record) -> set[str]:
    return set(MessageLink.objects.filter(record=record).values_list("message__subject", flat=True))


def test_a_certified_message_becomes_a_ticket_from_the_original_it_carries(
    account: Account, org: Org
) -> None:
    envelope = pec_mail("envelope-posta-certificata.eml")
    uid = account.deliver(envelope)
    contact = make_record(
        "Contacts", org.admin, first_name="Mario", last_name="Rossi", email=SENDER
    )
    mailbox = make_mailbox(account, org.admin, is_pec=True)

    run = scanner.scan(mailbox)

    assert run.counts == {"created": 1}, run.error
    [ticket] = tickets()
    assert ticket.data["title"] == ORIGINAL_SUBJECT
    assert ticket.data["contact"] == contact.pk
    assert "non si accende più" in ticket.data["description"]
    assert "Messaggio di posta certificata" not in ticket.data["description"]
    # The original's attachment and the certification data are the ticket's documents.
    assert {"ddt-4711.pdf", "daticert.xml"} <= documents(ticket)
    # The original and the certified envelope are both on the ticket.
    assert subjects(ticket) == {ORIGINAL_SUBJECT, f"POSTA CERTIFICATA: {ORIGINAL_SUBJECT}"}
    # The ledger shows the original's sender and subject, and keeps the envelope byte for byte.
    entry = LedgerEntry.objects.get(uid=uid)
    assert (entry.sender, entry.subject) == (SENDER, ORIGINAL_SUBJECT)
    assert entry.message is not None
    assert blobs.read(entry.message.raw.name) == envelope
    assert account.flags() == {uid: {b"\\Seen"}}
    assert scanner.scan(mailbox).processed == 0


def test_every_pec_receipt_is_recorded_with_its_kind_and_makes_no_ticket(
    account: Account, org: Org
) -> None:
    kinds = {
        "accettazione": pec_mail("receipt-accettazione.eml"),
        "avvenuta-consegna": pec_mail("receipt-avvenuta-consegna.eml"),
        "errore-consegna": pec_mail("receipt-errore-consegna.eml"),
    }
    for kind in (
        "non-accettazione",
        "presa-in-carico",
        "preavviso-errore-consegna",
        "rilevazione-virus",
    ):
        kinds[kind] = (
            kinds["accettazione"]
            .replace(b"X-Ricevuta: accettazione", f"X-Ricevuta: {kind}".encode())
            .replace(b"opec.20261124160211.1.02", f"opec.{kind}".encode())
        )
    uids = {account.deliver(raw): kind for kind, raw in kinds.items()}
    mailbox = make_mailbox(account, org.admin, is_pec=True)

    run = scanner.scan(mailbox)

    assert run.counts == {"loop": 7}, run.error
    assert tickets() == []
    reasons = dict(LedgerEntry.objects.values_list("uid", "reason"))
    assert reasons == {uid: f"PEC receipt: {kind}" for uid, kind in uids.items()}
    assert all(f == {b"\\Seen"} for f in account.flags().values())


def test_a_receipt_for_an_answer_on_a_ticket_is_kept_on_that_ticket(
    account: Account, org: Org
) -> None:
    ticket = make_record("Tickets", org.admin, title="Intervento tecnico", status="Open")
    answer = ingest.store(
        b"From: assistenza@pec.crm.test\r\nTo: mario.rossi@pec.cliente.example\r\n"
        b"Subject: Re: Intervento tecnico - Ticket Id: TT1\r\n"
        b"Message-ID: <risposta-tt1@crm.test>\r\n\r\nIl tecnico passera' domani mattina.\r\n",
        source=Message.Source.CRM,
        direction=Message.Direction.OUTGOING,
    ).message
    ingest.link(message=answer, record=ticket, actor=None, via=Message.Source.CRM)
    uid = account.deliver(pec_mail("receipt-avvenuta-consegna.eml"))
    mailbox = make_mailbox(account, org.admin, is_pec=True, rules=UPDATE_ELSE_CREATE)

    run = scanner.scan(mailbox)

    assert run.counts == {"loop": 1}, run.error
    entry = LedgerEntry.objects.get(uid=uid)
    assert entry.reason.startswith("PEC receipt: avvenuta-consegna for <risposta-tt1@crm.test>")
    assert ticket.number in entry.reason
    assert list(entry.records.all()) == [ticket]
    assert "CONSEGNA: Re: Intervento tecnico - Ticket Id: TT1" in subjects(ticket)
    assert "daticert.xml" in documents(ticket)
    # Kept, not converted: no comment, no status change, no second ticket.
    assert not Comment.objects.filter(record=ticket).exists()
    ticket.refresh_from_db()
    assert ticket.data["status"] == "Open"
    assert tickets() == [ticket]


def test_a_certified_reply_to_the_first_original_updates_the_same_ticket(
    account: Account, org: Org
) -> None:
    account.deliver(pec_mail("envelope-posta-certificata.eml"))
    mailbox = make_mailbox(account, org.admin, is_pec=True, rules=UPDATE_ELSE_CREATE)
    assert scanner.scan(mailbox).counts == {"created": 1}
    [ticket] = tickets()

    account.deliver(pec_mail("envelope-reply-in-reply-to.eml"))
    run = scanner.scan(mailbox)

    assert run.counts == {"updated": 1}, run.error
    assert tickets() == [ticket]
    ticket.refresh_from_db()
    assert ticket.data["status"] == "Answered by customer"
    [comment] = Comment.objects.filter(record=ticket)
    assert "la stampante e' ancora spenta" in comment.body
    assert comment.author_address == SENDER
    assert f"Re: {ORIGINAL_SUBJECT}" in subjects(ticket)
    assert f"POSTA CERTIFICATA: Re: {ORIGINAL_SUBJECT}" in subjects(ticket)


def test_the_same_certified_message_in_two_pec_mailboxes_makes_one_ticket(
    account: Account, dovecot: Any, org: Org
) -> None:
    envelope = pec_mail("envelope-posta-certificata.eml")
    # The other mailbox's copy: its own envelope id and recipient, the same original inside.
    other_copy = envelope.replace(
        b"opec.20261124101507.4711.01", b"opec.20261124101507.4711.02"
    ).replace(b"To: assistenza@pec.crm.test", b"To: vendite@pec.crm.test")
    other = dovecot.add_account()
    account.deliver(envelope)
    other.deliver(other_copy)
    first = make_mailbox(account, org.admin, is_pec=True)
    second = make_mailbox(other, org.admin, name="vendite", is_pec=True)

    assert scanner.scan(first).counts == {"created": 1}
    assert scanner.scan(second).counts == {"duplicate": 1}

    assert len(tickets()) == 1
    duplicate = LedgerEntry.objects.get(mailbox=second)
    assert duplicate.reason == "already converted from support/INBOX"
    assert duplicate.subject == ORIGINAL_SUBJECT


def test_non_pec_mail_on_a_pec_mailbox_is_processed_as_usual(account: Account, org: Org) -> None:
    account.deliver(mail("customer_question_with_attachment.eml"))
    account.deliver(mail("auto_reply_rfc3834.eml"))
    mailbox = make_mailbox(account, org.admin, is_pec=True)

    run = scanner.scan(mailbox)

    assert run.counts == {"created": 1, "loop": 1}, run.error
    [ticket] = tickets()
    assert ticket.data["title"] == "Photo of the printer"
    assert documents(ticket) == {"printer.bin"}


def test_an_envelope_without_its_original_is_processed_as_the_envelope(
    account: Account, org: Org
) -> None:
    envelope = pec_mail("envelope-without-postacert.eml")
    uid = account.deliver(envelope)
    mailbox = make_mailbox(account, org.admin, is_pec=True)

    run = scanner.scan(mailbox)

    assert run.counts == {"created": 1}, run.error
    [ticket] = tickets()
    assert ticket.data["title"] == "POSTA CERTIFICATA: Preventivo manutenzione annuale"
    assert "daticert.xml" in documents(ticket)
    entry = LedgerEntry.objects.get(uid=uid)
    assert entry.outcome == Outcome.CREATED
    assert entry.message is not None
    assert blobs.read(entry.message.raw.name) == envelope


def test_without_the_pec_flag_an_envelope_is_converted_as_it_is(account: Account, org: Org) -> None:
    account.deliver(pec_mail("envelope-posta-certificata.eml"))
    mailbox = make_mailbox(account, org.admin)  # is_pec off
    assert scanner.scan(mailbox).counts == {"created": 1}
    [ticket] = tickets()
    assert ticket.data["title"] == f"POSTA CERTIFICATA: {ORIGINAL_SUBJECT}"


def test_the_loop_guard_and_blocked_senders_judge_the_original_not_the_provider(
    account: Account, org: Org
) -> None:
    from django.utils import timezone

    from mailconverter.models import BlockedSender

    # An auto-reply sent by certified mail: the original says so, the envelope does not.
    auto_reply = pec_mail("envelope-reply-in-reply-to.eml").replace(
        b"\r\nSubject: Re: Richiesta", b"\r\nAuto-Submitted: auto-replied\r\nSubject: Re: Richiesta"
    )
    auto_uid = account.deliver(auto_reply)
    mailbox = make_mailbox(account, org.admin, is_pec=True)
    assert scanner.scan(mailbox).counts == {"loop": 1}
    assert "RFC 3834" in LedgerEntry.objects.get(uid=auto_uid).reason

    BlockedSender.objects.create(mailbox=mailbox, address=SENDER, created_at=timezone.now())
    blocked_uid = account.deliver(pec_mail("envelope-posta-certificata.eml"))
    assert scanner.scan(mailbox).counts == {"blocked": 1}
    assert LedgerEntry.objects.get(uid=blocked_uid).reason == f"{SENDER} is blocked on this mailbox"
    assert tickets() == []


def test_a_real_providers_envelope_from_the_public_samples_becomes_a_ticket_from_its_original(
    account: Account, org: Org
) -> None:
    # pec-jopenpec/message_ko.eml (SOURCE.md): an Aruba transport envelope whose postacert.eml
    # carries a PDF; the original's subject is the envelope's after "POSTA CERTIFICATA: ".
    envelope = (corpus("pec-jopenpec") / "message_ko.eml").read_bytes()
    uid = account.deliver(envelope)
    mailbox = make_mailbox(account, org.admin, is_pec=True)

    assert scanner.scan(mailbox).counts == {"created": 1}

    [ticket] = tickets()
    assert (
        ticket.data["title"] == "Riscontro alla missiva dei lavoratori I.Public datata 02.12.2013"
    )
    titles = documents(ticket)
    assert "daticert.xml" in titles
    assert any(t.endswith(".pdf") for t in titles)
    entry = LedgerEntry.objects.get(uid=uid)
    assert entry.sender == "azienda@pec.example.it"
    assert entry.message is not None
    assert blobs.read(entry.message.raw.name) == envelope
