"""Mark as spam, and undo, on tickets the converter made from mail in a real Dovecot.

Charlie (support agent) owns the support mailbox and its tickets; Sam, his manager, sees them
but may not delete tickets; Bob (sales) sees none of them. What is checked is what people see:
the recycle bin, the Tickets list, the blocked senders, and where the email is on the server.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from django.test import Client
from django.urls import reverse

from crm import access
from crm.exceptions import Forbidden, Invalid, NotFound
from crm.models import Message, MessageLink, Module, Record, User
from crm.models.modules import Sharing
from crm.services import ingest
from mailconverter import scanner, services
from mailconverter.models import (
    BlockedSender,
    Folder,
    LedgerEntry,
    Mailbox,
    Outcome,
    Rule,
    SpamMark,
    TicketOrigin,
)
from tests.conftest import Org
from tests.factories import ProfileFactory, UserFactory, grant, grant_all, make_record
from tests.mailconverter.conftest import PASSWORD, Account
from tests.mailconverter.helpers import mail

pytestmark = [pytest.mark.imap, pytest.mark.django_db]

SPAM_FOLDER = "Junk"  # Dovecot's \Junk folder in the tests' configuration


@dataclass
class Desk:
    account: Account
    mailbox: Mailbox
    charlie: User  # support agent, owner of the mailbox and its tickets
    sam: User  # support manager: sees Charlie's tickets, may not delete tickets
    bob: User  # sales manager: sees none of them


@pytest.fixture
def desk(org: Org, account: Account) -> Desk:
    managers = ProfileFactory(name="Support managers")
    grant_all(managers)
    grant(managers, "Tickets", "view create edit")
    org.support_manager.profiles.set([managers])
    sam = UserFactory(username="sam", role=org.support_manager)
    Module.objects.filter(name="Tickets").update(default_sharing=Sharing.PRIVATE)
    mailbox = Mailbox(
        name="Support",
        host="127.0.0.1",
        port=account.server.port,
        security=Mailbox.Security.NONE,
        username=account.user,
        address="support@crm.test",
        owner=org.charlie,
        spam_folder=SPAM_FOLDER,
    )
    mailbox.set_password(PASSWORD)
    mailbox.save()
    Folder.objects.create(mailbox=mailbox, name="INBOX", selected=True)
    Rule.objects.create(
        mailbox=mailbox, position=0, actions=[{"type": "create_ticket", "create_lead": True}]
    )
    return Desk(account, mailbox, org.charlie, sam, org.bob)


def spam_from(sender: str, n: int, subject: str = "Cheap watches") -> bytes:
    return (
        mail("customer_question.eml")
        .replace(b"Anna Rossi <anna.rossi@acme.example>", f"Sales <{sender}>".encode())
        .replace(b"question-1@acme.example", f"spam-{n}@{sender.split('@')[1]}".encode())
        .replace(b"Printer on fire", subject.encode())
    )


def ticket_of(message_id: str) -> Record:
    return Record.objects.get(mail_origin__message__message_id=message_id)


def delivered_and_scanned(desk: Desk, *raws: bytes) -> list[Record]:
    for raw in raws:
        desk.account.deliver(raw)
    run = scanner.scan(desk.mailbox)
    assert run.counts.get(Outcome.CREATED) == len(raws), run.counts
    return list(Record.objects.filter(module__name="Tickets").order_by("pk"))


def live(record: Record) -> bool:
    record.refresh_from_db()
    return not record.is_deleted


def test_marking_a_ticket_bins_it_with_its_email_and_lead_and_blocks_the_sender(desk: Desk):
    [ticket] = delivered_and_scanned(desk, spam_from("deals@spam.example", 1))
    lead = TicketOrigin.objects.get(ticket=ticket).created_lead
    assert lead is not None
    message = Message.objects.get(message_id="spam-1@spam.example")
    assert access.can_see_message(desk.charlie, message)

    mark = services.mark_spam(actor=desk.charlie, tickets=[ticket])

    assert not live(ticket)
    assert not live(lead)
    # The email is seen only through live records: it has gone to the bin with them.
    assert not access.can_see_message(desk.charlie, message)
    bin_numbers = {
        r.number for r in access.records(desk.charlie, ticket.module_id, in_recycle_bin=True)
    }
    assert ticket.number in bin_numbers
    assert BlockedSender.objects.filter(mailbox=desk.mailbox, address="deals@spam.example").exists()
    assert list(mark.tickets.all()) == [ticket]
    assert list(mark.leads.all()) == [lead]


def test_marking_many_tickets_at_once_bins_them_all_and_blocks_every_sender(desk: Desk):
    first, second, keep = delivered_and_scanned(
        desk,
        spam_from("deals@spam.example", 1),
        spam_from("promo@junk.example", 2),
        mail("customer_question.eml"),
    )

    services.mark_spam(actor=desk.charlie, tickets=[first, second])

    assert (live(first), live(second), live(keep)) == (False, False, True)
    blocked = set(BlockedSender.objects.values_list("address", flat=True))
    assert blocked == {"deals@spam.example", "promo@junk.example"}


def test_undo_restores_the_ticket_its_email_and_lead_and_unblocks_the_sender(desk: Desk):
    [ticket] = delivered_and_scanned(desk, spam_from("deals@spam.example", 1))
    lead = TicketOrigin.objects.get(ticket=ticket).created_lead
    assert lead is not None
    message = Message.objects.get(message_id="spam-1@spam.example")
    links_before = set(MessageLink.objects.values_list("message_id", "record_id", "linked_at"))
    mark = services.mark_spam(actor=desk.charlie, tickets=[ticket])

    result = services.undo_spam(actor=desk.charlie, mark=mark)

    assert live(ticket)
    assert live(lead)
    assert access.can_see_message(desk.charlie, message)
    assert set(MessageLink.objects.values_list("message_id", "record_id", "linked_at")) == (
        links_before
    )
    assert not BlockedSender.objects.filter(address="deals@spam.example").exists()
    assert "Unblocked deals@spam.example" in result.summary
    with pytest.raises(Invalid):
        services.undo_spam(actor=desk.charlie, mark=mark)


def test_a_lead_another_record_uses_stays_out_of_the_bin(desk: Desk):
    [ticket] = delivered_and_scanned(desk, spam_from("deals@spam.example", 1))
    lead = TicketOrigin.objects.get(ticket=ticket).created_lead
    assert lead is not None
    make_record(
        "Events",
        desk.charlie,
        subject="Call back",
        type="Call",
        start="2026-11-24T10:00:00+00:00",
        related_to=lead.pk,
    )

    mark = services.mark_spam(actor=desk.charlie, tickets=[ticket])

    assert not live(ticket)
    assert live(lead)
    assert list(mark.leads.all()) == []


def test_a_lead_with_another_email_stays_out_of_the_bin(desk: Desk):
    [ticket] = delivered_and_scanned(desk, spam_from("deals@spam.example", 1))
    lead = TicketOrigin.objects.get(ticket=ticket).created_lead
    assert lead is not None
    other = ingest.store(mail("customer_question.eml"), source=Message.Source.ADDIN).message
    ingest.link(message=other, record=lead, actor=desk.charlie, via=Message.Source.ADDIN)

    services.mark_spam(actor=desk.charlie, tickets=[ticket])

    assert live(lead)


def test_who_may_not_delete_the_ticket_cannot_mark_it_and_nothing_changes(desk: Desk):
    first, second = delivered_and_scanned(
        desk, spam_from("deals@spam.example", 1), spam_from("promo@junk.example", 2)
    )
    assert access.can(desk.sam, "view", first)

    with pytest.raises(Forbidden):
        services.mark_spam(actor=desk.sam, tickets=[first, second])
    with pytest.raises(NotFound):
        services.mark_spam(actor=desk.bob, tickets=[first])

    assert live(first)
    assert live(second)
    assert not BlockedSender.objects.exists()
    assert not SpamMark.objects.exists()
    assert not LedgerEntry.objects.filter(spam_move_pending=True).exists()


def test_a_ticket_binned_meanwhile_is_refused_in_words(desk: Desk):
    first, second = delivered_and_scanned(
        desk, spam_from("deals@spam.example", 1), spam_from("promo@junk.example", 2)
    )
    services.mark_spam(actor=desk.charlie, tickets=[first])

    with pytest.raises(Invalid) as caught:
        services.mark_spam(actor=desk.charlie, tickets=[first, second])

    assert caught.value.detail == f"{first.number} is already in the recycle bin."
    assert live(second)


def test_a_ticket_typed_in_by_hand_is_not_spam_from_a_mailbox(desk: Desk):
    typed = make_record("Tickets", desk.charlie, title="Phone call", status="Open")
    with pytest.raises(Invalid) as caught:
        services.mark_spam(actor=desk.charlie, tickets=[typed])
    assert typed.number in caught.value.detail
    assert live(typed)


def test_the_blocked_senders_next_mail_is_skipped_and_recorded(desk: Desk):
    [ticket] = delivered_and_scanned(desk, spam_from("deals@spam.example", 1))
    services.mark_spam(actor=desk.charlie, tickets=[ticket])

    desk.account.deliver(spam_from("deals@spam.example", 2, subject="Even cheaper watches"))
    run = scanner.scan(desk.mailbox)

    assert run.counts == {Outcome.BLOCKED: 1}
    entry = LedgerEntry.objects.get(subject="Even cheaper watches")
    assert entry.outcome == Outcome.BLOCKED
    assert "deals@spam.example" in entry.reason
    assert Record.objects.filter(module__name="Tickets", deleted_at=None).count() == 0


def test_the_next_scan_moves_the_email_to_the_spam_folder(desk: Desk):
    [ticket] = delivered_and_scanned(desk, spam_from("deals@spam.example", 1))
    [uid] = desk.account.uids("INBOX")
    assert desk.account.uids(SPAM_FOLDER) == []
    services.mark_spam(actor=desk.charlie, tickets=[ticket])
    assert desk.account.uids("INBOX") == [uid]  # nothing moves before the scan

    scanner.scan(desk.mailbox)

    assert desk.account.uids("INBOX") == []
    assert subjects(desk.account, SPAM_FOLDER) == ["Cheap watches"]
    assert not LedgerEntry.objects.filter(spam_move_pending=True).exists()


def test_an_email_the_scan_had_moved_to_the_processed_folder_is_found_there(desk: Desk):
    desk.account.create_folder("Processed")
    Mailbox.objects.filter(pk=desk.mailbox.pk).update(
        after_scan=Mailbox.AfterScan.MOVE, processed_folder="Processed"
    )
    desk.mailbox.refresh_from_db()
    [ticket] = delivered_and_scanned(desk, spam_from("deals@spam.example", 1))
    assert subjects(desk.account, "Processed") == ["Cheap watches"]
    services.mark_spam(actor=desk.charlie, tickets=[ticket])

    scanner.scan(desk.mailbox)

    assert subjects(desk.account, "Processed") == []
    assert subjects(desk.account, SPAM_FOLDER) == ["Cheap watches"]


def test_undo_before_the_next_scan_leaves_the_email_where_it_was(desk: Desk):
    [ticket] = delivered_and_scanned(desk, spam_from("deals@spam.example", 1))
    mark = services.mark_spam(actor=desk.charlie, tickets=[ticket])
    result = services.undo_spam(actor=desk.charlie, mark=mark)
    assert result.moves_cancelled == 1

    scanner.scan(desk.mailbox)

    assert subjects(desk.account, "INBOX") == ["Cheap watches"]
    assert desk.account.uids(SPAM_FOLDER) == []


def test_undo_after_the_move_says_the_email_stays_in_the_spam_folder(desk: Desk):
    [ticket] = delivered_and_scanned(desk, spam_from("deals@spam.example", 1))
    mark = services.mark_spam(actor=desk.charlie, tickets=[ticket])
    scanner.scan(desk.mailbox)

    result = services.undo_spam(actor=desk.charlie, mark=mark)

    assert live(ticket)
    assert "stay there" in result.summary
    assert subjects(desk.account, SPAM_FOLDER) == ["Cheap watches"]


def test_an_email_gone_from_the_server_is_forgotten_quietly(desk: Desk):
    [ticket] = delivered_and_scanned(desk, spam_from("deals@spam.example", 1))
    services.mark_spam(actor=desk.charlie, tickets=[ticket])
    with desk.account.client() as c:  # a user deletes it in his mail program meanwhile
        c.select_folder("INBOX")
        c.delete_messages(c.search("ALL"))
        c.expunge()

    run = scanner.scan(desk.mailbox)

    assert run.error == ""
    assert desk.account.uids(SPAM_FOLDER) == []
    assert not LedgerEntry.objects.filter(spam_move_pending=True).exists()


def test_undoing_one_of_two_marks_of_a_sender_keeps_the_block(desk: Desk):
    first, second = delivered_and_scanned(
        desk, spam_from("deals@spam.example", 1), spam_from("deals@spam.example", 2)
    )
    one = services.mark_spam(actor=desk.charlie, tickets=[first])
    two = services.mark_spam(actor=desk.charlie, tickets=[second])

    services.undo_spam(actor=desk.charlie, mark=one)
    assert BlockedSender.objects.filter(address="deals@spam.example").exists()
    services.undo_spam(actor=desk.charlie, mark=two)
    assert not BlockedSender.objects.filter(address="deals@spam.example").exists()


def subjects(account: Account, folder: str) -> list[str]:
    with account.client() as c:
        c.select_folder(folder, readonly=True)
        fetched = c.fetch(c.search("ALL"), [b"ENVELOPE"])
    return sorted(data[b"ENVELOPE"].subject.decode() for data in fetched.values())


# --- the pages -----------------------------------------------------------------------------------


def logged_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def tickets_list() -> str:
    return reverse("crm:record_list", kwargs={"module": "Tickets"})


def test_an_agent_marks_from_the_list_sees_undo_and_undoes(desk: Desk):
    first, second, keep = delivered_and_scanned(
        desk,
        spam_from("deals@spam.example", 1),
        spam_from("promo@junk.example", 2),
        mail("customer_question.eml"),
    )
    client = logged_in(desk.charlie)
    listed = client.get(tickets_list()).content.decode()
    assert 'name="records"' in listed
    assert "Mark as spam" in listed

    answer = client.post(
        reverse("converter_tickets:mark_spam_many"),
        {"records": [first.pk, second.pk], "next": tickets_list()},
        follow=True,
    )

    page = answer.content.decode()
    assert answer.redirect_chain[-1][0] == tickets_list()
    assert "marked as spam" in page
    assert ">Undo</button>" in page
    assert row(first) not in page
    assert row(second) not in page
    assert row(keep) in page
    mark = SpamMark.objects.get()
    undone = client.post(
        reverse("converter_tickets:undo_spam", kwargs={"pk": mark.pk}),
        {"next": tickets_list()},
        follow=True,
    ).content.decode()
    assert f"Restored {first.number}, {second.number}" in undone
    assert row(first) in undone
    assert row(second) in undone
    # The notice is shown once.
    assert ">Undo</button>" not in client.get(tickets_list()).content.decode()


def row(ticket: Record) -> str:
    return f'<td class="number">{ticket.number}</td>'


def test_the_ticket_page_button_marks_that_ticket(desk: Desk):
    [ticket] = delivered_and_scanned(desk, spam_from("deals@spam.example", 1))
    client = logged_in(desk.charlie)
    url = reverse("converter_tickets:mark_spam", kwargs={"pk": ticket.pk})
    assert url in client.get(ticket_url(ticket)).content.decode()

    answer = client.post(url)

    assert answer.status_code == 302
    assert answer["Location"] == tickets_list()
    assert not live(ticket)


def test_the_spam_pages_refuse_whom_they_must(desk: Desk):
    [ticket] = delivered_and_scanned(desk, spam_from("deals@spam.example", 1))
    url = reverse("converter_tickets:mark_spam", kwargs={"pk": ticket.pk})
    many = reverse("converter_tickets:mark_spam_many")
    sam = logged_in(desk.sam)

    assert "Mark as spam" not in sam.get(ticket_url(ticket)).content.decode()
    assert sam.post(url).status_code == 403
    assert logged_in(desk.bob).post(url).status_code == 404
    assert logged_in(desk.bob).post(many, {"records": [ticket.pk]}).status_code == 404
    assert Client().post(url).status_code == 302  # to the login page
    assert logged_in(desk.charlie).get(url).status_code == 405
    assert live(ticket)
    nothing_chosen = logged_in(desk.charlie).post(many, {"records": []}, follow=True)
    assert "Choose at least one ticket." in nothing_chosen.content.decode()


def test_only_the_author_or_an_administrator_may_undo(desk: Desk, org: Org):
    [ticket] = delivered_and_scanned(desk, spam_from("deals@spam.example", 1))
    mark = services.mark_spam(actor=desk.charlie, tickets=[ticket])
    undo = reverse("converter_tickets:undo_spam", kwargs={"pk": mark.pk})

    refused = logged_in(desk.sam).post(undo, follow=True).content.decode()
    assert "Only the person who marked" in refused
    assert not live(ticket)
    logged_in(org.admin).post(undo)
    assert live(ticket)


def ticket_url(ticket: Record) -> str:
    return reverse("crm:record_detail", kwargs={"module": "Tickets", "pk": ticket.pk})
