"""The compose page of a record: who gets it, what it prefills, what sending does
(crm/web/compose_views.py). The SMTP server is a real one (aiosmtpd, tests/crm/smtp_peer)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from email.message import EmailMessage
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse

from crm.models import (
    Document,
    EmailTemplate,
    Message,
    MessageLink,
    Module,
    OutgoingMail,
    OutgoingMailSettings,
    Record,
)
from crm.models.modules import Sharing
from crm.services import ingest
from tests.conftest import Org
from tests.crm.smtp_peer import SmtpPeer, use_as_outgoing_server
from tests.factories import make_record

pytestmark = [pytest.mark.django_db, pytest.mark.smtp]

Commit = Callable[..., AbstractContextManager[Any]]


@pytest.fixture(autouse=True)
def _media(settings: Any, tmp_path: Any) -> None:
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.CRM_BASE_URL = "https://crm.example.com"


@pytest.fixture
def server(org: Org) -> Iterator[SmtpPeer]:
    peer = SmtpPeer().start()
    use_as_outgoing_server(org.admin, peer.host, peer.port)
    yield peer
    peer.stop()


@pytest.fixture
def jane(org: Org) -> Record:
    return make_record(
        "Contacts", org.alice, first_name="Jane", last_name="Doe", email="jane@customer.example"
    )


def _client(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _url(record: Record) -> str:
    return reverse("crm:compose", args=[record.module.name, record.pk])


def _post(commit: Commit, client: Client, record: Record, **data: Any) -> Any:
    form = {"to": "jane@customer.example", "subject": "Hello", "body": "<p>Hi</p>"} | data
    with commit(execute=True):
        return client.post(_url(record), form)


def _field_error(html: str, field: str) -> str:
    found = re.search(rf'id="id_{field}_error"[^>]*>([^<]*)<', html)
    assert found, f"no error shown next to {field}"
    return found.group(1)


def test_the_page_prefills_the_records_address_and_offers_its_templates(
    org: Org, jane: Record
) -> None:
    EmailTemplate.objects.create(name="Welcome", subject="Welcome {{ contact.first_name }}")
    EmailTemplate.objects.create(
        name="Ticket answer", module=Module.objects.get(name="Tickets"), subject="x"
    )
    client = _client(org.alice)

    detail = client.get(reverse("crm:record_detail", args=["Contacts", jane.pk])).content.decode()
    page = client.get(_url(jane))

    assert f'href="{_url(jane)}"' in detail
    assert ">Send email</a>" in detail
    assert page.status_code == 200
    html = page.content.decode()
    assert 'value="Jane Doe &lt;jane@customer.example&gt;"' in html
    assert ">Welcome</option>" in html
    assert "Ticket answer" not in html


def test_a_user_who_may_only_view_the_record_gets_no_button_and_no_page(org: Org) -> None:
    contacts = Module.objects.get(name="Contacts")
    contacts.default_sharing = Sharing.PUBLIC_READ
    contacts.save()
    theirs = make_record("Contacts", org.charlie, last_name="Roe", email="rick@customer.example")
    client = _client(org.alice)

    detail = client.get(reverse("crm:record_detail", args=["Contacts", theirs.pk]))

    assert detail.status_code == 200
    assert "Send email" not in detail.content.decode()
    assert client.get(_url(theirs)).status_code == 403
    assert client.post(_url(theirs), {"to": "rick@customer.example"}).status_code == 403
    contacts.default_sharing = Sharing.PRIVATE
    contacts.save()
    assert client.get(_url(theirs)).status_code == 404
    anonymous = Client().get(_url(theirs))
    assert anonymous.status_code == 302
    assert anonymous["Location"].startswith("/login/")


def test_sending_stores_the_email_on_the_record_and_shows_it_in_the_messages_tab(
    org: Org, jane: Record, server: SmtpPeer, django_capture_on_commit_callbacks: Commit
) -> None:
    client = _client(org.alice)

    response = _post(
        django_capture_on_commit_callbacks,
        client,
        jane,
        to="Jane Doe <jane@customer.example>",
        cc="rick@customer.example",
        subject="Your quote",
        body="<p>Dear Jane,</p><p>here is <b>the quote</b>.</p><script>alert(1)</script>",
    )

    assert response.status_code == 302
    assert response["Location"] == reverse("crm:record_detail", args=["Contacts", jane.pk]) + (
        "?tab=messages"
    )
    message = Message.objects.get()
    assert message.direction == "outgoing"
    assert message.subject == "Your quote"
    assert MessageLink.objects.filter(message=message, record=jane).exists()
    assert OutgoingMail.objects.get().status == "sent"
    received = {r.rcpt_tos: r.message for r in server.received}
    assert set(received) == {("jane@customer.example",), ("rick@customer.example",)}
    html = received[("jane@customer.example",)].get_body(("html",))
    assert isinstance(html, EmailMessage)
    assert "here is <b>the quote</b>." in html.get_content()
    assert "<script" not in html.get_content()
    tab = client.get(reverse("crm:record_tab", args=["Contacts", jane.pk, "messages"]))
    assert "Your quote" in tab.content.decode()


def test_the_records_documents_and_uploaded_files_are_attached(
    org: Org, jane: Record, server: SmtpPeer, django_capture_on_commit_callbacks: Commit
) -> None:
    earlier = EmailMessage()
    earlier["From"] = "jane@customer.example"
    earlier["Subject"] = "The contract"
    earlier["Message-ID"] = "<contract-1@customer.example>"
    earlier.set_content("Attached.\n")
    earlier.add_attachment(
        b"%PDF-1.4 contract", maintype="application", subtype="pdf", filename="contract.pdf"
    )
    stored = ingest.store(bytes(earlier), source="addin", actor=org.alice).message
    ingest.link(message=stored, record=jane, actor=org.alice, via="addin")
    contract = Document.objects.get()
    client = _client(org.alice)
    assert "contract.pdf" in client.get(_url(jane)).content.decode()

    _post(
        django_capture_on_commit_callbacks,
        client,
        jane,
        documents=[str(contract.pk)],
        uploads=[SimpleUploadedFile("price list.csv", b"item;price\n", "text/csv")],
    )

    sent = server.received[0].message
    files = {part.get_filename(): part.get_content() for part in sent.iter_attachments()}
    assert files == {"contract.pdf": b"%PDF-1.4 contract", "price list.csv": "item;price\n"}


def test_a_document_of_another_record_cannot_be_attached(
    org: Org, jane: Record, server: SmtpPeer, django_capture_on_commit_callbacks: Commit
) -> None:
    other = make_record("Contacts", org.alice, last_name="Roe")
    earlier = EmailMessage()
    earlier["From"] = "rick@customer.example"
    earlier["Subject"] = "Private"
    earlier.set_content("x")
    earlier.add_attachment(b"secret", maintype="application", subtype="pdf", filename="s.pdf")
    stored = ingest.store(bytes(earlier), source="addin", actor=org.alice).message
    ingest.link(message=stored, record=other, actor=org.alice, via="addin")

    response = _post(
        django_capture_on_commit_callbacks,
        _client(org.alice),
        jane,
        documents=[str(Document.objects.get().pk)],
    )

    assert response.status_code == 400
    assert OutgoingMail.objects.count() == 0
    assert server.received == []


def test_a_line_break_in_the_subject_is_shown_as_an_error_and_nothing_is_sent(
    org: Org, jane: Record, server: SmtpPeer, django_capture_on_commit_callbacks: Commit
) -> None:
    response = _post(
        django_capture_on_commit_callbacks,
        _client(org.alice),
        jane,
        subject="Hello\r\nBcc: victim@elsewhere.example",
        cc="not an address",
    )

    assert response.status_code == 400
    html = response.content.decode()
    assert _field_error(html, "subject") == "The subject may not contain a line break."
    assert "The email was not sent." in html
    assert Message.objects.count() == 0
    assert OutgoingMail.objects.count() == 0
    assert server.received == []


def test_a_bad_address_is_shown_next_to_its_field_and_the_text_is_kept(
    org: Org, jane: Record, server: SmtpPeer, django_capture_on_commit_callbacks: Commit
) -> None:
    response = _post(
        django_capture_on_commit_callbacks,
        _client(org.alice),
        jane,
        cc="jane at customer",
        body="<p>Keep <b>me</b></p>",
    )

    assert response.status_code == 400
    html = response.content.decode()
    assert "is not an email address" in _field_error(html, "cc")
    assert "<p>Keep <b>me</b></p>" in html  # in the editor
    assert server.received == []


def test_using_a_template_keeps_the_addresses_and_fills_subject_and_body(
    org: Org, jane: Record
) -> None:
    org.alice.first_name = "Alice"
    org.alice.save()
    template = EmailTemplate.objects.create(
        name="Welcome",
        subject="Welcome, {{ contact.first_name }}",
        body_html="<p>Dear {{ contact.first_name }},</p><p>{{ contact.fax }}</p>"
        "<p>{{ user.first_name }}</p>",
    )

    response = _client(org.alice).post(
        _url(jane),
        {
            "action": "template",
            "template": str(template.pk),
            "to": "jane@customer.example",
            "cc": "bob@crm.test",
            "subject": "typed",
            "body": "typed",
        },
    )

    assert response.status_code == 200
    html = response.content.decode()
    assert 'value="bob@crm.test"' in html
    assert 'value="Welcome, Jane"' in html
    assert "<p>Dear Jane,</p><p>{{ contact.fax }}</p><p>Alice</p>" in html
    assert "{{ contact.fax }} is not a field you can see on this record" in html
    assert Message.objects.count() == 0


def test_administrators_manage_templates_and_see_the_settings_without_the_password(
    org: Org, jane: Record, server: SmtpPeer
) -> None:
    row = OutgoingMailSettings.objects.get()
    row.set_password("hunter2-smtp")
    row.save()
    admin = _client(org.admin)

    created = admin.post(
        reverse("admin:crm_emailtemplate_add"),
        {
            "name": "Welcome",
            "module": str(Module.objects.get(name="Contacts").pk),
            "is_active": "on",
            "subject": "Welcome {{ contact.first_name }}",
            "body_html": "<p>Hello</p>",
        },
    )
    settings_page = admin.get(reverse("admin:crm_outgoingmailsettings_change", args=[1]))

    assert created.status_code == 302
    assert ">Welcome</option>" in _client(org.alice).get(_url(jane)).content.decode()
    assert settings_page.status_code == 200
    assert "hunter2-smtp" not in settings_page.content.decode()
    assert row.secret not in settings_page.content.decode()
    assert _client(org.alice).get(reverse("admin:crm_emailtemplate_add")).status_code == 302


def test_a_record_without_an_address_of_its_own_writes_to_the_contact_it_refers_to(
    org: Org, jane: Record
) -> None:
    ticket = make_record(
        "Tickets", org.alice, title="Printer jams", status="Open", contact=str(jane.pk)
    )
    task = make_record("Tasks", org.alice, subject="Call back", status="Not started")
    client = _client(org.alice)

    page = client.get(_url(ticket)).content.decode()

    assert 'value="Jane Doe &lt;jane@customer.example&gt;"' in page
    # A task refers to no module with addresses: no email is written from it.
    detail = client.get(reverse("crm:record_detail", args=["Tasks", task.pk])).content.decode()
    assert "Send email" not in detail
    assert client.get(_url(task)).status_code == 403
