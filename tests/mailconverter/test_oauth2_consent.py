"""The OAuth2 consent (authorization code + PKCE) behind "Connect with Microsoft / Google".

The boundary: Microsoft's (login.microsoftonline.com) and Google's (accounts.google.com,
oauth2.googleapis.com) sign-in and token servers cannot be reached from the tests, and their
consent pages need a person. `tests.mailconverter.oauth2_server.IdentityProvider` stands in for
both on a loopback port: its /authorize "signs in" as the account the test names and sends the
browser back, its /token checks the code, the redirect URI and the PKCE verifier. The settings
point the providers' endpoints at it. The browser is played by hand: the test client's answer
is followed to the provider over HTTP, and the provider's answer back into the test client.
Everything else is real: the views and the session, PostgreSQL, and a private Dovecot whose
oauth2 passdb asks that provider whether the stored access token is live when a scan signs in.
"""

from __future__ import annotations

import http.client
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from django.test import Client

from crm.models import Record
from mailconverter import scanner, secrets
from mailconverter.models import Folder, Mailbox, Rule
from tests.conftest import Org
from tests.mailconverter import test_oauth2
from tests.mailconverter.conftest import Account
from tests.mailconverter.helpers import mail
from tests.mailconverter.oauth2_server import IdentityProvider
from tests.mailconverter.test_oauth2 import stored_row

pytestmark = pytest.mark.django_db

BASE = "/settings/mail-converter/"
CALLBACK = f"{BASE}oauth2/"

# The XOAUTH2 tests' provider and Dovecot (its oauth2 passdb asks the provider), shared.
identity_provider = test_oauth2.identity_provider
oauth2_dovecot = test_oauth2.oauth2_dovecot
account = test_oauth2.account


@pytest.fixture
def provider(identity_provider: IdentityProvider, settings: Any) -> IdentityProvider:
    """The stand-in for Microsoft and Google, as the settings name them."""
    identity_provider.refresh_requests.clear()
    identity_provider.authorize_requests.clear()
    identity_provider.lifetime = 3600
    identity_provider.consent = "accept"
    identity_provider.signed_in = ""
    identity_provider.redirect_uri = f"{settings.CRM_BASE_URL.rstrip('/')}{CALLBACK}"
    for name in ("MICROSOFT", "GOOGLE"):
        setattr(
            settings, f"CONVERTER_OAUTH2_{name}_AUTHORIZE_URL", f"{identity_provider.url}/authorize"
        )
        setattr(settings, f"CONVERTER_OAUTH2_{name}_TOKEN_URL", identity_provider.token_url)
    return identity_provider


@pytest.fixture
def admin_client(client: Client, org: Org) -> Client:
    client.force_login(org.admin)
    return client


def make_mailbox(org: Org, *, username: str, port: int = 143) -> Mailbox:
    mailbox = Mailbox(
        name=f"support {username}",
        host="127.0.0.1",
        port=port,
        security=Mailbox.Security.NONE,
        username=username,
        address="support@crm.test",
        owner=org.admin,
    )
    mailbox.set_password("not the mailbox's password")
    mailbox.save()
    Folder.objects.create(mailbox=mailbox, name="INBOX", selected=True)
    Rule.objects.create(mailbox=mailbox, name="every message", actions=[{"type": "create_ticket"}])
    return mailbox


def connect(
    client: Client, mailbox: Mailbox, provider: IdentityProvider, which: str = "microsoft"
) -> str:
    """Press "Connect with …": where the page sends the browser (the provider's authorize URL)."""
    response = client.post(
        f"{BASE}{mailbox.pk}/oauth2/connect/",
        {
            "provider": which,
            "client_id": provider.client_id,
            "client_secret": provider.client_secret,
        },
    )
    assert response.status_code == 302
    location: str = response["Location"]
    return location


def at_provider(url: str) -> str:
    """The browser at the provider's consent page: where the provider sends it back."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.netloc, timeout=10)
    try:
        connection.request("GET", f"{parts.path}?{parts.query}")
        answer = connection.getresponse()
        answer.read()
        assert answer.status == 302, answer.status
        return answer.getheader("Location") or ""
    finally:
        connection.close()


def back_to_crm(client: Client, url: str) -> tuple[Any, str]:
    """The browser back at the CRM's callback; the redirect it gets and the page's messages."""
    parts = urlsplit(url)
    assert parts.path == CALLBACK
    response = client.get(f"{parts.path}?{parts.query}")
    assert response.status_code == 302
    page = client.get(response["Location"])
    return response, page.content.decode()


def unchanged(mailbox: Mailbox) -> bool:
    mailbox = Mailbox.objects.get(pk=mailbox.pk)
    return mailbox.auth == Mailbox.Auth.PLAIN and not mailbox.oauth2_refresh_token


# --- the whole flow ------------------------------------------------------------------------------


@pytest.mark.imap
@pytest.mark.parametrize(
    ("which", "label", "extra"),
    [
        ("microsoft", "Microsoft", {"response_mode": "query", "prompt": "select_account"}),
        ("google", "Google", {"access_type": "offline", "prompt": "consent"}),
    ],
)
def test_connecting_signs_the_mailbox_in_and_the_next_scan_uses_the_stored_token(
    admin_client: Client,
    org: Org,
    provider: IdentityProvider,
    account: Account,
    which: str,
    label: str,
    extra: dict[str, str],
) -> None:
    mailbox = make_mailbox(org, username=account.user, port=account.server.port)
    settings_page = admin_client.get(f"{BASE}{mailbox.pk}/")
    page = settings_page.content.decode()
    assert f"Connect with {label}" in page
    assert provider.redirect_uri in page  # what to register at the provider
    # The page's form may lead to the provider: browsers apply form-action to its redirects.
    assert f"form-action 'self' {provider.url};" in settings_page["Content-Security-Policy"]

    authorize = connect(admin_client, mailbox, provider, which)
    assert authorize.startswith(f"{provider.url}/authorize?")
    provider.signed_in = account.user
    back = at_provider(authorize)
    response, page = back_to_crm(admin_client, back)

    assert response["Location"] == f"{BASE}{mailbox.pk}/"
    assert f"is connected with {label}" in page
    [asked] = provider.authorize_requests
    assert asked["code_challenge_method"] == "S256"
    assert asked["login_hint"] == account.user
    assert extra.items() <= asked.items()
    assert parse_qs(urlsplit(back).query)["state"] == [asked["state"]]
    mailbox.refresh_from_db()
    assert mailbox.auth == Mailbox.Auth.XOAUTH2
    assert mailbox.oauth2_token_url == provider.token_url
    assert mailbox.oauth2_client_id == provider.client_id
    assert secrets.decrypt(mailbox.oauth2_client_secret) == provider.client_secret
    refresh = secrets.decrypt(mailbox.oauth2_refresh_token)
    access = secrets.decrypt(mailbox.oauth2_access_token)
    assert provider.refresh_token_is_live(refresh)
    assert access in provider.live_access_tokens(account.user)
    row = stored_row(mailbox)
    assert refresh not in row
    assert access not in row
    assert provider.client_secret not in row

    account.deliver(mail("customer_question_with_attachment.eml"))
    run = scanner.scan(mailbox)

    assert run.counts == {"created": 1}, run.error
    assert Record.objects.filter(module__name="Tickets").count() == 1
    assert provider.refresh_requests[-1]["grant_type"] == "authorization_code"  # no refresh


# --- what goes wrong, in words ---------------------------------------------------------------


def test_a_declined_consent_says_so_and_changes_nothing(
    admin_client: Client, org: Org, provider: IdentityProvider
) -> None:
    mailbox = make_mailbox(org, username="u@crm.test")
    provider.signed_in, provider.consent = "u@crm.test", "deny"

    response, page = back_to_crm(
        admin_client, at_provider(connect(admin_client, mailbox, provider))
    )

    assert response["Location"] == f"{BASE}{mailbox.pk}/"
    assert "Access was not granted at Microsoft: access_denied" in page
    assert "Nothing was changed." in page
    assert unchanged(mailbox)


def test_an_answer_with_a_state_this_session_did_not_start_changes_nothing(
    admin_client: Client, org: Org, provider: IdentityProvider
) -> None:
    mailbox = make_mailbox(org, username="u@crm.test")
    provider.signed_in = "u@crm.test"
    back = at_provider(connect(admin_client, mailbox, provider))
    query = parse_qs(urlsplit(back).query)
    forged = f"{CALLBACK}?code={query['code'][0]}&state=forged-{query['state'][0][:10]}"

    response = admin_client.get(forged)

    assert response["Location"] == BASE
    assert "does not belong to a connection started in this browser session" in (
        admin_client.get(BASE).content.decode()
    )
    assert unchanged(mailbox)


def test_another_administrators_session_cannot_use_the_answer(
    admin_client: Client, org: Org, provider: IdentityProvider
) -> None:
    mailbox = make_mailbox(org, username="u@crm.test")
    provider.signed_in = "u@crm.test"
    back = at_provider(connect(admin_client, mailbox, provider))
    other = Client()
    other.force_login(org.admin)  # the same administrator in another browser: another session

    _, page = back_to_crm(other, back)

    assert "does not belong to a connection started in this browser session" in page
    assert unchanged(mailbox)


def test_an_answer_is_used_once(admin_client: Client, org: Org, provider: IdentityProvider) -> None:
    mailbox = make_mailbox(org, username="u@crm.test")
    provider.signed_in = "u@crm.test"
    back = at_provider(connect(admin_client, mailbox, provider))
    _, first = back_to_crm(admin_client, back)
    assert "is connected with Microsoft" in first
    stored = Mailbox.objects.get(pk=mailbox.pk).oauth2_refresh_token

    _, again = back_to_crm(admin_client, back)

    assert "does not belong to a connection started in this browser session" in again
    assert Mailbox.objects.get(pk=mailbox.pk).oauth2_refresh_token == stored


def test_a_token_endpoint_refusal_is_told_and_changes_nothing(
    admin_client: Client, org: Org, provider: IdentityProvider
) -> None:
    mailbox = make_mailbox(org, username="u@crm.test")
    provider.signed_in = "u@crm.test"
    response = admin_client.post(
        f"{BASE}{mailbox.pk}/oauth2/connect/",
        {"provider": "microsoft", "client_id": provider.client_id, "client_secret": "wrong"},
    )

    _, page = back_to_crm(admin_client, at_provider(response["Location"]))

    assert "refused the client id or secret: invalid_client" in page
    assert unchanged(mailbox)


def test_an_unreachable_token_endpoint_is_told_and_changes_nothing(
    admin_client: Client, org: Org, provider: IdentityProvider, settings: Any
) -> None:
    mailbox = make_mailbox(org, username="u@crm.test")
    provider.signed_in = "u@crm.test"
    back = at_provider(connect(admin_client, mailbox, provider))
    settings.CONVERTER_OAUTH2_MICROSOFT_TOKEN_URL = "http://127.0.0.1:9/token"  # nothing listens

    _, page = back_to_crm(admin_client, back)

    assert "could not be reached" in page
    assert unchanged(mailbox)


def test_connecting_needs_a_client_id_and_an_administrator(
    admin_client: Client, client: Client, org: Org, provider: IdentityProvider
) -> None:
    mailbox = make_mailbox(org, username="u@crm.test")
    response = admin_client.post(
        f"{BASE}{mailbox.pk}/oauth2/connect/", {"provider": "google", "client_id": " "}, follow=True
    )
    assert "Enter the app registration&#x27;s client id" in response.content.decode()
    assert provider.authorize_requests == []

    client.force_login(org.alice)
    refused = client.post(
        f"{BASE}{mailbox.pk}/oauth2/connect/",
        {"provider": "microsoft", "client_id": provider.client_id},
    )
    assert refused.status_code == 403
    assert unchanged(mailbox)


def test_not_logged_in_the_callback_asks_for_a_login(client: Client) -> None:
    response = client.get(f"{CALLBACK}?code=x&state=y")
    assert response.status_code == 302
    assert "/login" in response["Location"]
