"""The CRM's pages in a real browser: what a sales rep sees, may open and may change.

Screenshots of the main states go to test-artifacts/ for a human to look at.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest
from playwright.sync_api import expect

from crm.models import Module, Record, User
from crm.models.modules import Sharing
from tests.conftest import Org
from tests.e2e.conftest import Browsing
from tests.factories import PASSWORD, ProfileFactory, UserFactory, grant, make_record

pytestmark = [
    pytest.mark.e2e,
    # The live server reads committed rows, so each test truncates the tables at its end; the
    # serialized rollback puts the built-in modules (migration data) back for later tests.
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
    # WhiteNoise warns that STATIC_ROOT was never collected; the live server serves the apps'.
    pytest.mark.filterwarnings("ignore:No directory at:UserWarning"),
]


@dataclass
class SalesFloor:
    """Alice, a sales rep whose profile opens Contacts and Opportunities, and a peer's record."""

    alice: User
    ada: Record
    colleagues: Record


@pytest.fixture
def sales_floor(org: Org) -> SalesFloor:
    desk = ProfileFactory(name="Sales desk")
    grant(desk, "Contacts")
    grant(desk, "Opportunities")
    org.sales_rep.profiles.set([desk])
    contacts = Module.objects.get(name="Contacts")
    contacts.default_sharing = Sharing.PRIVATE
    contacts.save()
    dave = UserFactory(username="dave", first_name="Dave", last_name="Peer", role=org.sales_rep)
    ada = make_record(
        "Contacts",
        org.alice,
        first_name="Ada",
        last_name="Lovelace",
        email="ada@engines.test",
        job_title="Analyst",
    )
    make_record("Contacts", org.alice, first_name="Charles", last_name="Babbage")
    colleagues = make_record("Contacts", dave, first_name="Private", last_name="Prospect")
    return SalesFloor(alice=org.alice, ada=ada, colleagues=colleagues)


# Data fixtures come before `browsing`: see tests/e2e/conftest.py for why.
def test_a_sales_rep_sees_only_her_modules_and_records_and_edits_one(
    sales_floor: SalesFloor, browsing: Browsing
):
    ada, colleagues = sales_floor.ada, sales_floor.colleagues
    page = browsing.page
    base = browsing.base_url

    # She logs in.
    page.goto("/login/")
    browsing.screenshot("crm-01-login")
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(f"{base}/")
    expect(page.locator(".account-name")).to_have_text(str(sales_floor.alice))
    # The stylesheet arrived and applies (served by the live server, allowed by the policy).
    assert page.evaluate("getComputedStyle(document.querySelector('.topbar')).display") == "flex"

    # She sees her modules, and only those.
    expect(page.locator(".module-card .module-name")).to_have_text(["Contacts", "Opportunities"])
    menu = page.get_by_role("navigation", name="Main").get_by_role("link")
    expect(menu).to_have_count(4)
    for name in ("Home", "Contacts", "Opportunities", "Recycle bin"):
        expect(menu.filter(has_text=name)).to_have_count(1)
    browsing.screenshot("crm-02-home")

    # She sees her records, not her colleague's private one.
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Contacts").click()
    rows = page.locator("table.records tbody tr")
    expect(rows).to_have_count(2)
    expect(page.locator("td.label")).to_have_text(["Charles Babbage", "Ada Lovelace"])
    expect(page.get_by_text("Prospect")).to_have_count(0)
    browsing.screenshot("crm-03-list")

    # Typing in the search box narrows the table in place (htmx) and keeps the address.
    page.get_by_label("Search contacts").press_sequentially("love")
    expect(rows).to_have_count(1)
    expect(page.locator("td.label")).to_have_text(["Ada Lovelace"])
    expect(page).to_have_url(re.compile(r"/m/Contacts/\?q=love"))
    browsing.screenshot("crm-04-search")

    # Sorting by name is a click on the column header.
    page.goto("/m/Contacts/")
    page.get_by_role("link", name="Contact", exact=True).click()
    expect(page.locator("td.label")).to_have_text(["Ada Lovelace", "Charles Babbage"])
    expect(page.locator("th[aria-sort]")).to_have_attribute("aria-sort", "ascending")

    # The colleague's private record is not found, even by its address.
    response = page.goto(f"/m/Contacts/{colleagues.pk}/")
    assert response is not None
    assert response.status == 404
    expect(page.get_by_role("heading", level=1)).to_have_text("Not found")
    expect(page.get_by_text("Prospect")).to_have_count(0)
    browsing.screenshot("crm-05-not-found")

    # She edits her own record; the page and the History tab show the change.
    page.goto(f"/m/Contacts/{ada.pk}/")
    expect(page.get_by_text("No emails are linked to this record yet.")).to_be_visible()
    page.get_by_role("link", name="Edit", exact=True).click()
    browsing.screenshot("crm-06-edit")
    page.get_by_label("Job title").fill("Chief analyst")
    page.get_by_role("button", name="Save").click()
    expect(page).to_have_url(f"{base}/m/Contacts/{ada.pk}/")
    expect(page.get_by_role("status")).to_have_text(f"{ada.number} saved.")
    job_title = page.locator(".field-row").filter(has=page.locator("dt", has_text="Job title"))
    expect(job_title.locator("dd")).to_have_text("Chief analyst")
    browsing.screenshot("crm-07-saved")

    expect(page.get_by_text("No emails are linked to this record yet.")).to_be_visible()
    page.get_by_role("link", name="History", exact=True).click()
    expect(page).to_have_url(f"{base}/m/Contacts/{ada.pk}/?tab=history")
    expect(page.locator("#tab-history")).to_have_attribute("aria-current", "true")
    latest = page.locator(".history-entry").first
    expect(latest.locator(".history-action")).to_have_text("Updated")
    expect(latest.locator(".changes li")).to_have_text(
        re.compile(r"Job title:\s+Analyst\s+→\s+changed to\s+Chief analyst")
    )
    browsing.screenshot("crm-08-history")

    # A reload lands on the same tab.
    page.reload()
    expect(page.locator("#tab-history")).to_have_attribute("aria-current", "true")
    expect(page.locator(".history-entry")).to_have_count(2)

    # At 320 px the menu sits above the content and nothing overflows sideways.
    page.set_viewport_size({"width": 320, "height": 720})
    page.goto("/m/Contacts/")
    assert page.evaluate("document.documentElement.scrollWidth") <= 320
    nav_box = page.get_by_role("navigation", name="Main").bounding_box()
    main_box = page.locator("main").bounding_box()
    assert nav_box is not None
    assert main_box is not None
    assert nav_box["y"] + nav_box["height"] <= main_box["y"]
    browsing.screenshot("crm-09-narrow")

    assert browsing.console.csp_violations == []
    assert browsing.console.page_errors == []
    # The one expected console error: the 404 page's own status.
    unexpected = [e for e in browsing.console.errors if "status of 404" not in e]
    assert unexpected == []


@pytest.fixture
def ada(org: Org) -> Record:
    return make_record("Contacts", org.alice, first_name="Ada", last_name="Lovelace")


def test_the_record_tabs_switch_in_place_and_keyboard_focus_stays_on_the_tab(
    ada: Record, browsing: Browsing
):
    page = browsing.page
    browsing.log_in("alice", PASSWORD)

    page.goto(f"/m/Contacts/{ada.pk}/?tab=comments")
    expect(page.locator("#tab-comments")).to_have_attribute("aria-current", "true")
    page.get_by_label("Add a comment").fill("Called her: send the offer on Monday.")
    page.get_by_role("button", name="Add comment").click()
    expect(page).to_have_url(f"{browsing.base_url}/m/Contacts/{ada.pk}/?tab=comments")
    expect(page.locator(".comment")).to_have_count(1)
    expect(page.locator(".comment-body")).to_have_text("Called her: send the offer on Monday.")
    browsing.screenshot("crm-10-comments")

    page.locator("#tab-documents").focus()
    page.keyboard.press("Enter")
    expect(page.get_by_text("No documents yet.")).to_be_visible()
    expect(page.locator("#tab-documents")).to_have_attribute("aria-current", "true")
    expect(page.locator("#tab-comments")).not_to_have_attribute("aria-current", "true")
    expect(page.locator("#tab-documents")).to_be_focused()

    assert browsing.console.csp_violations == []
    assert browsing.console.errors == []
    assert browsing.console.page_errors == []
    # The listener does hear the policy: an inline style slipped into the page is refused.
    with page.expect_console_message(lambda m: "Content Security Policy" in m.text):
        page.evaluate(
            "document.body.insertAdjacentHTML('beforeend', '<b style=\"color: red\">x</b>')"
        )
    assert len(browsing.console.csp_violations) == 1


def test_a_new_record_needs_its_required_fields_and_can_go_to_the_recycle_bin_and_back(
    ada: Record, browsing: Browsing
):
    page = browsing.page
    browsing.log_in("alice", PASSWORD)

    page.goto("/m/Contacts/")
    page.get_by_role("link", name="New Contact").click()
    page.get_by_label("First name").fill("Grace")
    page.get_by_role("button", name="Create contact").click()
    expect(page.get_by_role("alert")).to_contain_text("Please correct the fields marked below.")
    expect(page.get_by_label("Last name")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#id_last_name_error")).to_have_text("This field is required.")
    browsing.screenshot("crm-11-create-error")
    page.get_by_label("Last name").fill("Hopper")
    page.get_by_role("button", name="Create contact").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Grace Hopper")

    page.goto(f"/m/Contacts/{ada.pk}/")
    page.get_by_role("button", name="Move to recycle bin").click()
    expect(page).to_have_url(f"{browsing.base_url}/m/Contacts/")
    expect(page.locator("td.label")).to_have_text(["Grace Hopper"])
    page.get_by_role("link", name="Recycle bin").click()
    row = page.locator("tbody tr").filter(has_text=ada.number)
    browsing.screenshot("crm-12-recycle-bin")
    expect(row.get_by_role("button", name=f"Purge {ada.number} for good")).to_have_count(0)
    row.get_by_role("button", name=f"Restore {ada.number}").click()
    expect(page.get_by_role("status")).to_have_text(f"{ada.number} restored.")
    expect(page.get_by_text("The recycle bin is empty.")).to_be_visible()

    assert browsing.console.errors == []
    assert browsing.console.page_errors == []
