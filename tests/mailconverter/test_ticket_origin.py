"""A converter ticket remembers where it came from, and its page shows it as "Mail information".

One-message path (`scanner.process`, no IMAP server needed). Charlie (support agent) owns the
mailbox and its tickets; Bob (sales, another branch) may not see them.
"""

from __future__ import annotations

import itertools

import pytest
from django.test import Client
from django.urls import reverse

from crm.models import Module, Record, User
from crm.models.modules import Sharing
from mailconverter import scanner
from mailconverter.models import Folder, LedgerEntry, Mailbox, Rule, TicketOrigin
from tests.conftest import Org
from tests.factories import make_record
from tests.mailconverter.helpers import mail

pytestmark = pytest.mark.django_db
_uids = itertools.count(1)

QUESTION = mail("customer_question.eml").replace(
    b"To: Support <support@crm.test>",
    b"To: Support <support@crm.test>, Help Desk <help@crm.test>\r\nCc: Boss <boss@acme.example>",
)


@pytest.fixture
def mailbox(org: Org) -> Mailbox:
    Module.objects.filter(name="Tickets").update(default_sharing=Sharing.PRIVATE)
    box = Mailbox.objects.create(
        name="Support desk",
        host="imap.invalid",
        username="support@crm.test",
        address="support@crm.test",
        owner=org.charlie,
    )
    Folder.objects.create(mailbox=box, name="INBOX", selected=True)
    Rule.objects.create(
        mailbox=box, position=0, actions=[{"type": "create_ticket", "create_lead": True}]
    )
    return box


def convert(mailbox: Mailbox, raw: bytes) -> LedgerEntry:
    return scanner.process(mailbox, mailbox.folders.get(), 7, next(_uids), raw)


def test_the_origin_names_the_mailbox_sender_recipients_and_the_lead_made_for_it(mailbox: Mailbox):
    entry = convert(mailbox, QUESTION)

    ticket = Record.objects.get(module__name="Tickets")
    lead = Record.objects.get(module__name="Leads")
    origin = TicketOrigin.objects.get(ticket=ticket)
    assert origin.mailbox == mailbox
    assert origin.ledger_entry == entry
    assert origin.message is not None
    assert origin.message.message_id == "question-1@acme.example"
    assert (origin.sender_name, origin.sender_address) == ("Anna Rossi", "anna.rossi@acme.example")
    assert [a["email"] for a in origin.recipients["to"]] == ["support@crm.test", "help@crm.test"]
    assert [a["email"] for a in origin.recipients["cc"]] == ["boss@acme.example"]
    assert origin.received_at is not None
    assert origin.received_at.isoformat() == "2026-11-23T09:00:00+00:00"
    assert origin.created_lead == lead


def test_a_lead_that_was_already_there_is_not_the_tickets_own(mailbox: Mailbox, org: Org):
    existing = make_record(
        "Leads", org.charlie, last_name="Rossi", email="anna.rossi@acme.example", status="New"
    )

    convert(mailbox, QUESTION)

    origin = TicketOrigin.objects.get()
    assert origin.created_lead is None
    assert Record.objects.filter(module__name="Leads").get() == existing


def test_a_ticket_updated_by_a_reply_keeps_one_origin(mailbox: Mailbox):
    convert(mailbox, QUESTION)
    ticket = Record.objects.get(module__name="Tickets")
    Rule.objects.filter(mailbox=mailbox).update(actions=[{"type": "update_ticket"}])
    reply = mail("reply_with_ticket_number_in_subject.eml", number=ticket.number)

    convert(mailbox, reply)

    assert TicketOrigin.objects.get().ticket == ticket


def logged_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def page_of(ticket: Record) -> str:
    return reverse("crm:record_detail", kwargs={"module": "Tickets", "pk": ticket.pk})


def test_the_ticket_page_shows_mail_information_to_whoever_sees_the_ticket(
    mailbox: Mailbox, org: Org
):
    convert(mailbox, QUESTION)
    ticket = Record.objects.get(module__name="Tickets")

    for user in (org.charlie, org.admin):
        answer = logged_in(user).get(page_of(ticket))
        assert answer.status_code == 200
        page = answer.content.decode()
        assert "Mail information" in page
        assert "Support desk" in page
        assert "anna.rossi@acme.example" in page
        assert "Anna Rossi" in page
        assert "Help Desk &lt;help@crm.test&gt;" in page
        assert "Boss &lt;boss@acme.example&gt;" in page
        assert "23 Nov 2026, 09:00" in page


def test_who_may_not_see_the_ticket_sees_no_mail_information(mailbox: Mailbox, org: Org):
    convert(mailbox, QUESTION)
    ticket = Record.objects.get(module__name="Tickets")

    answer = logged_in(org.bob).get(page_of(ticket))
    assert answer.status_code == 404
    assert "anna.rossi@acme.example" not in answer.content.decode()
    anonymous = Client().get(page_of(ticket))
    assert anonymous.status_code == 302
    assert anonymous["Location"].startswith(reverse("login"))


def test_a_ticket_typed_in_by_hand_has_no_mail_information(mailbox: Mailbox, org: Org):
    typed = make_record("Tickets", org.charlie, title="Phone call", status="Open")
    page = logged_in(org.charlie).get(page_of(typed)).content.decode()
    assert "Mail information" not in page
    assert "Mark as spam" not in page
