"""The "Outlook Mail Connector" settings page in a real browser: paste a key, enable users.

Screenshots go to test-artifacts/ (license-*.png) for a human to look at.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.conftest import Org
from tests.e2e.conftest import Browsing
from tests.factories import PASSWORD
from tests.licensing.vendor import CRM_URL, Vendor

pytestmark = [
    pytest.mark.e2e,
    # The live server reads committed rows; the serialized rollback restores the built-in
    # modules (migration data) that the truncation at the end of the test removes.
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
    pytest.mark.filterwarnings("ignore:No directory at:UserWarning"),
]


@pytest.fixture
def vendor(settings: Any) -> Vendor:
    v = Vendor()
    settings.LICENSE_PUBLIC_KEY = v.public_key
    settings.CRM_BASE_URL = CRM_URL
    return v


@pytest.fixture
def staff(org: Org) -> Org:
    """The personas with fixed, distinct names: the checkboxes are found by their labels."""
    for user, (first, last) in zip(
        (org.admin, org.alice, org.bob, org.charlie),
        [("Ada", "Admin"), ("Alice", "Seller"), ("Bob", "Manager"), ("Charlie", "Support")],
        strict=True,
    ):
        user.first_name, user.last_name = first, last
        user.save()
    return org


def test_an_administrator_activates_a_key_and_enables_users_up_to_the_limit(
    staff: Org, vendor: Vendor, browsing: Browsing
) -> None:
    org = staff
    expires = datetime.now(UTC).replace(microsecond=0) + timedelta(days=20, hours=1)
    key = vendor.key(installation="Acme Ltd", users=3, expires_at=expires)
    page = browsing.page
    browsing.log_in("admin", PASSWORD)

    page.goto("/settings/mail-connector/")
    expect(page.get_by_role("heading", name="Outlook Mail Connector", level=1)).to_be_visible()
    expect(page.locator("#license")).to_contain_text("No license is activated")

    # An email client wraps long keys; the pasted line breaks do not matter.
    page.get_by_label("License key").fill(f"{key[:70]}\n{key[70:]}\n")
    page.get_by_role("button", name="Activate").click()

    expect(page.get_by_role("status").filter(has_text="License activated")).to_have_text(
        "License activated for Acme Ltd: up to 3 users may use the connector."
    )
    license_card = page.locator("#license")
    expect(license_card).to_contain_text("Active")
    expect(license_card).to_contain_text("Acme Ltd")
    expect(license_card).to_contain_text("https://crm.example.com")
    expect(page.locator("#seat-count")).to_have_text("0 of 3 users enabled")
    expect(page.locator("#expiry-warning")).to_have_text(
        re.compile(r"^The license expires in 20 days \(on .+\)\. Ask your vendor for a renewal")
    )
    browsing.screenshot("license-activated")

    for user in (org.alice, org.bob, org.charlie):
        page.get_by_label(user.get_full_name()).check()
    page.get_by_role("button", name="Save enabled users").click()
    expect(page.get_by_role("status").filter(has_text="Saved")).to_have_text(
        "Saved: enabled alice, bob, charlie."
    )
    expect(page.locator("#seat-count")).to_have_text("3 of 3 users enabled")
    for user in (org.alice, org.bob, org.charlie):
        expect(page.get_by_label(user.get_full_name())).to_be_checked()

    # The fourth is one too many: refused with the count, and nothing saved.
    page.get_by_label(org.admin.get_full_name()).check()
    page.get_by_role("button", name="Save enabled users").click()
    expect(page.get_by_role("alert")).to_have_text(
        "You selected 4 users, but the license allows 3 users. Untick 1 or ask your vendor "
        "for a key with more users."
    )
    expect(page.locator("#seat-count")).to_have_text("3 of 3 users enabled")
    expect(page.get_by_label(org.admin.get_full_name())).to_be_checked()  # kept, to untick
    browsing.screenshot("license-over-limit")

    page.goto("/settings/mail-connector/")
    expect(page.get_by_label(org.admin.get_full_name())).not_to_be_checked()
    expect(page.locator("#history tbody tr")).to_have_count(1)
    assert browsing.console.csp_violations == []
    assert browsing.console.page_errors == []


def test_a_refused_key_shows_its_reason_on_the_page(
    org: Org, vendor: Vendor, browsing: Browsing
) -> None:
    browsing.log_in("admin", PASSWORD)
    page = browsing.page
    page.goto("/settings/mail-connector/")
    page.get_by_label("License key").fill(vendor.key(crm_url="https://crm.other.com"))
    page.get_by_role("button", name="Activate").click()
    expect(page.get_by_role("alert")).to_contain_text("This key is for https://crm.other.com")
    expect(page.locator("#license")).to_contain_text("No license is activated")
    browsing.screenshot("license-refused")


def test_the_page_is_not_found_for_a_sales_rep(org: Org, browsing: Browsing) -> None:
    browsing.log_in("alice", PASSWORD)
    response = browsing.page.goto("/settings/mail-connector/")
    assert response is not None
    assert response.status == 404
