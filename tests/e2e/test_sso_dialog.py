"""The single sign-on dialog in a real Chromium: authorize -> the test provider -> the last page.

The browser opens the authorize URL as the Office dialog would and follows the real redirects.
office.js is not fetched from Microsoft's CDN (the tests run offline): the request is answered
with an empty script, and a stand-in `Office` object, injected before any page script, records
what the page hands to `Office.context.ui.messageParent`.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest
import requests
from playwright.sync_api import Route, expect

from tests.conftest import Org
from tests.e2e.conftest import Browsing
from tests.mailconnector.oidc_provider import OidcProvider, s256

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
    pytest.mark.filterwarnings("ignore:No directory at:UserWarning"),
]

OFFICE_STAND_IN = """
window.__messages = [];
window.Office = {
  onReady: function (callback) {
    setTimeout(function () { callback({host: "Outlook", platform: "OfficeOnline"}); }, 0);
  },
  context: {ui: {messageParent: function (message, options) {
    window.__messages.push({message: message, options: options || null});
  }}},
};
"""


@pytest.fixture
def idp(live_server: Any, settings: Any) -> Iterator[OidcProvider]:
    settings.CRM_BASE_URL = live_server.url
    provider = OidcProvider(redirect_uris=[f"{live_server.url}/api/addin/v1/auth/sso/callback"])
    settings.ADDIN_SSO_PROVIDERS = [provider.settings_entry()]
    yield provider
    provider.stop()


def _empty_office_js(route: Route) -> None:
    route.fulfill(status=200, content_type="text/javascript", body="/* office.js */")


def test_the_dialog_signs_in_through_the_provider_and_hands_a_working_code_to_office(
    org: Org, idp: OidcProvider, browsing: Browsing
) -> None:
    page = browsing.page
    page.route("https://appsforoffice.microsoft.com/**", _empty_office_js)
    page.add_init_script(OFFICE_STAND_IN)
    navigations: list[str] = []
    page.on("request", lambda r: navigations.append(r.url) if r.is_navigation_request() else None)
    verifier = secrets.token_urlsafe(48)
    state = secrets.token_urlsafe(16)
    query = urlencode(
        {
            "provider": "testidp",
            "code_challenge": s256(verifier),
            "code_challenge_method": "S256",
            "state": state,
        }
    )

    page.goto(f"/api/addin/v1/auth/sso/authorize?{query}")
    page.wait_for_function("window.__messages && window.__messages.length > 0")

    assert page.url.startswith(f"{browsing.base_url}/api/addin/v1/auth/sso/callback?")
    # Through the real redirects: the provider's authorize endpoint, then the CRM's callback.
    assert any(url.startswith(f"{idp.issuer}/authorize?") for url in navigations), navigations
    assert len(idp.token_requests) == 1
    (sent,) = page.evaluate("window.__messages")
    assert sent["options"] is None  # the task pane is on the CRM's own origin
    message = json.loads(sent["message"])
    assert message["status"] == "ok"
    assert message["state"] == state
    expect(page.get_by_role("heading", name="Signed in")).to_be_visible()
    expect(page.locator("#sso-status")).to_have_text("Signed in. Returning to Outlook…")
    assert browsing.console.csp_violations == []
    assert browsing.console.page_errors == []
    browsing.screenshot("sso_dialog_done")

    tokens = requests.post(
        f"{browsing.base_url}/api/addin/v1/auth/sso/token",
        json={"code": message["code"], "code_verifier": verifier},
        timeout=10,
    )
    assert tokens.status_code == 200, tokens.text
    assert tokens.json()["user"]["username"] == "alice"
    assert tokens.headers["Cross-Origin-Opener-Policy"] == "unsafe-none"


def test_outside_office_the_page_says_the_window_can_be_closed(
    org: Org, idp: OidcProvider, browsing: Browsing
) -> None:
    page = browsing.page
    page.route("https://appsforoffice.microsoft.com/**", lambda route: route.abort())
    verifier = secrets.token_urlsafe(48)
    query = urlencode(
        {
            "provider": "testidp",
            "code_challenge": s256(verifier),
            "code_challenge_method": "S256",
            "state": "s",
        }
    )
    page.goto(f"/api/addin/v1/auth/sso/authorize?{query}")
    expect(page.locator("#sso-status")).to_have_text("You can close this window.")
    assert browsing.console.csp_violations == []
