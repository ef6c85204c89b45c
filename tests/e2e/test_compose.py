"""Writing an email from a Contact in a real browser: template, editor, sending, the Messages
tab, and what the customer's server received (aiosmtpd, tests/crm/smtp_peer)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from email.message import EmailMessage
from typing import Any

import pytest
from playwright.sync_api import expect

from crm.models import EmailTemplate, Record
from tests.conftest import Org
from tests.crm.smtp_peer import SmtpPeer, use_as_outgoing_server
from tests.e2e.conftest import Browsing
from tests.factories import PASSWORD, make_record

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.smtp,
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
    pytest.mark.filterwarnings("ignore:No directory at:UserWarning"),
]


@pytest.fixture
def peer(org: Org, settings: Any, tmp_path: Any) -> Iterator[SmtpPeer]:
    settings.MEDIA_ROOT = tmp_path / "media"
    server = SmtpPeer().start()
    use_as_outgoing_server(org.admin, server.host, server.port, timeout_seconds=5)
    yield server
    server.stop()


@pytest.fixture
def jane(org: Org) -> Record:
    org.alice.first_name, org.alice.last_name = "Alice", "Able"
    org.alice.save()
    EmailTemplate.objects.create(
        name="Quote follow-up",
        subject="Your quote, {{ contact.first_name }}",
        body_html="<p>Dear {{ contact.first_name }},</p><p>did the quote reach you?</p>"
        "<p>{{ user.first_name }}</p>",
    )
    return make_record(
        "Contacts", org.alice, first_name="Jane", last_name="Doe", email="jane@customer.example"
    )


# Data fixtures come before `browsing`: see tests/e2e/conftest.py for why.
def test_a_user_sends_an_email_from_a_contact_with_a_template(
    peer: SmtpPeer, jane: Record, browsing: Browsing
) -> None:
    page = browsing.page
    browsing.log_in("alice", PASSWORD)
    page.get_by_role("link", name="Contacts").first.click()
    page.get_by_role("link", name="Jane Doe").click()
    page.get_by_role("link", name="Send email").click()

    expect(page.get_by_label("To")).to_have_value("Jane Doe <jane@customer.example>")
    page.get_by_label("Template").select_option(label="Quote follow-up")
    page.get_by_role("button", name="Use template").click()
    expect(page.get_by_label("Subject")).to_have_value("Your quote, Jane")
    editor = page.get_by_role("textbox", name="Message")
    expect(editor).to_contain_text("Dear Jane,")
    expect(editor).to_contain_text("Alice")
    # The textarea is the editor's hidden twin once JavaScript runs.
    expect(page.locator("textarea[name=body]")).to_be_hidden()
    editor.locator("p").last.click()
    page.keyboard.press("End")
    page.keyboard.press("Enter")
    page.get_by_role("button", name="Bold").click()
    page.keyboard.type("Call me any time.")
    browsing.screenshot("compose-01-filled")

    page.get_by_role("button", name="Send").click()

    expect(page).to_have_url(re.compile(r"/m/Contacts/\d+/\?tab=messages$"))
    expect(page.get_by_role("status").filter(has_text="sent")).to_be_visible()
    row = page.locator("table.messages tbody tr").filter(has_text="Your quote, Jane")
    expect(row).to_be_visible()
    expect(row.locator(".badge", has_text="sent")).to_be_visible()
    expect(row).to_contain_text("Opens (indicative: mail clients may prefetch images)")
    expect(row.locator(".open-count")).to_have_text("0")
    browsing.screenshot("compose-02-messages-tab")
    assert browsing.console.page_errors == []
    assert browsing.console.csp_violations == []

    assert [r.rcpt_tos for r in peer.received] == [("jane@customer.example",)]
    received = peer.received[0].message
    assert received["Subject"] == "Your quote, Jane"
    html = received.get_body(("html",))
    assert isinstance(html, EmailMessage)
    content = html.get_content()
    assert "<p>Dear Jane,</p>" in content
    assert re.search(r"<b>Call me any time\.</b>", content)
    assert re.search(r'<img src="[^"]+/t/[^"]+\.gif"', content)
