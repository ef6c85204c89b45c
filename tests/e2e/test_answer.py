"""A support agent answers a ticket from mail by mail (info), in a real Chromium.

The ticket is made by the converter's one-message path; the answer leaves through the
mailbox's own SMTP server, a real aiosmtpd peer that captures what the customer would get.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from crm.models import Record
from mailconverter import scanner
from mailconverter.models import Folder, Mailbox, MailboxSmtp, Rule
from tests.conftest import Org
from tests.crm.smtp_peer import SmtpPeer
from tests.e2e.conftest import Browsing
from tests.factories import PASSWORD
from tests.mailconverter.helpers import mail

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.smtp,
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
    pytest.mark.filterwarnings("ignore:No directory at:UserWarning"),
]


@pytest.fixture
def peer() -> Iterator[SmtpPeer]:
    p = SmtpPeer().start()
    yield p
    p.stop()


@pytest.fixture
def ticket(org: Org, peer: SmtpPeer, settings: Any, tmp_path: Path) -> Record:
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.CRM_BASE_URL = "https://crm.example.com"
    mailbox = Mailbox.objects.create(
        name="Support",
        host="imap.invalid",
        username="support@crm.test",
        address="support@crm.test",
        owner=org.charlie,
    )
    MailboxSmtp.objects.create(mailbox=mailbox, host=peer.host, port=peer.port, security="none")
    folder = Folder.objects.create(mailbox=mailbox, name="INBOX", selected=True)
    Rule.objects.create(mailbox=mailbox, position=0, actions=[{"type": "create_ticket"}])
    scanner.process(mailbox, folder, 1, 1, mail("customer_question.eml"))
    return Record.objects.get(label="Printer on fire")


# Data fixtures come before `browsing`: see tests/e2e/conftest.py for why.
def test_an_agent_answers_a_ticket_by_mail_info_and_sees_it_in_the_messages_tab(
    ticket: Record, peer: SmtpPeer, browsing: Browsing
) -> None:
    page = browsing.page
    browsing.log_in("charlie", PASSWORD)
    page.goto(f"/m/Tickets/{ticket.pk}/")
    page.get_by_role("link", name="Answer by mail (info)").click()

    expect(page.get_by_role("heading", name="Answer by mail (info)")).to_be_visible()
    expect(page.locator("#answer-from")).to_have_text("Support <support@crm.test>")
    expect(page.locator("#answer-to")).to_have_text("anna.rossi@acme.example")
    subject = f"Re: Printer on fire - Ticket Id: {ticket.number}"
    expect(page.locator("#answer-subject")).to_have_text(subject)
    expect(page.locator("#answer-quote")).to_contain_text("our printer is on fire")
    browsing.screenshot("answer-01-form")

    page.get_by_label("Your answer").fill("A technician is on his way.")
    page.get_by_role("button", name="Send answer").click()

    expect(page.get_by_role("status")).to_contain_text("Answer sent to anna.rossi@acme.example")
    assert "tab=messages" in page.url
    sent_row = page.locator("table.messages tr", has_text=subject)
    expect(sent_row).to_contain_text("sent")
    expect(sent_row).to_contain_text("Support")
    browsing.screenshot("answer-02-messages")

    [received] = peer.received
    msg = received.message
    assert msg["From"] == "Support <support@crm.test>"
    assert msg["Subject"] == subject
    assert msg["In-Reply-To"] == "<question-1@acme.example>"
    assert "A technician is on his way." in msg.get_body(("plain",)).get_content()

    # The ticket now waits for the customer, and the answer is among its comments.
    expect(page.locator(".field-row", has_text="Status")).to_contain_text("Wait for response")
    page.locator("#tab-comments").click()
    expect(page.locator("#comment-hints")).to_contain_text(
        "Comments added here are mailed to anna.rossi@acme.example"
    )
    expect(page.locator(".comment").first).to_contain_text("A technician is on his way.")
    expect(page.locator(".comment").first).to_contain_text(
        "Sent by mail to anna.rossi@acme.example"
    )

    assert browsing.console.csp_violations == []
    assert browsing.console.page_errors == []
    assert browsing.console.errors == []


@pytest.fixture
def bare_mailbox(org: Org) -> Mailbox:
    return Mailbox.objects.create(
        name="Support",
        host="imap.invalid",
        username="support@crm.test",
        address="support@crm.test",
        owner=org.charlie,
    )


def test_an_administrator_sets_a_mailboxs_outgoing_server_and_tests_it(
    bare_mailbox: Mailbox, peer: SmtpPeer, browsing: Browsing
) -> None:
    page = browsing.page
    browsing.log_in("admin", PASSWORD)
    page.goto(f"/settings/mail-converter/{bare_mailbox.pk}/")
    page.get_by_role("link", name="Outgoing (info answers)").click()
    expect(page.locator("#smtp-effective")).to_contain_text("imap.invalid:587")

    page.get_by_label("SMTP server").fill(peer.host)
    page.get_by_label("Port").fill(str(peer.port))
    page.get_by_label("Security").select_option("none")
    page.get_by_role("button", name="Save").click()

    expect(page.get_by_role("status").first).to_contain_text("Outgoing settings of Support saved.")
    expect(page.locator("#smtp-effective")).to_contain_text(f"{peer.host}:{peer.port}")
    page.get_by_label("Send the test mail to").fill("admin@crm.example")
    page.get_by_role("button", name="Send test mail").click()

    expect(page.locator("#smtp-test-answer")).to_contain_text("Sent. The server accepted")
    browsing.screenshot("answer-03-mailbox-smtp")
    [received] = peer.received
    assert received.mail_from == "support@crm.test"
    assert received.rcpt_tos == ("admin@crm.example",)
    assert browsing.console.page_errors == []
    assert browsing.console.errors == []
