"""Certified mail (PEC) threading when the provider renumbers, through the scan loop and Dovecot.

Some providers give the transport envelope and the postacert.eml they carry Message-IDs of
their own and keep the sender's only in `X-Riferimento-Message-ID` (and daticert's <msgid>).
The customer's mail client knows only the sender's id, so a reply quotes that one: it must
still thread onto the ticket made from the certified message.

The envelopes are written here (`envelope()`), shaped as the project's PEC fixtures are
(tests/fixtures/emails/pec/): multipart/signed around the provider's text, daticert.xml, the
original as postacert.eml, and the signature.
"""

from __future__ import annotations

import base64

import pytest

from crm.models import Comment, Message
from mailconverter import scanner
from mailconverter.models import LedgerEntry
from tests.conftest import Org
from tests.factories import make_record
from tests.mailconverter.conftest import Account
from tests.mailconverter.test_scanner import UPDATE_ELSE_CREATE, make_mailbox, tickets

pytestmark = [pytest.mark.imap, pytest.mark.django_db]

SENDER = "giulia.verdi@pec.cliente.example"
PROVIDER = "posta-certificata@pec.gestore.example"
SUBJECT = "Guasto al quadro elettrico, cantiere 12"
CERTIFIED = "guasto-cantiere-12@pec.cliente.example"  # the sender's own Message-ID


def original(*, message_id: str, subject: str, body: str, in_reply_to: str = "") -> str:
    """The sender's email as the provider carries it (postacert.eml), renumbered by it."""
    thread = (
        f"In-Reply-To: <{in_reply_to}>\r\nReferences: <{in_reply_to}>\r\n" if in_reply_to else ""
    )
    return (
        f"From: Giulia Verdi <{SENDER}>\r\n"
        "To: assistenza@pec.crm.test\r\n"
        f"Subject: {subject}\r\n"
        f"Message-ID: <{message_id}>\r\n"
        f"{thread}"
        "Date: Wed, 02 Dec 2026 09:30:00 +0100\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "\r\n"
        f"{body}\r\n"
    )


def daticert(*, certified: str, identificativo: str, subject: str) -> str:
    xml = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<postacert tipo="posta-certificata" errore="nessuno">\n'
        f"  <intestazione><mittente>{SENDER}</mittente>"
        '<destinatari tipo="certificato">assistenza@pec.crm.test</destinatari>'
        f"<oggetto>{subject}</oggetto></intestazione>\n"
        f"  <dati><identificativo>{identificativo}</identificativo>"
        f"<msgid>&lt;{certified}&gt;</msgid></dati>\n"
        "</postacert>\n"
    )
    return base64.encodebytes(xml.encode()).decode().replace("\n", "\r\n")


def envelope(*, certified: str, number: str, inner: str, subject: str) -> bytes:
    """A transport envelope whose own id and whose original's id are the provider's."""
    identificativo = f"opec.{number}@pec.gestore.example"
    return (
        f"Return-Path: <{PROVIDER}>\r\n"
        "Date: Wed, 02 Dec 2026 09:30:05 +0100\r\n"
        "X-Trasporto: posta-certificata\r\n"
        f"X-Riferimento-Message-ID: <{certified}>\r\n"
        f'From: "Per conto di: {SENDER}" <{PROVIDER}>\r\n'
        f"Reply-To: {SENDER}\r\n"
        "To: assistenza@pec.crm.test\r\n"
        f"Subject: POSTA CERTIFICATA: {subject}\r\n"
        f"Message-ID: <{identificativo}>\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/signed; protocol="application/x-pkcs7-signature";'
        ' micalg=sha-256; boundary="signed-1"\r\n'
        "\r\n"
        "--signed-1\r\n"
        'Content-Type: multipart/mixed; boundary="mixed-1"\r\n'
        "\r\n"
        "--mixed-1\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "\r\n"
        f"Messaggio di posta certificata. Identificativo messaggio: {identificativo}\r\n"
        "--mixed-1\r\n"
        'Content-Type: application/xml; name="daticert.xml"\r\n'
        'Content-Disposition: inline; filename="daticert.xml"\r\n'
        "Content-Transfer-Encoding: base64\r\n"
        "\r\n"
        f"{daticert(certified=certified, identificativo=identificativo, subject=subject)}"
        "--mixed-1\r\n"
        'Content-Type: message/rfc822; name="postacert.eml"\r\n'
        'Content-Disposition: attachment; filename="postacert.eml"\r\n'
        "\r\n"
        f"{inner}"
        "--mixed-1--\r\n"
        "\r\n"
        "--signed-1\r\n"
        'Content-Type: application/x-pkcs7-signature; name="smime.p7s"\r\n'
        'Content-Disposition: attachment; filename="smime.p7s"\r\n'
        "Content-Transfer-Encoding: base64\r\n"
        "\r\n"
        "MIAGCSqGSIb3DQEHAqCAMIACAQExDzANBglghkgBZQMEAgEFADCABgkqhkiG9w0BBwEAAA==\r\n"
        "--signed-1--\r\n"
    ).encode()


FIRST = envelope(
    certified=CERTIFIED,
    number="20261202093005.12.01",
    subject=SUBJECT,
    inner=original(
        message_id="postacert.20261202093005.12.01@pec.gestore.example",
        subject=SUBJECT,
        body="Il quadro elettrico del cantiere 12 scatta ogni mattina alle otto.",
    ),
)


def reply_body() -> str:
    return "Aggiornamento: il quadro e' scattato di nuovo stamattina."


def test_a_certified_message_records_the_certified_id_on_its_envelope_and_original(
    account: Account, org: Org
) -> None:
    uid = account.deliver(FIRST)
    mailbox = make_mailbox(account, org.admin, is_pec=True, rules=UPDATE_ELSE_CREATE)

    assert scanner.scan(mailbox).counts == {"created": 1}

    entry = LedgerEntry.objects.select_related("message").get(uid=uid)
    assert entry.message is not None
    assert entry.message.message_id == "opec.20261202093005.12.01@pec.gestore.example"
    stored = Message.objects.filter(subject__endswith=SUBJECT)
    assert {m.message_id: m.certified_id for m in stored} == {
        "opec.20261202093005.12.01@pec.gestore.example": CERTIFIED,
        "postacert.20261202093005.12.01@pec.gestore.example": CERTIFIED,
    }


def test_a_plain_reply_quoting_the_certified_id_updates_the_ticket(
    account: Account, org: Org
) -> None:
    make_record("Contacts", org.admin, first_name="Giulia", last_name="Verdi", email=SENDER)
    account.deliver(FIRST)
    mailbox = make_mailbox(account, org.admin, is_pec=True, rules=UPDATE_ELSE_CREATE)
    assert scanner.scan(mailbox).counts == {"created": 1}
    [ticket] = tickets()

    # No ticket number anywhere: only In-Reply-To/References tie it to the first message.
    account.deliver(
        original(
            message_id="reply-1@client.cliente.example",
            subject=f"Re: {SUBJECT}",
            body=reply_body(),
            in_reply_to=CERTIFIED,
        ).encode()
    )
    run = scanner.scan(mailbox)

    assert run.counts == {"updated": 1}, run.error
    assert tickets() == [ticket]
    ticket.refresh_from_db()
    assert ticket.data["status"] == "Answered by customer"
    [comment] = Comment.objects.filter(record=ticket)
    assert reply_body() in comment.body


def test_a_certified_reply_renumbered_again_updates_the_same_ticket(
    account: Account, org: Org
) -> None:
    account.deliver(FIRST)
    mailbox = make_mailbox(account, org.admin, is_pec=True, rules=UPDATE_ELSE_CREATE)
    assert scanner.scan(mailbox).counts == {"created": 1}
    [ticket] = tickets()

    account.deliver(
        envelope(
            certified="reply-2@pec.cliente.example",
            number="20261202111500.12.02",
            subject=f"Re: {SUBJECT}",
            inner=original(
                message_id="postacert.20261202111500.12.02@pec.gestore.example",
                subject=f"Re: {SUBJECT}",
                body=reply_body(),
                in_reply_to=CERTIFIED,
            ),
        )
    )
    run = scanner.scan(mailbox)

    assert run.counts == {"updated": 1}, run.error
    assert tickets() == [ticket]
    assert reply_body() in Comment.objects.get(record=ticket).body


def test_without_the_pec_flag_no_certified_id_is_recorded_and_a_reply_opens_its_own_ticket(
    account: Account, org: Org
) -> None:
    # The envelope is converted as it is: its X-Riferimento-Message-ID is only a header.
    account.deliver(FIRST)
    mailbox = make_mailbox(account, org.admin, rules=UPDATE_ELSE_CREATE)
    assert scanner.scan(mailbox).counts == {"created": 1}
    assert not Message.objects.exclude(certified_id=None).exists()

    account.deliver(
        original(
            message_id="reply-3@client.cliente.example",
            subject=f"Re: {SUBJECT}",
            body=reply_body(),
            in_reply_to=CERTIFIED,
        ).encode()
    )
    assert scanner.scan(mailbox).counts == {"created": 1}
    assert len(tickets()) == 2
