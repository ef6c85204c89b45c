"""Answers by mail and comments mailed to the customer, with a real Dovecot and real SMTP peers.

Charlie (support agent) owns the support mailbox and its tickets. Anna writes to the mailbox;
the converter makes a ticket; Charlie answers; what Anna's server receives is captured by an
aiosmtpd peer (the mailbox's own SMTP server for "info" mail, the CRM's outgoing server for
mail from Charlie's address); Anna's reply is built from what she received, delivered into
Dovecot, and the next scan must put it on the same ticket.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from crm.exceptions import Forbidden
from crm.models import Comment, Message, MessageLink, OutgoingMail, Record, User
from crm.services import records as record_service
from mailconverter import replies, scanner
from mailconverter.models import Folder, Mailbox, MailboxSmtp, Outcome, Rule
from tests.conftest import Org
from tests.crm.smtp_peer import Received, SmtpPeer, use_as_outgoing_server
from tests.factories import ProfileFactory, UserFactory, grant, grant_all, make_record
from tests.mailconverter.conftest import PASSWORD, Account, Dovecot
from tests.mailconverter.helpers import mail as fixture_mail

pytestmark = [
    pytest.mark.imap,
    pytest.mark.smtp,
    pytest.mark.django_db,
    pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS"),
]

Commit = Callable[..., AbstractContextManager[Any]]
ANNA = "anna.rossi@acme.example"
INFO_LOGIN = ("support-smtp", "smtp-secret")


@dataclass
class Desk:
    account: Account
    mailbox: Mailbox
    charlie: User
    info: SmtpPeer  # the mailbox's own SMTP server
    crm: SmtpPeer  # the CRM's outgoing server
    commit: Commit

    def scan(self, *raws: bytes, mailbox: Mailbox | None = None) -> dict[str, int]:
        for raw in raws:
            self.account.deliver(raw)
        with self.commit(execute=True):
            run = scanner.scan(mailbox or self.mailbox)
        return dict(run.counts)


@pytest.fixture
def info_peer() -> Iterator[SmtpPeer]:
    p = SmtpPeer(login=INFO_LOGIN).start()
    yield p
    p.stop()


@pytest.fixture
def crm_peer() -> Iterator[SmtpPeer]:
    p = SmtpPeer().start()
    yield p
    p.stop()


@pytest.fixture(autouse=True)
def _base_url(settings: Any) -> None:
    settings.CRM_BASE_URL = "https://crm.example.com"


def configure_crm_server(org: Org, peer: SmtpPeer, **changes: Any) -> None:
    use_as_outgoing_server(org.admin, peer.host, peer.port, **({"timeout_seconds": 5} | changes))


def support_mailbox(
    account: Account, owner: User, name: str, address: str, info: SmtpPeer
) -> Mailbox:
    mailbox = Mailbox(
        name=name,
        host="127.0.0.1",
        port=account.server.port,
        security=Mailbox.Security.NONE,
        username=account.user,
        address=address,
        owner=owner,
    )
    mailbox.set_password(PASSWORD)
    mailbox.save()
    Folder.objects.create(mailbox=mailbox, name="INBOX", selected=True)
    # Replies go to their ticket; anything else makes a new one.
    Rule.objects.create(mailbox=mailbox, position=0, actions=[{"type": "update_ticket"}])
    Rule.objects.create(
        mailbox=mailbox, position=1, actions=[{"type": "create_ticket", "create_lead": True}]
    )
    smtp = MailboxSmtp(
        mailbox=mailbox, host=info.host, port=info.port, security="none", username=INFO_LOGIN[0]
    )
    smtp.set_password(INFO_LOGIN[1])
    smtp.save()
    return mailbox


@pytest.fixture
def desk(
    org: Org,
    account: Account,
    info_peer: SmtpPeer,
    crm_peer: SmtpPeer,
    django_capture_on_commit_callbacks: Commit,
) -> Desk:
    configure_crm_server(org, crm_peer)
    org.charlie.email, org.charlie.first_name, org.charlie.last_name = (
        "charlie@crm.example",
        "Charlie",
        "Brown",
    )
    org.charlie.save()
    mailbox = support_mailbox(account, org.charlie, "Support", "support@crm.test", info_peer)
    return Desk(
        account, mailbox, org.charlie, info_peer, crm_peer, django_capture_on_commit_callbacks
    )


def the_ticket() -> Record:
    [ticket] = Record.objects.filter(module__name="Tickets")
    return ticket


def ticket_from_anna(desk: Desk) -> Record:
    assert desk.scan(fixture_mail("customer_question.eml")) == {Outcome.CREATED: 1}
    return the_ticket()


def answer(desk: Desk, ticket: Record, text: str, *, info: bool = True, **kw: Any) -> Received:
    peer = desk.info if info else desk.crm
    before = len(peer.received)
    with desk.commit(execute=True):
        replies.answer(
            actor=desk.charlie, ticket=ticket, body_html=f"<p>{text}</p>", info=info, **kw
        )
    assert len(peer.received) == before + 1
    return peer.received[-1]


def reply_from_anna(received: Received, text: str, *, subject: str | None = None) -> bytes:
    """What Anna's mail client sends when she answers what she received."""
    got = received.message
    msg = EmailMessage()
    msg["From"] = f"Anna Rossi <{ANNA}>"
    msg["To"] = got["From"]
    msg["Subject"] = (
        subject if subject is not None else f"Re: {got['Subject'].removeprefix('Re: ')}"
    )
    msg["Date"] = format_datetime(timezone.now())
    msg["Message-ID"] = make_msgid(domain="acme.example")
    msg["In-Reply-To"] = got["Message-ID"]
    msg["References"] = f"{got['References'] or ''} {got['Message-ID']}".strip()
    quoted = "\n".join(f"> {line}" for line in got.get_body(("plain",)).get_content().splitlines())
    msg.set_content(f"{text}\n\n{quoted}\n")
    return bytes(msg)


def comments(ticket: Record) -> list[Comment]:
    return list(Comment.objects.filter(record=ticket).order_by("created_at", "pk"))


# --- The round trip ------------------------------------------------------------------------


@pytest.mark.parametrize("keeps_subject", [True, False], ids=["by-subject", "by-references"])
def test_an_info_answer_reaches_the_customer_and_her_reply_comes_back_to_the_ticket(
    desk: Desk, keeps_subject: bool
) -> None:
    ticket = ticket_from_anna(desk)
    assert ticket.data["title"] == "Printer on fire"

    sent = answer(desk, ticket, "A technician is on his way.")

    msg = sent.message
    assert sent.mail_from == "support@crm.test"
    assert sent.rcpt_tos == (ANNA,)
    assert msg["From"] == "Support <support@crm.test>"
    assert msg["To"] == ANNA
    assert msg["Subject"] == f"Re: Printer on fire - Ticket Id: {ticket.number}"
    assert msg["In-Reply-To"] == "<question-1@acme.example>"
    assert msg["References"] == "<question-1@acme.example>"
    assert msg["Auto-Submitted"] is None  # a person answered
    text = msg.get_body(("plain",)).get_content()
    assert text.startswith("A technician is on his way.")
    assert "On Mon, 23 Nov 2026 at 09:00, Anna Rossi wrote:" in text
    assert "> our printer is on fire. Please help." in text
    assert "<blockquote>" in msg.get_body(("html",)).get_content()
    # On the ticket: the sent mail among its messages, the answer as Charlie's comment, and
    # the ticket waiting for Anna.
    ticket.refresh_from_db()
    assert ticket.data["status"] == "Wait for response"
    stored = Message.objects.get(message_id=msg["Message-ID"].strip("<>"))
    assert stored.direction == "outgoing"
    assert MessageLink.objects.filter(message=stored, record=ticket).exists()
    [comment] = comments(ticket)
    assert comment.author == desk.charlie
    assert comment.body == "A technician is on his way."
    assert comment.mail_note == f"Sent by mail to {ANNA}"

    # Anna answers; her client may keep the subject, or lose the number and keep References.
    subject = None if keeps_subject else "Re: thanks"
    counts = desk.scan(reply_from_anna(sent, "Thanks, it is out.", subject=subject))

    assert counts == {Outcome.UPDATED: 1}
    assert the_ticket().pk == ticket.pk
    ticket.refresh_from_db()
    assert ticket.data["status"] == "Answered by customer"
    customer = comments(ticket)[-1]
    assert customer.via_mail
    assert customer.author_address == ANNA
    assert customer.body.startswith("Thanks, it is out.")
    # Her comment came by mail: it is not mailed back to her.
    assert len(desk.info.received) == 1
    assert customer.mail_note == ""


def test_a_reply_to_a_closed_ticket_reopens_it(desk: Desk) -> None:
    ticket = ticket_from_anna(desk)
    sent = answer(desk, ticket, "Fixed, closing.")
    ticket = record_service.update(actor=desk.charlie, record=ticket, data={"status": "Closed"})

    assert desk.scan(reply_from_anna(sent, "It is burning again!")) == {Outcome.UPDATED: 1}

    ticket.refresh_from_db()
    assert ticket.data["status"] == "Answered by customer"
    assert Record.objects.filter(module__name="Tickets").count() == 1


def test_an_answer_replies_to_the_newest_customer_message_and_threads_after_it(
    desk: Desk,
) -> None:
    ticket = ticket_from_anna(desk)
    first = answer(desk, ticket, "Which model is it?")
    desk.scan(reply_from_anna(first, "A LaserJet 4."))
    second = answer(desk, ticket, "Thanks, ordering the part.")

    msg = second.message
    anna_reply = Message.objects.filter(from_address=ANNA).latest("stored_at")
    assert msg["In-Reply-To"] == f"<{anna_reply.message_id}>"
    # Her References (the first question, the first answer), then her reply itself.
    assert msg["References"].split() == [
        "<question-1@acme.example>",
        first.message["Message-ID"],
        f"<{anna_reply.message_id}>",
    ]
    assert "> A LaserJet 4." in msg.get_body(("plain",)).get_content()
    assert msg["Subject"] == f"Re: Printer on fire - Ticket Id: {ticket.number}"


def test_the_ticket_documents_chosen_are_attached(desk: Desk) -> None:
    assert desk.scan(fixture_mail("customer_question_with_attachment.eml"))[Outcome.CREATED] == 1
    ticket = the_ticket()
    draft = replies.draft(actor=desk.charlie, ticket=ticket, info=True)
    assert draft.documents, "the customer's attachment is among the ticket's documents"
    document = draft.documents[0]

    sent = answer(desk, ticket, "Here it is back.", documents=[document.pk])

    names = [part.get_filename() for part in sent.message.iter_attachments()]
    assert names == [document.title]


# --- From the user's address ---------------------------------------------------------------


def test_answer_by_mail_leaves_from_the_users_address_through_the_crms_server(
    desk: Desk,
) -> None:
    ticket = ticket_from_anna(desk)

    sent = answer(desk, ticket, "I will call you.", info=False)

    msg = sent.message
    assert sent.mail_from == "charlie@crm.example"
    assert msg["From"] == "Charlie Brown <charlie@crm.example>"
    assert msg["Reply-To"] is None
    assert msg["Subject"] == f"Re: Printer on fire - Ticket Id: {ticket.number}"
    assert msg["In-Reply-To"] == "<question-1@acme.example>"
    assert desk.info.received == []


def test_with_a_central_address_the_answer_leaves_from_it_with_reply_to_the_user(
    org: Org, desk: Desk
) -> None:
    configure_crm_server(
        org, desk.crm, from_central=True, central_address="help@crm.example", central_name="Help"
    )
    ticket = ticket_from_anna(desk)

    msg = answer(desk, ticket, "I will call you.", info=False).message

    assert msg["From"] == "Help <help@crm.example>"
    assert msg["Reply-To"] == "Charlie Brown <charlie@crm.example>"


# --- Comments mailed to the customer -------------------------------------------------------


def test_a_crm_comment_on_a_converter_ticket_is_mailed_to_the_customer(desk: Desk) -> None:
    ticket = ticket_from_anna(desk)

    with desk.commit(execute=True):
        comment = record_service.add_comment(
            actor=desk.charlie, record=ticket, body="The part arrives tomorrow."
        )

    [sent] = desk.info.received
    msg = sent.message
    assert sent.mail_from == "support@crm.test"
    assert sent.rcpt_tos == (ANNA,)
    assert msg["Auto-Submitted"] == "auto-replied"
    assert msg["Subject"] == f"Re: Printer on fire - Ticket Id: {ticket.number}"
    assert msg["In-Reply-To"] == "<question-1@acme.example>"
    assert msg.get_body(("plain",)).get_content().startswith("The part arrives tomorrow.")
    comment.refresh_from_db()
    assert comment.mail_note == f"Mailed to {ANNA}"
    client = Client()
    client.force_login(desk.charlie)
    tab = client.get(reverse("crm:record_tab", args=["Tickets", ticket.pk, "comments"]))
    assert f"Comments added here are mailed to {ANNA}".encode() in tab.content
    assert f"Mailed to {ANNA}".encode() in tab.content
    assert OutgoingMail.objects.get(message__message_id=msg["Message-ID"].strip("<>")).automatic
    # An answer's own comment is not mailed a second time.
    answer(desk, ticket, "One more thing.")
    assert len(desk.info.received) == 2


def test_a_comment_is_never_mailed_to_a_no_reply_address_and_says_why(desk: Desk) -> None:
    raw = fixture_mail("customer_question.eml").replace(
        b"Subject:", b"Reply-To: Shop <no-reply@acme.example>\r\nSubject:", 1
    )
    assert desk.scan(raw) == {Outcome.CREATED: 1}
    ticket = the_ticket()

    with desk.commit(execute=True):
        comment = record_service.add_comment(actor=desk.charlie, record=ticket, body="Noted.")

    comment.refresh_from_db()
    assert comment.mail_note.startswith("Not mailed: no-reply@acme.example is an automatic")
    assert desk.info.received == []
    assert not OutgoingMail.objects.exists()


def test_a_comment_on_a_ticket_made_by_hand_mails_nothing(org: Org, desk: Desk) -> None:
    ticket = make_record(
        "Tickets", desk.charlie, title="Phone call", status="Open", priority="Normal"
    )

    with desk.commit(execute=True):
        comment = record_service.add_comment(actor=desk.charlie, record=ticket, body="Called.")
    client = Client()
    client.force_login(desk.charlie)
    tab = client.get(reverse("crm:record_tab", args=["Tickets", ticket.pk, "comments"]))
    assert b"Called." in tab.content
    assert b"mailed to" not in tab.content.lower()

    assert desk.info.received == []
    assert desk.crm.received == []
    comment.refresh_from_db()
    assert comment.mail_note == ""
    assert not OutgoingMail.objects.exists()


def test_automatic_mail_stops_at_the_hourly_cap_of_its_mailbox_and_says_so(
    org: Org, desk: Desk, dovecot: Dovecot
) -> None:
    configure_crm_server(org, desk.crm, hourly_cap=1)
    ticket = ticket_from_anna(desk)
    other_account = dovecot.add_account()
    other = support_mailbox(other_account, desk.charlie, "Sales", "sales@crm.test", desk.info)
    other_account.deliver(
        fixture_mail("customer_question.eml")
        .replace(b"question-1@acme.example", b"question-2@acme.example")
        .replace(b"Printer on fire", b"Quote for toner")
    )
    with desk.commit(execute=True):
        scanner.scan(other)
    sales_ticket = Record.objects.get(module__name="Tickets", data__title="Quote for toner")

    with desk.commit(execute=True):
        first = record_service.add_comment(actor=desk.charlie, record=ticket, body="One.")
    with desk.commit(execute=True):
        second = record_service.add_comment(actor=desk.charlie, record=ticket, body="Two.")
    with desk.commit(execute=True):
        elsewhere = record_service.add_comment(
            actor=desk.charlie, record=sales_ticket, body="Three."
        )

    for c in (first, second, elsewhere):
        c.refresh_from_db()
    assert first.mail_note == f"Mailed to {ANNA}"
    assert second.mail_note.startswith("Not mailed: support@crm.test already sent 1 automatic")
    assert Comment.objects.filter(pk=second.pk).exists()  # the comment itself stays
    # The cap counts per sending mailbox: the other mailbox still mails.
    assert elsewhere.mail_note == f"Mailed to {ANNA}"
    assert [r.mail_from for r in desk.info.received] == ["support@crm.test", "sales@crm.test"]
    # A person's answer is not automatic mail: the cap does not hold it back.
    answer(desk, ticket, "Answered by hand.")


# --- Permission ----------------------------------------------------------------------------


def test_a_user_who_may_only_view_the_ticket_cannot_answer(org: Org, desk: Desk) -> None:
    viewers = ProfileFactory(name="Viewers")
    grant_all(viewers)
    grant(viewers, "Tickets", "view")
    org.support_manager.profiles.set([viewers])
    vera = UserFactory(username="vera", role=org.support_manager, email="vera@crm.example")
    ticket = ticket_from_anna(desk)

    with pytest.raises(Forbidden), desk.commit(execute=True):
        replies.answer(actor=vera, ticket=ticket, body_html="<p>Hi</p>", info=True)

    client = Client()
    client.force_login(vera)
    page = client.get(reverse("crm:record_detail", args=["Tickets", ticket.pk]))
    assert page.status_code == 200
    assert b"Answer by mail" not in page.content
    assert client.get(reverse("converter_answers:answer_info", args=[ticket.pk])).status_code == 403
    posted = client.post(reverse("converter_answers:answer_info", args=[ticket.pk]), {"body": "Hi"})
    assert posted.status_code == 403
    # Her comment stays in the CRM: mailing the customer needs edit access.
    with desk.commit(execute=True):
        comment = record_service.add_comment(actor=vera, record=ticket, body="Seen.")
    comment.refresh_from_db()
    assert comment.mail_note.startswith("Not mailed:")
    assert desk.info.received == []
    assert desk.crm.received == []
    assert not OutgoingMail.objects.exists()
    ticket.refresh_from_db()
    assert ticket.data["status"] == "Open"


# --- Pages ---------------------------------------------------------------------------------


def test_the_answer_page_sends_and_returns_to_the_messages_tab(desk: Desk) -> None:
    ticket = ticket_from_anna(desk)
    client = Client()
    client.force_login(desk.charlie)

    detail = client.get(reverse("crm:record_detail", args=["Tickets", ticket.pk]))
    url = reverse("converter_answers:answer_info", args=[ticket.pk])
    assert url.encode() in detail.content
    page = client.get(url)
    assert page.status_code == 200
    assert b"Support &lt;support@crm.test&gt;" in page.content
    assert b"our printer is on fire" in page.content
    empty = client.post(url, {"body": "  "})
    assert empty.status_code == 400
    assert b"Write your answer first." in empty.content
    assert desk.info.received == []

    with desk.commit(execute=True):
        done = client.post(url, {"body": "On <b>its</b> way."})

    assert done.status_code == 302
    assert (
        done["Location"].endswith(f"/{ticket.pk}/?tab=messages")
        or "tab=messages" in done["Location"]
    )
    [sent] = desk.info.received
    # What was typed is text: markup in it is shown as typed, never interpreted.
    assert "On <b>its</b> way." in sent.message.get_body(("plain",)).get_content()


def test_administrators_set_a_mailboxs_outgoing_server_with_a_write_only_password(
    org: Org, desk: Desk
) -> None:
    client = Client()
    client.force_login(org.admin)
    url = reverse("mailconverter:smtp", args=[desk.mailbox.pk])
    page = client.get(url)
    assert page.status_code == 200
    assert INFO_LOGIN[1].encode() not in page.content
    assert b"A password is saved" in page.content

    saved = client.post(
        url,
        {
            "host": "smtp.crm.test",
            "port": "465",
            "security": "ssl",
            "username": "bot",
            "password": "",
        },
    )
    assert saved.status_code == 400  # a new user name needs its password
    saved = client.post(
        url,
        {
            "host": "smtp.crm.test",
            "port": "465",
            "security": "ssl",
            "username": "bot",
            "password": "bot-Secret-42",
        },
    )
    assert saved.status_code == 302
    row = MailboxSmtp.objects.get(mailbox=desk.mailbox)
    assert (row.host, row.port, row.security, row.username) == ("smtp.crm.test", 465, "ssl", "bot")
    assert "bot-Secret-42" not in row.secret
    assert replies.smtp_for(desk.mailbox).password == "bot-Secret-42"

    charlie = Client()
    charlie.force_login(desk.charlie)
    assert charlie.get(url).status_code == 403


def test_the_test_button_sends_from_the_mailbox_through_its_server(org: Org, desk: Desk) -> None:
    client = Client()
    client.force_login(org.admin)
    url = reverse("mailconverter:smtp", args=[desk.mailbox.pk])

    page = client.post(url, {"test_to": "admin@crm.example"})

    assert b"Sent. The server accepted the test mail for admin@crm.example" in page.content
    [sent] = desk.info.received
    assert sent.mail_from == "support@crm.test"
    assert sent.message["From"] == "Support <support@crm.test>"
    assert desk.crm.received == []
    # A wrong password is the server's answer, in words.
    row = MailboxSmtp.objects.get(mailbox=desk.mailbox)
    row.set_password("wrong")
    row.save()
    page = client.post(url, {"test_to": "admin@crm.example"})
    assert b"Not sent. The server refused the user name or password" in page.content
    assert len(desk.info.received) == 1


def test_without_its_own_smtp_settings_a_mailbox_sends_through_its_own_server(
    desk: Desk,
) -> None:
    MailboxSmtp.objects.filter(mailbox=desk.mailbox).delete()

    server = replies.smtp_for(desk.mailbox)

    assert server is not None
    assert (server.host, server.port, server.security) == ("127.0.0.1", 587, "none")
    assert (server.username, server.password) == (desk.account.user, PASSWORD)
    desk.mailbox.auth = Mailbox.Auth.XOAUTH2
    assert replies.smtp_for(desk.mailbox) is None  # OAuth2: the CRM's server
