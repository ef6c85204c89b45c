"""A support agent marks a ticket from mail as spam from the Tickets list, then undoes it.

Real Chromium against the live server; the tickets are made by the converter's one-message
path (no IMAP server needed to show the pages).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from crm.models import Record
from mailconverter import scanner
from mailconverter.models import BlockedSender, Folder, Mailbox, Rule
from tests.conftest import Org
from tests.e2e.conftest import Browsing
from tests.factories import PASSWORD
from tests.mailconverter.helpers import mail

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
    pytest.mark.filterwarnings("ignore:No directory at:UserWarning"),
]
_uids = itertools.count(1)


@dataclass
class Inbox:
    spam: Record
    question: Record


@pytest.fixture
def inbox(org: Org, settings: Any, tmp_path: Path) -> Inbox:
    settings.MEDIA_ROOT = tmp_path / "media"
    mailbox = Mailbox.objects.create(
        name="Support",
        host="imap.invalid",
        username="support@crm.test",
        address="support@crm.test",
        owner=org.charlie,
    )
    folder = Folder.objects.create(mailbox=mailbox, name="INBOX", selected=True)
    Rule.objects.create(mailbox=mailbox, position=0, actions=[{"type": "create_ticket"}])
    junk = (
        mail("customer_question.eml")
        .replace(b"Anna Rossi <anna.rossi@acme.example>", b"Deals <deals@spam.example>")
        .replace(b"question-1@acme.example", b"spam-1@spam.example")
        .replace(b"Printer on fire", b"Cheap watches")
    )
    for raw in (mail("customer_question.eml"), junk):
        scanner.process(mailbox, folder, 1, next(_uids), raw)
    return Inbox(
        spam=Record.objects.get(label="Cheap watches"),
        question=Record.objects.get(label="Printer on fire"),
    )


# Data fixtures come before `browsing`: see tests/e2e/conftest.py for why.
def test_an_agent_marks_a_ticket_as_spam_from_the_list_and_undoes_it(
    inbox: Inbox, browsing: Browsing
):
    page = browsing.page
    browsing.log_in("charlie", PASSWORD)
    page.goto("/m/Tickets/")
    labels = page.locator("table.records td.label")
    expect(labels).to_have_text(["Cheap watches", "Printer on fire"])
    browsing.screenshot("spam-01-list")

    page.get_by_label(f"Choose {inbox.spam.number}").check()
    page.get_by_role("button", name="Mark as spam").click()

    notice = page.locator(".notice")
    expect(notice).to_contain_text(f"{inbox.spam.number} marked as spam")
    expect(notice).to_contain_text("Blocked: deals@spam.example")
    expect(labels).to_have_text(["Printer on fire"])
    browsing.screenshot("spam-02-marked")
    assert BlockedSender.objects.filter(address="deals@spam.example").exists()

    notice.get_by_role("button", name="Undo").click()

    expect(page.get_by_role("status")).to_contain_text(f"Restored {inbox.spam.number}.")
    expect(labels).to_have_text(["Cheap watches", "Printer on fire"])
    expect(page.locator(".notice")).to_have_count(0)
    browsing.screenshot("spam-03-undone")
    assert not BlockedSender.objects.exists()

    # The ticket's own page tells where it came from, and offers the same button.
    page.get_by_role("link", name="Cheap watches").click()
    information = page.get_by_role("region", name="Mail information")
    expect(information).to_contain_text("Support")
    expect(information).to_contain_text("deals@spam.example")
    expect(page.get_by_role("button", name="Mark as spam")).to_be_visible()
    browsing.screenshot("spam-04-ticket")

    assert browsing.console.csp_violations == []
    assert browsing.console.page_errors == []
    assert browsing.console.errors == []
