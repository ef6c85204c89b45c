"""Rule actions through `scanner.process`, the one-message path (no IMAP server needed)."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from crm.models import Comment, Message, MessageLink, Module, Record, User
from crm.models.modules import Sharing
from crm.services import ingest
from crm.services import records as record_service
from mailconverter import scanner
from mailconverter.models import Folder, LedgerEntry, Mailbox, Outcome, Rule
from tests.conftest import Org
from tests.factories import make_record
from tests.mailconverter.helpers import mail

pytestmark = pytest.mark.django_db
_uids = itertools.count(1)


def mailbox_with(owner: User, *rules: dict[str, Any]) -> tuple[Mailbox, Folder]:
    mailbox = Mailbox.objects.create(
        name="support",
        host="imap.invalid",
        username="support@crm.test",
        address="support@crm.test",
        owner=owner,
    )
    folder = Folder.objects.create(mailbox=mailbox, name="INBOX", selected=True)
    for position, rule in enumerate(rules):
        Rule.objects.create(
            mailbox=mailbox,
            position=position,
            conditions=rule.get("conditions", []),
            actions=rule["actions"],
            stop_after_match=rule.get("stop", True),
        )
    return mailbox, folder


def convert(mailbox: Mailbox, folder: Folder, raw: bytes) -> LedgerEntry:
    return scanner.process(mailbox, folder, 1, next(_uids), raw)


def linked_to(raw_message_id: str) -> set[int]:
    message = Message.objects.get(message_id=raw_message_id)
    return set(MessageLink.objects.filter(message=message).values_list("record_id", flat=True))


def test_linking_by_recipients_links_every_match_but_never_our_own_address(org: Org) -> None:
    to_contact = make_record("Contacts", org.admin, last_name="Support", email="support@crm.test")
    bob = make_record("Contacts", org.admin, last_name="Manager", email="bob@acme.example")
    bob_again = make_record("Contacts", org.admin, last_name="M.", email="BOB@acme.example")
    mailbox, folder = mailbox_with(
        org.admin, {"actions": [{"type": "link", "module": "Contacts", "by": "recipients"}]}
    )
    raw = mail("customer_question.eml").replace(
        b"To: Support <support@crm.test>", b"To: Support <support@crm.test>\r\nCc: bob@acme.example"
    )
    entry = convert(mailbox, folder, raw)
    assert entry.outcome == Outcome.LINKED
    assert linked_to("question-1@acme.example") == {bob.pk, bob_again.pk}
    assert to_contact.pk not in {r.pk for r in entry.records.all()}


def test_link_or_create_makes_the_company_once_and_then_finds_it_by_domain(org: Org) -> None:
    mailbox, folder = mailbox_with(
        org.admin, {"actions": [{"type": "link_or_create", "module": "Companies"}]}
    )
    convert(mailbox, folder, mail("customer_question.eml"))
    [company] = Record.objects.filter(module__name="Companies")
    assert (company.data["name"], company.data["email"]) == (
        "Anna Rossi",
        "anna.rossi@acme.example",
    )
    colleague = (
        mail("customer_question.eml")
        .replace(b"anna.rossi@acme.example", b"carl@acme.example")
        .replace(b"question-1@", b"question-9@")
    )
    entry = convert(mailbox, folder, colleague)
    assert entry.outcome == Outcome.LINKED
    assert Record.objects.filter(module__name="Companies").count() == 1
    assert linked_to("question-9@acme.example") == {company.pk}


def test_a_free_mail_domain_never_links_a_company(org: Org) -> None:
    make_record("Companies", org.admin, name="Someone", email="someone@gmail.com")
    mailbox, folder = mailbox_with(
        org.admin, {"actions": [{"type": "link", "module": "Companies"}]}
    )
    raw = mail("customer_question.eml").replace(b"anna.rossi@acme.example", b"anna@gmail.com")
    assert convert(mailbox, folder, raw).outcome == Outcome.UNMATCHED


def test_a_ticket_gets_the_senders_contact_and_its_company(org: Org) -> None:
    company = make_record("Companies", org.admin, name="Acme")
    contact = make_record(
        "Contacts",
        org.admin,
        last_name="Rossi",
        email="anna.rossi@acme.example",
        company=company.pk,
    )
    mailbox, folder = mailbox_with(org.admin, {"actions": [{"type": "create_ticket"}]})
    entry = convert(mailbox, folder, mail("customer_question.eml"))
    [ticket] = entry.records.all()
    assert (ticket.data["contact"], ticket.data["company"]) == (contact.pk, company.pk)


def test_an_unknown_sender_becomes_a_lead_when_the_rule_asks(org: Org) -> None:
    mailbox, folder = mailbox_with(
        org.admin, {"actions": [{"type": "create_ticket", "create_lead": True}]}
    )
    entry = convert(mailbox, folder, mail("customer_question.eml"))
    assert entry.outcome == Outcome.CREATED
    modules = sorted(r.module.name for r in entry.records.all())
    assert modules == ["Leads", "Tickets"]
    lead = Record.objects.get(module__name="Leads")
    assert (lead.data["last_name"], lead.data["source"]) == ("Rossi", "Email")
    assert linked_to("question-1@acme.example") == {r.pk for r in entry.records.all()}


def test_a_contacts_company_the_owner_may_not_see_is_left_off_the_ticket(org: Org) -> None:
    Module.objects.filter(name="Companies").update(default_sharing=Sharing.PRIVATE)
    hidden = make_record("Companies", org.charlie, name="Acme")  # another branch's company
    contact = make_record(
        "Contacts", org.alice, last_name="Rossi", email="anna.rossi@acme.example", company=hidden.pk
    )
    mailbox, folder = mailbox_with(org.alice, {"actions": [{"type": "create_ticket"}]})
    entry = convert(mailbox, folder, mail("customer_question.eml"))
    assert entry.outcome == Outcome.CREATED, entry.reason
    [ticket] = entry.records.all()
    assert ticket.data["contact"] == contact.pk
    assert not ticket.data.get("company")


@pytest.mark.parametrize("label", ["Ticket Id: ", "TICKET ID:", "ticket id "])
def test_ticket_id_in_the_body_updates_the_ticket(org: Org, label: str) -> None:
    ticket = make_record("Tickets", org.admin, title="Printer", status="Wait for response")
    mailbox, folder = mailbox_with(org.admin, {"actions": [{"type": "update_ticket"}]})
    raw = mail("customer_question.eml").replace(
        b"Please help.", f"Please help.\r\n\r\n{label}{ticket.number}".encode()
    )
    entry = convert(mailbox, folder, raw)
    assert entry.outcome == Outcome.UPDATED
    ticket.refresh_from_db()
    assert ticket.data["status"] == "Answered by customer"
    assert Comment.objects.filter(record=ticket).count() == 1


def test_a_ticket_number_in_another_case_updates_the_ticket_it_names(org: Org) -> None:
    Module.objects.filter(name="Tickets").update(number_prefix="Tk-")
    other = make_record("Tickets", org.admin, title="Other", status="Wait for response")
    ticket = make_record("Tickets", org.admin, title="Printer", status="Wait for response")
    assert ticket.number.startswith("Tk-")
    mailbox, folder = mailbox_with(org.admin, {"actions": [{"type": "update_ticket"}]})
    written = ticket.number.upper()  # "TK-2": as a customer may type it
    raw = mail("reply_with_ticket_number_in_subject.eml", number=written)
    entry = convert(mailbox, folder, raw)
    assert entry.outcome == Outcome.UPDATED
    assert [r.pk for r in entry.records.all()] == [ticket.pk]
    assert not Comment.objects.filter(record=other).exists()


def test_a_reply_finds_the_ticket_among_the_records_its_question_is_linked_to(
    org: Org,
) -> None:
    contact = make_record("Contacts", org.admin, last_name="Rossi", email="anna@acme.example")
    ticket = make_record("Tickets", org.admin, title="Printer", status="Wait for response")
    question = (
        b"From: anna@acme.example\r\nTo: support@crm.test\r\n"
        b"Subject: Printer\r\nMessage-ID: <answer-1@crm.test>\r\n\r\nIt jams.\r\n"
    )
    stored = ingest.store(question, source="import")
    ingest.link(message=stored.message, record=ticket, actor=None, via="import")
    ingest.link(message=stored.message, record=contact, actor=None, via="import")  # linked last
    mailbox, folder = mailbox_with(org.admin, {"actions": [{"type": "update_ticket"}]})
    reply = mail("reply_threaded_by_in_reply_to.eml").replace(
        b"question-1@acme.example", b"answer-1@crm.test"
    )
    entry = convert(mailbox, folder, reply)
    assert entry.outcome == Outcome.UPDATED
    assert [r.pk for r in entry.records.all()] == [ticket.pk]


def test_a_reply_to_the_crms_own_answer_threads_back_to_its_ticket(org: Org) -> None:
    ticket = make_record("Tickets", org.admin, title="Printer", status="Wait for response")
    answer = (
        b"From: support@crm.test\r\nTo: anna.rossi@acme.example\r\n"
        b"Subject: Re: Printer\r\nMessage-ID: <answer-1@crm.test>\r\n\r\nOn our way.\r\n"
    )
    stored = ingest.store(answer, source="crm", direction="outgoing")
    ingest.link(message=stored.message, record=ticket, actor=None, via="crm")
    mailbox, folder = mailbox_with(org.admin, {"actions": [{"type": "update_ticket"}]})
    reply = mail("reply_threaded_by_in_reply_to.eml").replace(
        b"question-1@acme.example", b"answer-1@crm.test"
    )
    entry = convert(mailbox, folder, reply)
    assert entry.outcome == Outcome.UPDATED
    assert "In-Reply-To" in entry.reason
    assert [r.pk for r in entry.records.all()] == [ticket.pk]


def test_a_ticket_in_the_recycle_bin_is_not_updated_and_the_next_rule_applies(
    org: Org,
) -> None:
    ticket = make_record("Tickets", org.admin, title="Printer", status="Closed")
    record_service.delete(actor=org.admin, record=ticket)
    mailbox, folder = mailbox_with(
        org.admin,
        {"actions": [{"type": "update_ticket"}]},
        {"actions": [{"type": "create_ticket"}]},
    )
    raw = mail("reply_with_ticket_number_in_subject.eml", number=ticket.number)
    entry = convert(mailbox, folder, raw)
    assert entry.outcome == Outcome.CREATED
    assert Record.objects.filter(module__name="Tickets", deleted_at=None).count() == 1


def test_continuing_after_a_match_runs_the_next_rule_too(org: Org) -> None:
    contact = make_record("Contacts", org.admin, last_name="Rossi", email="anna.rossi@acme.example")
    mailbox, folder = mailbox_with(
        org.admin,
        {"actions": [{"type": "create_ticket"}], "stop": False},
        {"actions": [{"type": "link", "module": "Contacts"}]},
        {"actions": [{"type": "create_ticket"}]},  # not reached: the rule above stops
    )
    entry = convert(mailbox, folder, mail("customer_question.eml"))
    assert entry.outcome == Outcome.CREATED
    assert Record.objects.filter(module__name="Tickets").count() == 1
    assert contact.pk in linked_to("question-1@acme.example")


def test_a_do_nothing_rule_stops_processing_and_is_recorded(org: Org) -> None:
    mailbox, folder = mailbox_with(
        org.admin,
        {
            "conditions": [{"field": "subject", "operator": "contains", "value": "fire"}],
            "actions": [{"type": "nothing"}],
        },
        {"actions": [{"type": "create_ticket"}]},
    )
    entry = convert(mailbox, folder, mail("customer_question.eml"))
    assert entry.outcome == Outcome.IGNORED
    assert not Record.objects.filter(module__name="Tickets").exists()


def test_actions_are_validated_in_words() -> None:
    from mailconverter.actions import validate

    assert validate([{"type": "create_ticket"}, {"type": "link", "module": "Leads"}]) == {}
    assert validate([]) == {0: "Add at least one action."}
    problems = validate(
        [
            {"type": "explode"},
            {"type": "link", "module": "Tickets"},
            {"type": "link_or_create", "module": "Contacts", "by": "anyone"},
        ]
    )
    assert problems == {
        0: "Choose an action.",
        1: "Link to one of Contacts, Companies, Leads.",
        2: "Link by the sender, the recipients or both.",
    }


def test_rotating_the_key_rewrites_every_stored_password(org: Org, settings: Any) -> None:
    from cryptography.fernet import Fernet

    from mailconverter import services

    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.FIELD_ENCRYPTION_KEY = old
    mailbox, _ = mailbox_with(org.admin)
    mailbox.set_password("s3cret")
    mailbox.save()
    settings.FIELD_ENCRYPTION_KEY = f"{new},{old}"
    assert services.rotate_secrets() == 1
    settings.FIELD_ENCRYPTION_KEY = new
    mailbox.refresh_from_db()
    assert mailbox.password == "s3cret"
