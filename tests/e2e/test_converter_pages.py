"""The "Mail Converter" settings pages in a real browser, against the real test Dovecot and a
real Celery worker: set up a mailbox from nothing, scan it, find the ticket.

Screenshots go to test-artifacts/ (converter-*.png) for a human to look at.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from mailconverter.models import Mailbox, Rule, ScanRun
from tests.conftest import Org
from tests.e2e.conftest import Browsing
from tests.factories import PASSWORD
from tests.mailconverter import conftest as imap_fixtures
from tests.mailconverter.celery_worker import Worker, real_celery
from tests.mailconverter.conftest import PASSWORD as IMAP_PASSWORD
from tests.mailconverter.conftest import Account, Dovecot
from tests.mailconverter.helpers import mail

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.imap,
    pytest.mark.celery,
    # The live server and the worker read committed rows; the serialized rollback restores the
    # built-in modules (migration data) that the truncation at the end of the test removes.
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
    pytest.mark.filterwarnings("ignore:No directory at:UserWarning"),
]

# The converter tests' private Dovecot and its fresh accounts.
dovecot = imap_fixtures.dovecot
account = imap_fixtures.account


@pytest.fixture
def worker(org: Org, tmp_path: Path) -> Iterator[Worker]:
    """One real Celery worker; "Scan now" queues the scan for it through Redis."""
    with real_celery(tmp_path) as workers:
        yield workers[0]


def test_an_administrator_sets_up_a_mailbox_scans_it_and_gets_a_ticket(
    org: Org, dovecot: Dovecot, account: Account, worker: Worker, browsing: Browsing
) -> None:
    account.deliver(mail("customer_question.eml"))
    page = browsing.page
    browsing.log_in("admin", PASSWORD)

    page.get_by_role("navigation", name="Main").get_by_role("link", name="Mail Converter").click()
    expect(page.get_by_role("heading", name="Mail Converter", level=1)).to_be_visible()
    page.get_by_role("link", name="New mailbox").click()

    page.get_by_role("textbox", name="Name", exact=True).fill("support")
    page.get_by_role("textbox", name="Server", exact=True).fill("127.0.0.1")
    page.get_by_role("spinbutton", name="Port", exact=True).fill(str(dovecot.port))
    page.get_by_label("Security").select_option(label="None (loopback and tests only)")
    page.get_by_label("Username").fill(account.user)
    page.get_by_label("Password", exact=True).fill(IMAP_PASSWORD)
    page.get_by_label("Mailbox address").fill("support@crm.test")
    page.get_by_label("Owner of created records").select_option(str(org.admin.pk))
    page.get_by_role("button", name="Create mailbox").click()

    expect(page.get_by_role("status").filter(has_text="Mailbox support created")).to_be_visible()
    page.get_by_role("button", name="Refresh folders").click()
    expect(page.get_by_role("status").filter(has_text="The server lists")).to_be_visible()
    expect(page.get_by_label("Trash")).to_be_disabled()
    page.get_by_label("INBOX").check()
    page.get_by_role("button", name="Save folders to scan").click()
    expect(page.get_by_label("INBOX")).to_be_checked()
    row = page.get_by_role("row").filter(has=page.get_by_label("INBOX"))
    expect(row).to_contain_text("INBOX 1 1")
    browsing.screenshot("converter-folders")

    page.get_by_role("link", name="Rules").click()
    page.get_by_role("link", name="Add a rule").click()
    page.get_by_label("Name", exact=True).fill("Every message to a ticket")
    expect(page.get_by_label("Action 1", exact=True)).to_have_value("create_ticket")
    page.get_by_role("button", name="Save rule").click()
    expect(page.locator("#rules tbody tr")).to_have_count(1)
    expect(page.locator("#rules tbody tr")).to_contain_text("every message")
    expect(page.locator("#rules tbody tr")).to_contain_text("create a ticket")

    page.get_by_role("button", name="Scan now").click()
    # The worker runs the scan; the page polls until the run has finished.
    expect(page.locator("#scan-label")).to_have_text("Finished", timeout=60_000)
    expect(page.locator("#scan-counts")).to_have_text("Ticket created: 1")
    browsing.screenshot("converter-scanned")

    page.get_by_role("link", name="Activity").click()
    expect(page.locator("#runs tbody tr")).to_have_count(1)
    expect(page.locator("#runs tbody tr")).to_contain_text("Ticket created: 1")
    expect(page.locator("#runs-chart rect")).to_have_count(1)
    expect(page.locator("#ledger tbody tr")).to_contain_text("Printer on fire")

    page.goto("/m/Tickets/")
    expect(page.get_by_role("link", name=re.compile("Printer on fire"))).to_be_visible()
    assert account.flags() == {1: {b"\\Seen"}}
    assert browsing.console.csp_violations == []
    assert browsing.console.page_errors == []


@pytest.fixture
def mailbox(org: Org) -> Mailbox:
    """A mailbox with a rule that creates tickets, and a few past scans for the chart."""
    box = Mailbox(name="support", host="imap.example.com", username="s@crm.test", owner=org.admin)
    box.set_password("not-used-here")
    box.save()
    Rule.objects.create(
        mailbox=box, name="Tickets", position=0, actions=[{"type": "create_ticket"}]
    )
    now = timezone.now()
    for minutes, created in [(30, 4), (20, 0), (10, 2)]:
        ScanRun.objects.create(
            mailbox=box,
            started_at=now - timedelta(minutes=minutes),
            finished_at=now - timedelta(minutes=minutes, seconds=-3),
            status="ok",
            counts={"created": created} if created else {},
        )
    return box


def test_an_administrator_writes_a_rule_and_tries_it_on_an_email(
    mailbox: Mailbox, browsing: Browsing
) -> None:
    page = browsing.page
    browsing.log_in("admin", PASSWORD)
    page.goto(f"/settings/mail-converter/{mailbox.pk}/rules/")
    page.get_by_role("link", name="Add a rule").click()
    page.get_by_label("Name", exact=True).fill("Replies")
    page.get_by_role("button", name="Add a condition").click()
    page.get_by_label("Operator").select_option(label="matches regex")
    page.get_by_label("Value").fill("(unclosed")
    page.get_by_label("Action 1", exact=True).select_option(
        label="Update the ticket (by number or reply)"
    )
    page.get_by_role("button", name="Save rule").click()
    expect(page.get_by_role("alert").filter(has_text="Condition 1")).to_contain_text(
        "This is not a valid regular expression"
    )
    expect(page.get_by_label("Name", exact=True)).to_have_value("Replies")
    browsing.screenshot("converter-rule-refused")

    page.get_by_label("Operator").select_option(label="has ticket number")
    page.get_by_label("Value").fill("")
    page.get_by_role("button", name="Save rule").click()
    rows = page.locator("#rules tbody tr")
    expect(rows).to_have_count(2)
    page.get_by_role("button", name="Move Replies up").click()
    expect(rows.first).to_contain_text("Replies")
    expect(rows.first).to_contain_text("subject has ticket number")

    page.get_by_role("link", name="Test a rule").click()
    raw = mail("customer_question.eml").replace(b"Printer on fire", b"Re: Printer [TT999]")
    page.get_by_label("Email source").fill(raw.decode())
    page.get_by_role("button", name="Test").click()
    steps = page.locator("#preview-steps > li")
    expect(steps.first).to_have_text(
        re.compile(r"Replies .*No ticket TT999: the next rule would be tried\.", re.S)
    )
    expect(page.locator("#preview-verdict")).to_have_text(
        "Tickets would apply: create a ticket titled “Re: Printer [TT999]” with no contact "
        "(nobody in the CRM has this address)."
    )
    browsing.screenshot("converter-test-rule")

    page.get_by_role("link", name="Activity").click()
    expect(page.locator("#runs-chart rect")).to_have_count(3)
    browsing.screenshot("converter-activity")
    assert browsing.console.csp_violations == []
    assert browsing.console.page_errors == []
