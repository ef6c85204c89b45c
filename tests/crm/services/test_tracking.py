"""Open tracking: each tracked recipient's copy carries its own signed image; fetching it counts
once an hour, never from the CRM itself; a tampered URL is a plain 404 (crm.services.tracking).
The SMTP server is a real one (aiosmtpd, tests/crm/smtp_peer)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from email.message import EmailMessage
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.test import Client
from django.urls import reverse

from crm.models import MailOpen, Message, OutgoingMail, Record
from crm.services import blobs, ingest, mail, tracking
from tests.conftest import Clock, Org
from tests.crm.smtp_peer import Received, SmtpPeer, use_as_outgoing_server
from tests.factories import make_record

pytestmark = [pytest.mark.django_db, pytest.mark.smtp]

Commit = Callable[..., AbstractContextManager[Any]]
PIXEL = re.compile(r'<img src="(https://crm\.example\.com/t/[^"]+\.gif)"')


@pytest.fixture(autouse=True)
def _media(settings: Any, tmp_path: Any) -> None:
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.CRM_BASE_URL = "https://crm.example.com"


@pytest.fixture
def server(org: Org) -> Iterator[SmtpPeer]:
    peer = SmtpPeer().start()
    _configure(org, peer, open_tracking=True)
    yield peer
    peer.stop()


def _configure(org: Org, peer: SmtpPeer, *, open_tracking: bool) -> None:
    use_as_outgoing_server(org.admin, peer.host, peer.port, open_tracking=open_tracking)


@pytest.fixture
def people(org: Org) -> dict[str, Record]:
    return {
        "jane": make_record(
            "Contacts", org.alice, first_name="Jane", last_name="Doe", email="jane@customer.example"
        ),
        "rick": make_record(
            "Contacts", org.alice, first_name="Rick", last_name="Roe", email="rick@customer.example"
        ),
    }


def _send(commit: Commit, org: Org, record: Record, **kw: Any) -> OutgoingMail:
    args: dict[str, Any] = {
        "to": ["Jane Doe <jane@customer.example>", "someone@elsewhere.example"],
        "cc": ["rick@customer.example"],
        "bcc": ["boss@crm.example"],
        "subject": "Your order",
        "body_html": "<p>Hello,</p><p>your order <b>shipped</b>.</p>",
    } | kw
    with commit(execute=True):
        outgoing = mail.send(actor=org.alice, record=record, draft=mail.Draft(**args))
    outgoing.refresh_from_db()
    return outgoing


def _html(received: Received) -> str:
    body = received.message.get_body(("html",))
    assert isinstance(body, EmailMessage)
    return str(body.get_content())


def _pixel_path(received: Received) -> str:
    found = PIXEL.findall(_html(received))
    assert len(found) == 1
    return urlsplit(found[0]).path


# --- Sending -------------------------------------------------------------------------------


def test_each_tracked_recipient_gets_a_copy_with_his_own_image_and_the_email_is_stored_once(
    org: Org,
    server: SmtpPeer,
    people: dict[str, Record],
    django_capture_on_commit_callbacks: Commit,
) -> None:
    outgoing = _send(django_capture_on_commit_callbacks, org, people["jane"])

    assert outgoing.status == "sent"
    by_envelope = {r.rcpt_tos: r for r in server.received}
    assert set(by_envelope) == {
        ("jane@customer.example",),
        ("rick@customer.example",),
        ("someone@elsewhere.example", "boss@crm.example"),
    }
    jane, rick = by_envelope[("jane@customer.example",)], by_envelope[("rick@customer.example",)]
    rest = by_envelope[("someone@elsewhere.example", "boss@crm.example")]
    message = Message.objects.get()
    assert _pixel_path(jane) != _pixel_path(rick)
    assert tracking.read_token(_pixel_path(jane)[3:-4]) == (message.pk, people["jane"].pk)
    assert tracking.read_token(_pixel_path(rick)[3:-4]) == (message.pk, people["rick"].pk)
    assert "/t/" not in _html(rest)
    # Every copy is the same email: same headers, no Bcc; the text part is untouched.
    for copy in (jane, rick, rest):
        msg = copy.message
        assert msg["Message-ID"] == f"<{message.message_id}>"
        assert msg["To"] == "Jane Doe <jane@customer.example>, someone@elsewhere.example"
        assert msg["Cc"] == "rick@customer.example"
        assert msg["Bcc"] is None
        text = msg.get_body(("plain",))
        assert isinstance(text, EmailMessage)
        assert "your order shipped." in text.get_content()
    # Stored once, exactly as composed: no image in what the CRM keeps and shows.
    assert Message.objects.count() == 1
    assert b"/t/" not in blobs.read(message.raw.name)
    assert rest.data == blobs.read(message.raw.name)


def test_with_tracking_off_the_email_leaves_in_one_envelope_without_image(
    org: Org,
    server: SmtpPeer,
    people: dict[str, Record],
    django_capture_on_commit_callbacks: Commit,
) -> None:
    _configure(org, server, open_tracking=False)

    _send(django_capture_on_commit_callbacks, org, people["jane"])

    assert len(server.received) == 1
    assert len(server.received[0].rcpt_tos) == 4
    assert "/t/" not in _html(server.received[0])


def test_a_retry_sends_only_the_copies_the_server_has_not_taken(
    org: Org,
    server: SmtpPeer,
    people: dict[str, Record],
    clock: Clock,
    django_capture_on_commit_callbacks: Commit,
) -> None:
    server.answer_next("accept", "451")

    outgoing = _send(django_capture_on_commit_callbacks, org, people["jane"])

    assert outgoing.status == "retrying"
    assert len(server.received) == 1
    clock.advance(minutes=2)
    mail.retry_due()
    outgoing.refresh_from_db()
    assert outgoing.status == "sent"
    envelopes = [r.rcpt_tos for r in server.received]
    assert len(envelopes) == 3
    assert len(set(envelopes)) == 3  # nobody received it twice


def test_a_copy_refused_for_its_recipient_does_not_stop_the_others(
    org: Org,
    server: SmtpPeer,
    people: dict[str, Record],
    django_capture_on_commit_callbacks: Commit,
) -> None:
    server.refuse_recipients("rick@customer.example")

    outgoing = _send(django_capture_on_commit_callbacks, org, people["jane"])

    assert outgoing.status == "sent"
    assert "rick@customer.example: 550 5.1.1 No such user here" in outgoing.last_error
    assert {r.rcpt_tos for r in server.received} == {
        ("jane@customer.example",),
        ("someone@elsewhere.example", "boss@crm.example"),
    }


# --- The image is fetched ------------------------------------------------------------------


def _opens(message: Message, record: Record) -> int:
    found = MailOpen.objects.filter(message=message, record=record).first()
    return found.count if found else 0


@pytest.fixture
def sent(
    org: Org,
    server: SmtpPeer,
    people: dict[str, Record],
    django_capture_on_commit_callbacks: Commit,
) -> tuple[Message, str]:
    """The email sent to Jane, and the path of the image in Jane's copy."""
    _send(django_capture_on_commit_callbacks, org, people["jane"])
    jane = next(r for r in server.received if r.rcpt_tos == ("jane@customer.example",))
    return Message.objects.get(), _pixel_path(jane)


def test_an_opening_counts_once_an_hour(
    sent: tuple[Message, str], people: dict[str, Record], clock: Clock
) -> None:
    message, path = sent
    customer = Client()

    first = customer.get(path)

    assert first.status_code == 200
    assert first["Content-Type"] == "image/gif"
    assert first.content.startswith(b"GIF89a")
    assert _opens(message, people["jane"]) == 1
    clock.advance(minutes=59)
    customer.get(path)
    assert _opens(message, people["jane"]) == 1
    clock.advance(minutes=2)
    customer.get(path)
    assert _opens(message, people["jane"]) == 2
    assert _opens(message, people["rick"]) == 0


def test_fetches_from_the_crm_itself_are_not_counted(
    org: Org, sent: tuple[Message, str], people: dict[str, Record]
) -> None:
    message, path = sent
    signed_in = Client()
    signed_in.force_login(org.alice)

    assert signed_in.get(path).status_code == 200
    assert (
        Client().get(path, HTTP_REFERER="https://crm.example.com/m/Contacts/1/").status_code == 200
    )

    assert _opens(message, people["jane"]) == 0


def test_a_tampered_url_is_a_plain_404(
    sent: tuple[Message, str], people: dict[str, Record]
) -> None:
    message, path = sent
    token = path[3:-4]
    ids, signature = token.split("~")
    forged = [
        f"{ids}~{signature[:-1]}{'A' if signature[-1] != 'A' else 'B'}",
        f"{message.pk}.{people['rick'].pk}~{signature}",
        f"{message.pk}.{people['jane'].pk}",
        "not-a-token",
    ]
    for bad in forged:
        response = Client().get(reverse("crm:open_pixel", args=[bad]))
        assert response.status_code == 404, bad
        assert b"GIF" not in response.content
        assert response["Cache-Control"].startswith("no-store")
        assert not response.cookies
    assert _opens(message, people["jane"]) == 0
    assert _opens(message, people["rick"]) == 0


def test_every_valid_url_gets_the_same_answer_so_nothing_is_revealed(
    sent: tuple[Message, str],
) -> None:
    message, path = sent
    deleted = reverse("crm:open_pixel", args=[tracking.token_for(message.pk + 999, 1)])
    tampered = path[:-6] + ("A" if path[-5] != "A" else "B") + ".gif"

    answers = [Client().get(p) for p in (path, path, deleted, tampered)]

    counted, repeated, unknown, bad = answers
    for response in (repeated, unknown):
        assert response.status_code == counted.status_code == 200
        assert response.content == counted.content
        assert dict(response.headers) == dict(counted.headers)
    assert "no-store" in counted["Cache-Control"]
    assert not counted.cookies
    # The 404 differs in its status and body only: no header tells more.
    assert bad.status_code == 404
    assert set(bad.headers) == set(counted.headers)
    differing = {k for k in counted.headers if bad.headers[k] != counted.headers[k]}
    assert differing <= {"Content-Type", "Content-Length"}


# --- What the CRM shows --------------------------------------------------------------------


def test_the_messages_tab_shows_indicative_opens_per_recipient(
    org: Org, sent: tuple[Message, str], people: dict[str, Record]
) -> None:
    message, path = sent
    Client().get(path)
    alice = Client()
    alice.force_login(org.alice)

    page = alice.get(reverse("crm:record_tab", args=["Contacts", people["jane"].pk, "messages"]))

    html = page.content.decode()
    assert "Opens (indicative: mail clients may prefetch images)" in html
    block = html[html.index(f'id="opens-{message.pk}"') :]
    assert re.search(r'Jane Doe</a>: <span class="open-count">1</span>', block)
    assert re.search(r'Rick Roe</a>: <span class="open-count">0</span>', block)


def test_a_reply_quoting_the_image_does_not_fetch_it_inside_the_crm(
    org: Org, sent: tuple[Message, str], people: dict[str, Record]
) -> None:
    _, path = sent
    reply = (
        "From: jane@customer.example\r\nTo: alice@crm.test\r\nSubject: Re: Your order\r\n"
        "Message-ID: <reply-1@customer.example>\r\nContent-Type: text/html\r\n\r\n"
        f'<p>Thanks!</p><blockquote><img src="https://crm.example.com{path}" width="1" '
        'height="1"><img src="https://img.example.net/logo.png"></blockquote>\r\n'
    ).encode()
    stored = ingest.store(reply, source="addin", actor=org.alice).message
    ingest.link(message=stored, record=people["jane"], actor=org.alice, via="addin")
    alice = Client()
    alice.force_login(org.alice)

    body = alice.get(
        reverse("crm:message_body", args=["Contacts", people["jane"].pk, stored.pk]) + "?images=1"
    ).content.decode()

    assert "https://img.example.net/logo.png" in body
    assert "/t/" not in body
