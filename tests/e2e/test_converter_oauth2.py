"""Connecting a mailbox with Microsoft in a real browser: the settings page, the provider's
consent page and the way back, under the pages' Content-Security-Policy.

The boundary: Microsoft's and Google's sign-in servers cannot be reached from the tests; the
XOAUTH2 tests' own provider (tests.mailconverter.oauth2_server) stands in on a loopback port,
and its consent page accepts for the account the test names. Screenshots go to
test-artifacts/ (converter-oauth2-*.png).
"""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import expect

from mailconverter import secrets
from mailconverter.models import Mailbox
from tests.conftest import Org
from tests.e2e.conftest import Browsing
from tests.factories import PASSWORD
from tests.mailconverter import test_oauth2
from tests.mailconverter.oauth2_server import IdentityProvider

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
]

identity_provider = test_oauth2.identity_provider


@pytest.fixture
def mailbox(org: Org) -> Mailbox:
    box = Mailbox(
        name="Office 365 support",
        host="outlook.office365.com",
        port=993,
        username="support@crm.test",
        address="support@crm.test",
        owner=org.admin,
    )
    box.set_password("before OAuth2")
    box.save()
    return box


@pytest.fixture
def provider(
    identity_provider: IdentityProvider, settings: Any, live_server: Any
) -> IdentityProvider:
    settings.CRM_BASE_URL = live_server.url
    settings.CONVERTER_OAUTH2_MICROSOFT_AUTHORIZE_URL = f"{identity_provider.url}/authorize"
    settings.CONVERTER_OAUTH2_MICROSOFT_TOKEN_URL = identity_provider.token_url
    identity_provider.redirect_uri = f"{live_server.url}/settings/mail-converter/oauth2/"
    identity_provider.signed_in = "support@crm.test"
    identity_provider.consent = "accept"
    return identity_provider


def test_an_administrator_connects_a_mailbox_with_microsoft(
    org: Org, mailbox: Mailbox, provider: IdentityProvider, browsing: Browsing
) -> None:
    page = browsing.page
    browsing.log_in("admin", PASSWORD)
    page.goto(f"/settings/mail-converter/{mailbox.pk}/")
    section = page.get_by_role("region", name="Sign in with Microsoft 365 or Google")
    expect(section).to_contain_text("Not connected with OAuth2")
    section.get_by_label("App registration's client id").fill(provider.client_id)
    section.get_by_label("Client secret").fill(provider.client_secret)
    browsing.screenshot("converter-oauth2-connect")

    section.get_by_role("button", name="Connect with Microsoft").click()

    page.wait_for_url(f"{browsing.base_url}/settings/mail-converter/{mailbox.pk}/")
    expect(page.get_by_text("is connected with Microsoft")).to_be_visible()
    expect(section).to_contain_text("Connected with OAuth2 (XOAUTH2)")
    browsing.screenshot("converter-oauth2-connected")
    page.set_viewport_size({"width": 320, "height": 800})
    expect(section.get_by_role("button", name="Connect with Google")).to_be_visible()
    browsing.screenshot("converter-oauth2-connected-320")
    assert browsing.console.csp_violations == []
    stored = Mailbox.objects.get(pk=mailbox.pk)
    assert stored.auth == Mailbox.Auth.XOAUTH2
    assert provider.refresh_token_is_live(secrets.decrypt(stored.oauth2_refresh_token))
