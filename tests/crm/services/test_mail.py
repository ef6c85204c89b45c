"""Sending mail from the CRM: what the customer's server receives, what the record keeps, and
how failures are retried or shown. The SMTP server is a real one (aiosmtpd, tests/crm/smtp_peer).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from crm import tasks
from crm.exceptions import Forbidden, Invalid, NotFound
from crm.models import (
    Document,
    Message,
    MessageLink,
    Module,
    OutgoingMail,
    QuarantinedMessage,
    Record,
    User,
)
from crm.models.modules import Sharing
from crm.services import blobs, ingest, mail
from mailconverter.models import Mailbox, MailboxSmtp
from tests.conftest import Clock, Org
from tests.crm.smtp_peer import SmtpPeer, free_port, use_as_outgoing_server
from tests.factories import make_record
from tests.mailconverter.celery_worker import real_celery

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.smtp,
    pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS"),
]

Commit = Callable[..., AbstractContextManager[Any]]


@pytest.fixture(autouse=True)
def _media(settings: Any, tmp_path: Path) -> None:
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.CRM_BASE_URL = "https://crm.example.com"


@pytest.fixture
def peer() -> Iterator[SmtpPeer]:
    p = SmtpPeer().start()
    yield p
    p.stop()


_SETTINGS = [f.name for f in dataclasses.fields(mail.SettingsInput)]


def _configure(org: Org, host: str, port: int, **changes: Any) -> None:
    use_as_outgoing_server(org.admin, host, port, **changes)


@pytest.fixture
def server(org: Org, peer: SmtpPeer) -> SmtpPeer:
    _configure(org, peer.host, peer.port)
    return peer


def _ticket(org: Org, owner: User | None = None) -> Record:
    return make_record(
        "Tickets", owner or org.alice, title="Printer jams", status="Open", priority="Normal"
    )


def _send(
    commit: Commit, org: Org, record: Record, *, actor: User | None = None, **kw: Any
) -> OutgoingMail:
    """Send as a user would: the delivery task runs when the request's transaction commits."""
    args: dict[str, Any] = {
        "to": ["Jane Doe <jane@customer.example>"],
        "subject": "Your printer",
        "body_html": "<p>Hello Jane,</p><p>the part is <b>on its way</b>.</p>",
    } | kw
    smtp = args.pop("smtp", None)
    with commit(execute=True):
        outgoing = mail.send(
            actor=actor or org.alice, record=record, draft=mail.Draft(**args), smtp=smtp
        )
    outgoing.refresh_from_db()
    return outgoing


# --- What is sent --------------------------------------------------------------------------


def test_a_sent_email_reaches_the_server_with_its_headers_and_is_stored_once(
    org: Org, server: SmtpPeer, django_capture_on_commit_callbacks: Commit
) -> None:
    org.alice.email, org.alice.first_name, org.alice.last_name = "alice@crm.example", "Alice", "A"
    org.alice.save()
    ticket = _ticket(org)
    outgoing = _send(
        django_capture_on_commit_callbacks,
        org,
        ticket,
        body_html='<p onclick="steal()">Hello</p><script>alert(1)</script>',
    )

    assert outgoing.status == "sent"
    assert "queued as 4XyZ7Q" in outgoing.smtp_response
    [received] = server.received
    msg = received.message
    assert received.mail_from == "alice@crm.example"
    assert received.rcpt_tos == ("jane@customer.example",)
    assert msg["From"] == "Alice A <alice@crm.example>"
    assert msg["To"] == "Jane Doe <jane@customer.example>"
    assert msg["Subject"] == "Your printer"
    assert msg["Message-ID"].endswith("@crm.example.com>")
    assert msg["Date"]
    assert msg["Reply-To"] is None
    assert msg["Auto-Submitted"] is None
    assert msg.get_content_type() == "multipart/alternative"
    html = msg.get_body(("html",)).get_content()
    assert "Hello" in html
    assert "script" not in html
    assert "onclick" not in html
    assert msg.get_body(("plain",)).get_content().strip() == "Hello"
    # The record keeps exactly the bytes the server received, as one outgoing Message.
    message = Message.objects.get()
    assert blobs.read(message.raw.name) == received.data
    assert message.direction == "outgoing"
    assert message.source == "crm"
    assert message.message_id == msg["Message-ID"].strip("<>")
    assert MessageLink.objects.filter(message=message, record=ticket).exists()


def test_an_answer_carries_in_reply_to_and_references(
    org: Org, server: SmtpPeer, django_capture_on_commit_callbacks: Commit
) -> None:
    org.alice.email = "alice@crm.example"
    org.alice.save()
    _send(
        django_capture_on_commit_callbacks,
        org,
        _ticket(org),
        subject="Re: Printer jams - Ticket Id: TT1",
        in_reply_to="question-2@customer.example",
        references=["<question-1@customer.example>"],
    )
    msg = server.received[0].message
    assert msg["In-Reply-To"] == "<question-2@customer.example>"
    assert msg["References"].split() == [
        "<question-1@customer.example>",
        "<question-2@customer.example>",
    ]
    assert Message.objects.get().in_reply_to == "question-2@customer.example"


def test_with_a_central_address_mail_leaves_from_it_and_replies_go_to_the_user(
    org: Org, peer: SmtpPeer, django_capture_on_commit_callbacks: Commit
) -> None:
    _configure(
        org,
        peer.host,
        peer.port,
        from_central=True,
        central_address="crm@crm.example",
        central_name="Example Support",
    )
    org.alice.email, org.alice.first_name, org.alice.last_name = "alice@crm.example", "Alice", "A"
    org.alice.save()
    _send(django_capture_on_commit_callbacks, org, _ticket(org))
    received = peer.received[0]
    assert received.mail_from == "crm@crm.example"
    assert received.message["From"] == "Example Support <crm@crm.example>"
    assert received.message["Reply-To"] == "Alice A <alice@crm.example>"


def test_a_user_without_an_address_cannot_send_from_it(
    org: Org, server: SmtpPeer, django_capture_on_commit_callbacks: Commit
) -> None:
    org.alice.email = ""
    org.alice.save()
    with pytest.raises(Invalid, match="no email address"):
        _send(django_capture_on_commit_callbacks, org, _ticket(org))
    assert not Message.objects.exists()
    assert server.received == []


def test_bcc_is_delivered_but_never_written_in_the_headers(
    org: Org, server: SmtpPeer, django_capture_on_commit_callbacks: Commit
) -> None:
    outgoing = _send(
        django_capture_on_commit_callbacks,
        org,
        _ticket(org),
        cc=["boss@customer.example"],
        bcc=["Secret Auditor <audit@crm.example>"],
    )
    [received] = server.received
    assert set(received.rcpt_tos) == {
        "jane@customer.example",
        "boss@customer.example",
        "audit@crm.example",
    }
    assert b"audit@crm.example" not in received.data
    assert received.message["Cc"] == "boss@customer.example"
    stored = blobs.read(Message.objects.get().raw.name)
    assert b"audit@crm.example" not in stored
    assert outgoing.bcc == ["audit@crm.example"]


def test_the_email_goes_on_the_records_of_its_recipients_that_the_sender_may_see(
    org: Org, server: SmtpPeer, django_capture_on_commit_callbacks: Commit
) -> None:
    contacts = Module.objects.get(name="Contacts")
    contacts.default_sharing = Sharing.PRIVATE
    contacts.save()
    jane = make_record(contacts, org.alice, last_name="Doe", email="jane@customer.example")
    hidden = make_record(contacts, org.charlie, last_name="Roe", email="rick@customer.example")
    ticket = _ticket(org)
    _send(
        django_capture_on_commit_callbacks,
        org,
        ticket,
        to=["jane@customer.example", "rick@customer.example"],
    )
    linked = set(MessageLink.objects.values_list("record_id", flat=True))
    assert linked == {ticket.pk, jane.pk}
    assert hidden.pk not in linked
    # Both receive it (with open tracking, Jane's copy is her own: tests/crm/services/test_tracking)
    received = sorted(r for envelope in server.received for r in envelope.rcpt_tos)
    assert received == ["jane@customer.example", "rick@customer.example"]


def test_the_records_documents_and_uploaded_files_are_attached(
    org: Org, server: SmtpPeer, django_capture_on_commit_callbacks: Commit
) -> None:
    ticket = _ticket(org)
    # A document on the ticket, as an earlier customer email brought it.
    earlier = ingest.store(_customer_mail(b"%PDF-1.4 manual"), source="addin").message
    ingest.link(message=earlier, record=ticket, actor=org.alice, via="addin")
    manual = Document.objects.get()
    _send(
        django_capture_on_commit_callbacks,
        org,
        ticket,
        documents=[manual.pk],
        uploads=[
            mail.Upload("photo\r\nBcc: x@evil.example.png", "image/PNG; x=1", b"\x89PNG photo")
        ],
    )
    msg = server.received[0].message
    files = {part.get_filename(): part for part in msg.iter_attachments()}
    assert files["manual.pdf"].get_content() == b"%PDF-1.4 manual"
    assert files["manual.pdf"].get_content_type() == "application/pdf"
    photo = files["photo Bcc: x@evil.example.png"]
    assert photo.get_content() == b"\x89PNG photo"
    assert photo.get_content_type() == "image/png"
    assert msg["Bcc"] is None


def test_a_document_from_another_record_is_refused(
    org: Org, server: SmtpPeer, django_capture_on_commit_callbacks: Commit
) -> None:
    other = _ticket(org)
    earlier = ingest.store(_customer_mail(b"%PDF other"), source="addin").message
    ingest.link(message=earlier, record=other, actor=org.alice, via="addin")
    with pytest.raises(Invalid) as refused:
        _send(
            django_capture_on_commit_callbacks,
            org,
            _ticket(org),
            documents=[Document.objects.get().pk],
        )
    assert "documents" in refused.value.fields
    assert server.received == []


# --- Who may send --------------------------------------------------------------------------


def test_sending_needs_edit_access_and_an_invisible_record_is_not_found(
    org: Org, server: SmtpPeer, django_capture_on_commit_callbacks: Commit
) -> None:
    tickets = Module.objects.get(name="Tickets")
    tickets.default_sharing = Sharing.PRIVATE
    tickets.save()
    hidden = _ticket(org, owner=org.charlie)
    with pytest.raises(NotFound):
        _send(django_capture_on_commit_callbacks, org, hidden)
    tickets.default_sharing = Sharing.PUBLIC_READ
    tickets.save()
    with pytest.raises(Forbidden):
        _send(django_capture_on_commit_callbacks, org, hidden)
    assert not Message.objects.exists()
    assert server.received == []


# --- Refused before SMTP -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("subject", "Hello\r\nBcc: victim@elsewhere.example"),
        ("subject", "Hello\nX-Injected: yes"),
        ("to", ["jane@customer.example\r\nBcc: victim@elsewhere.example"]),
        ("cc", ["Jane\n <jane@customer.example>"]),
        ("bcc", ["x@customer.example\rRCPT TO:<victim@elsewhere.example>"]),
        ("in_reply_to", "<a@b>\r\nBcc: victim@elsewhere.example"),
    ],
)
def test_header_injection_is_refused_with_nothing_sent_and_nothing_stored(
    org: Org,
    server: SmtpPeer,
    django_capture_on_commit_callbacks: Commit,
    field: str,
    value: Any,
) -> None:
    with pytest.raises(Invalid) as refused:
        _send(django_capture_on_commit_callbacks, org, _ticket(org), **{field: value})
    assert refused.value.code == "header_injection"
    assert field in refused.value.fields
    assert "line break" in refused.value.detail or "Message-ID" in refused.value.detail
    assert not Message.objects.exists()
    assert not QuarantinedMessage.objects.exists()
    assert not OutgoingMail.objects.exists()
    assert server.received == []


@pytest.mark.parametrize("address", ["jane", "jane@", "@customer.example", "a@b@c", "jane@local"])
def test_a_malformed_address_is_refused_naming_the_field(
    org: Org, server: SmtpPeer, django_capture_on_commit_callbacks: Commit, address: str
) -> None:
    with pytest.raises(Invalid) as refused:
        _send(django_capture_on_commit_callbacks, org, _ticket(org), cc=[address])
    assert "is not an email address" in refused.value.fields["cc"]
    assert server.received == []


def test_without_an_outgoing_server_nothing_is_stored(
    org: Org, django_capture_on_commit_callbacks: Commit
) -> None:
    with pytest.raises(Invalid, match="No outgoing mail server"):
        _send(django_capture_on_commit_callbacks, org, _ticket(org))
    assert not Message.objects.exists()


# --- Automatic mail ------------------------------------------------------------------------


def test_automatic_mail_is_marked_auto_submitted(
    org: Org, server: SmtpPeer, django_capture_on_commit_callbacks: Commit
) -> None:
    _send(django_capture_on_commit_callbacks, org, _ticket(org), automatic=True)
    assert server.received[0].message["Auto-Submitted"] == "auto-replied"
    assert Message.objects.get().auto_submitted == "auto-replied"


@pytest.mark.parametrize(
    "address",
    ["MAILER-DAEMON@customer.example", "postmaster@customer.example", "no-reply@shop.example"],
)
def test_automatic_mail_never_goes_to_bounce_or_no_reply_addresses(
    org: Org, server: SmtpPeer, django_capture_on_commit_callbacks: Commit, address: str
) -> None:
    with pytest.raises(Invalid) as refused:
        _send(
            django_capture_on_commit_callbacks,
            org,
            _ticket(org),
            to=["jane@customer.example"],
            cc=[address],
            automatic=True,
        )
    assert "automatic mail is never sent" in refused.value.fields["to"]
    assert server.received == []
    assert not Message.objects.exists()
    # A person may still write to such an address by hand.
    _send(django_capture_on_commit_callbacks, org, _ticket(org), to=[address])
    assert len(server.received) == 1


def test_automatic_mail_stops_at_the_hourly_cap_per_sending_address(
    org: Org,
    server: SmtpPeer,
    clock: Clock,
    django_capture_on_commit_callbacks: Commit,
) -> None:
    _configure(org, server.host, server.port, hourly_cap=2)
    info = mail.Sender(email="info@crm.example", name="Support")
    ticket = _ticket(org)
    for _ in range(2):
        _send(django_capture_on_commit_callbacks, org, ticket, sender=info, automatic=True)
    with pytest.raises(Invalid, match="in the last hour") as refused:
        _send(django_capture_on_commit_callbacks, org, ticket, sender=info, automatic=True)
    assert refused.value.code == "hourly_cap"
    # Mail a person sends is not capped, nor is another address's automatic mail.
    _send(django_capture_on_commit_callbacks, org, ticket, sender=info)
    other = mail.Sender(email="sales@crm.example")
    _send(django_capture_on_commit_callbacks, org, ticket, sender=other, automatic=True)
    clock.advance(minutes=61)
    _send(django_capture_on_commit_callbacks, org, ticket, sender=info, automatic=True)
    assert len(server.received) == 5


# --- Retries and failures ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("how", "words"),
    [
        ("451", "The server asked to try again later (451 4.3.0"),
        ("421", "The server asked to try again later (421 4.3.2"),
        ("drop", "closed the connection before confirming the email"),
        ("stall", "did not answer within 1 second."),
    ],
)
def test_a_transient_failure_is_retried_later_and_the_email_is_stored_once(
    org: Org,
    server: SmtpPeer,
    clock: Clock,
    django_capture_on_commit_callbacks: Commit,
    how: str,
    words: str,
) -> None:
    _configure(org, server.host, server.port, timeout_seconds=1)
    server.answer_next(how)
    outgoing = _send(django_capture_on_commit_callbacks, org, _ticket(org))

    # The user's request went through; the email waits for its retry.
    assert outgoing.status == "retrying"
    assert outgoing.attempts == 1
    assert words in outgoing.last_error
    assert outgoing.next_attempt_at is not None
    assert server.received == []
    # Not yet due: the sweep leaves it alone.
    assert tasks.retry_due_outgoing.apply().get() == 0
    clock.advance(seconds=61)
    assert tasks.retry_due_outgoing.apply().get() == 1

    outgoing.refresh_from_db()
    assert outgoing.status == "sent"
    assert outgoing.attempts == 2
    assert len(server.received) == 1
    assert Message.objects.count() == 1
    assert server.received[0].message["Message-ID"].strip("<>") == Message.objects.get().message_id


def test_the_task_sends_the_stored_bytes_again_without_storing_anything(
    org: Org, server: SmtpPeer, clock: Clock, django_capture_on_commit_callbacks: Commit
) -> None:
    server.answer_next("451")
    outgoing = _send(django_capture_on_commit_callbacks, org, _ticket(org))
    stored = blobs.read(Message.objects.get().raw.name)
    clock.advance(minutes=2)
    assert tasks.deliver_outgoing.apply(args=[outgoing.pk]).get() == "sent"
    # A second run (a duplicate delivery of the task) sends nothing more.
    assert tasks.deliver_outgoing.apply(args=[outgoing.pk]).get() == "sent"
    assert len(server.received) == 1
    assert server.received[0].data == stored
    assert Message.objects.count() == 1


def test_without_celery_beat_the_command_sends_what_is_due(
    org: Org, server: SmtpPeer, clock: Clock, django_capture_on_commit_callbacks: Commit
) -> None:
    server.answer_next("451")
    outgoing = _send(django_capture_on_commit_callbacks, org, _ticket(org))
    clock.advance(minutes=2)
    out = StringIO()
    call_command("mail_retry_due", stdout=out)
    assert out.getvalue().strip() == "1 email due, attempted."
    outgoing.refresh_from_db()
    assert outgoing.status == "sent"
    assert len(server.received) == 1


def test_celery_beat_runs_the_retry_sweep_every_minute() -> None:
    from django_celery_beat.schedulers import ModelEntry

    from crm.celery import app

    # What django-celery-beat's scheduler does with the configured entries when beat starts.
    name = "retry-due-outgoing-mail"
    entry = ModelEntry.from_entry(name, app=app, **app.conf.beat_schedule[name]).model
    assert entry.task == "crm.tasks.retry_due_outgoing"
    assert entry.task in app.tasks
    assert entry.interval is not None
    assert (entry.interval.every, entry.interval.period) == (60, "seconds")


def test_retries_back_off_and_give_up_after_the_last_attempt(
    org: Org, clock: Clock, django_capture_on_commit_callbacks: Commit
) -> None:
    _configure(org, "127.0.0.1", free_port())  # nothing listens there
    outgoing = _send(django_capture_on_commit_callbacks, org, _ticket(org))
    waits = []
    while outgoing.status == "retrying":
        assert outgoing.next_attempt_at is not None
        waits.append(outgoing.next_attempt_at - timezone.now())
        clock.advance(seconds=waits[-1].total_seconds() + 1)
        tasks.retry_due_outgoing.apply()
        outgoing.refresh_from_db()
    assert outgoing.status == "failed"
    assert outgoing.attempts == mail.MAX_ATTEMPTS
    assert "connection was refused" in outgoing.last_error
    assert "Given up after 8 attempts" in outgoing.last_error
    minutes = [round(w.total_seconds() / 60) for w in waits]
    assert minutes == [1, 2, 4, 8, 16, 32, 60]


def test_a_permanent_refusal_fails_at_once_and_the_record_page_shows_the_servers_answer(
    org: Org, server: SmtpPeer, django_capture_on_commit_callbacks: Commit
) -> None:
    server.answer_next("550")
    ticket = _ticket(org)
    outgoing = _send(django_capture_on_commit_callbacks, org, ticket, subject="Your quote")
    assert outgoing.status == "failed"
    assert outgoing.attempts == 1
    assert "550 5.7.1 Message rejected" in outgoing.last_error
    assert tasks.retry_due_outgoing.apply().get() == 0

    page = _messages_tab(org.alice, ticket)
    assert "Not delivered" in page
    assert "Your quote" in page
    assert "550 5.7.1 Message rejected: recipient mailbox unavailable" in page


@pytest.mark.celery
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_celery_worker_retries_a_transient_failure_by_itself(
    org: Org, peer: SmtpPeer, tmp_path: Path
) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("a worker process shares the test database only on PostgreSQL")
    _configure(org, peer.host, peer.port)
    peer.answer_next("451")
    ticket = _ticket(org)
    with real_celery(tmp_path, CRM_MAIL_RETRY_SECONDS="1") as [worker]:
        draft = mail.Draft(to=["jane@customer.example"], subject="Hello")
        outgoing = mail.send(actor=org.alice, record=ticket, draft=draft)

        def sent() -> bool:
            outgoing.refresh_from_db()
            return outgoing.status == "sent"

        _wait_for(sent, what=worker.output())
    assert outgoing.attempts == 2
    assert len(peer.received) == 1
    assert Message.objects.count() == 1


def _wait_for(check: Callable[[], bool], *, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out: {what}")


def test_recipients_the_server_refuses_are_shown_while_the_others_get_the_email(
    org: Org, server: SmtpPeer, django_capture_on_commit_callbacks: Commit
) -> None:
    server.refuse_recipients("gone@customer.example")
    ticket = _ticket(org)
    outgoing = _send(
        django_capture_on_commit_callbacks,
        org,
        ticket,
        to=["jane@customer.example", "gone@customer.example"],
    )
    assert outgoing.status == "sent"
    assert server.received[0].rcpt_tos == ("jane@customer.example",)
    assert outgoing.last_error == (
        "Not delivered to gone@customer.example: 550 5.1.1 No such user here"
    )
    page = _messages_tab(org.alice, ticket)
    assert "Partly delivered" in page
    assert "gone@customer.example: 550 5.1.1 No such user here" in page


def test_a_refused_login_is_retried_so_that_an_administrator_can_correct_it(
    org: Org, clock: Clock, django_capture_on_commit_callbacks: Commit
) -> None:
    strict = SmtpPeer(login=("crm@crm.example", "right")).start()
    try:
        _configure(org, strict.host, strict.port, username="crm@crm.example")
        outgoing = _send(django_capture_on_commit_callbacks, org, _ticket(org))
        assert outgoing.status == "retrying"
        assert "refused the user name or password (535" in outgoing.last_error
        saved = mail.current_settings()
        same = mail.SettingsInput(**{name: getattr(saved, name) for name in _SETTINGS})
        mail.save_settings(actor=org.admin, values=same, password="right")
        clock.advance(minutes=2)
        tasks.retry_due_outgoing.apply()
        outgoing.refresh_from_db()
        assert outgoing.status == "sent"
        assert len(strict.received) == 1
    finally:
        strict.stop()


def _messages_tab(user: User, record: Record) -> str:
    client = Client()
    client.force_login(user)
    url = reverse("crm:record_tab", args=[record.module.name, record.pk, "messages"])
    return client.get(url).content.decode()


# --- Another server: an "info" mailbox's -------------------------------------------------


def test_mail_from_an_info_mailbox_leaves_through_its_own_server(
    org: Org, server: SmtpPeer, clock: Clock, django_capture_on_commit_callbacks: Commit
) -> None:
    info_server = SmtpPeer(login=("info@crm.example", "mailbox secret")).start()
    try:
        # The mailbox's SMTP settings: its own server and login, as nothing else is entered.
        mailbox = Mailbox(
            name="info",
            host=info_server.host,
            port=993,
            security="none",
            username="info@crm.example",
            address="info@crm.example",
            owner=org.admin,
        )
        mailbox.set_password("mailbox secret")
        mailbox.save()
        smtp = MailboxSmtp.objects.create(mailbox=mailbox, port=info_server.port, security="none")
        info_server.answer_next("451")
        sender = mail.Sender(email="info@crm.example", name="Support", reply_to="info@crm.example")
        outgoing = _send(
            django_capture_on_commit_callbacks,
            org,
            _ticket(org),
            sender=sender,
            smtp=smtp.smtp_settings(),
        )
        assert outgoing.status == "retrying"
        # The mailbox's password waits encrypted on the row, and is gone once sent.
        with connection.cursor() as cursor:
            cursor.execute("SELECT smtp::text FROM crm_outgoingmail")
            assert "mailbox secret" not in cursor.fetchone()[0]
        clock.advance(minutes=2)
        tasks.retry_due_outgoing.apply()
        outgoing.refresh_from_db()
        assert outgoing.status == "sent"
        assert outgoing.smtp == {}
        [received] = info_server.received
        assert received.mail_from == "info@crm.example"
        assert received.message["From"] == "Support <info@crm.example>"
        assert received.message["Reply-To"] == "info@crm.example"
        assert server.received == []
    finally:
        info_server.stop()


def test_an_info_mailbox_with_a_login_of_its_own_uses_it() -> None:
    mailbox = Mailbox(host="imap.crm.example", username="imap-user", verify_certificate=False)
    mailbox.set_password("imap password")
    smtp = MailboxSmtp(mailbox=mailbox, host="smtp.crm.example", port=465, security="ssl")
    smtp.username = "smtp-user"
    smtp.set_password("smtp password")
    settings = smtp.smtp_settings()
    assert (settings.host, settings.port, settings.security) == ("smtp.crm.example", 465, "ssl")
    assert (settings.username, settings.password) == ("smtp-user", "smtp password")
    assert settings.verify_certificate is False
    assert "smtp password" not in repr(settings)
    assert "smtp password" not in smtp.secret


def _customer_mail(pdf: bytes) -> bytes:
    from email.message import EmailMessage

    msg = EmailMessage()
    msg["From"] = "Jane Doe <jane@customer.example>"
    msg["To"] = "support@crm.example"
    msg["Subject"] = "The manual"
    msg["Message-ID"] = "<manual-1@customer.example>"
    msg.set_content("Here it is.\n")
    msg.add_attachment(pdf, maintype="application", subtype="pdf", filename="manual.pdf")
    return bytes(msg)
