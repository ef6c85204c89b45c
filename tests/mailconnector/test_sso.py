"""Single sign-on in the Office dialog, end to end against the tests' own OpenID provider.

The CRM is driven with Django's test client and the provider over real HTTP; redirects are
followed by hand, as the dialog's browser would: authorize -> provider -> callback -> page.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, quote_plus, urlsplit

import pytest
import requests
from django.core.exceptions import ImproperlyConfigured
from django.test import Client
from django.utils import timezone

from crm import settings as crm_settings
from crm.models import User
from tests.conftest import Org
from tests.licensing.vendor import Vendor
from tests.mailconnector.oidc_provider import OidcProvider, s256

CRM = "https://crm.example.com"
CALLBACK = f"{CRM}/api/addin/v1/auth/sso/callback"
AUTHORIZE = "/api/addin/v1/auth/sso/authorize"
TOKEN = "/api/addin/v1/auth/sso/token"


@pytest.fixture
def idp(settings: Any) -> Iterator[OidcProvider]:
    settings.CRM_BASE_URL = CRM
    provider = OidcProvider(redirect_uris=[CALLBACK])
    settings.ADDIN_SSO_PROVIDERS = [provider.settings_entry()]
    yield provider
    provider.stop()


@dataclass
class Dialog:
    """One run of the Office dialog: the add-in's PKCE pair and state, and what came back."""

    verifier: str
    state: str
    responses: list[Any]
    page: Any = None

    @property
    def result(self) -> dict[str, Any]:
        found = re.search(
            r'<script id="sso-result" type="application/json">(.*?)</script>',
            self.page.content.decode(),
            re.S,
        )
        assert found, "the page carries no result"
        return dict(json.loads(found.group(1)))

    @property
    def message(self) -> dict[str, Any]:
        """What the page hands to Office.context.ui.messageParent (as a JSON string)."""
        return dict(self.result["message"])


def _addin_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    return verifier, s256(verifier)


def _authorize(client: Client, **params: str) -> Any:
    return client.get(AUTHORIZE, params)


def _local(url: str) -> str:
    """The CRM part of an absolute URL, for the test client."""
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}" == CRM
    return f"{parts.path}?{parts.query}"


def run_dialog(
    client: Client,
    *,
    provider: str = "testidp",
    tamper: Any = None,
    callback_client: Any = None,
    **extra: str,
) -> Dialog:
    """authorize -> the provider's /authorize -> the CRM's callback, as the dialog would."""
    verifier, challenge = _addin_pair()
    state = secrets.token_urlsafe(16)
    dialog = Dialog(verifier=verifier, state=state, responses=[])
    start = _authorize(
        client,
        provider=provider,
        code_challenge=challenge,
        code_challenge_method="S256",
        state=state,
        **extra,
    )
    dialog.responses.append(start)
    assert start.status_code == 302, start.content
    at_idp = requests.get(start["Location"], allow_redirects=False, timeout=10)
    assert at_idp.status_code == 302, at_idp.text
    back = at_idp.headers["Location"]
    if tamper:
        back = tamper(back)
    dialog.page = (callback_client or client).get(_local(back))
    dialog.responses.append(dialog.page)
    return dialog


def redeem(client: Client, code: str, verifier: str, **headers: str) -> Any:
    return client.post(
        TOKEN, {"code": code, "code_verifier": verifier}, content_type="application/json", **headers
    )


def _coop(*responses: Any) -> None:
    for response in responses:
        assert response["Cross-Origin-Opener-Policy"] == "unsafe-none", response
        assert response["Cache-Control"] == "no-store"


# --- The whole flow ------------------------------------------------------------------------


def test_signing_in_through_the_provider_ends_with_tokens_that_work(
    org: Org, licensed: Vendor, idp: OidcProvider
) -> None:
    client = Client()
    dialog = run_dialog(client)

    assert dialog.page.status_code == 200
    assert "You are signed in to the CRM as" in dialog.page.content.decode()
    message = dialog.message
    assert message["type"] == "crm-sso"
    assert message["status"] == "ok"
    assert message["state"] == dialog.state
    assert message["provider"] == "testidp"

    tokens = redeem(client, message["code"], dialog.verifier)
    assert tokens.status_code == 200, tokens.content
    assert tokens.json()["user"]["username"] == "alice"
    assert tokens.json()["token_type"] == "Bearer"
    _coop(*dialog.responses, tokens)

    api = Client()
    modules = api.get(
        "/api/addin/v1/modules", HTTP_AUTHORIZATION=f"Bearer {tokens.json()['access_token']}"
    )
    assert modules.status_code == 200, modules.content
    alice = User.objects.get(pk=org.alice.pk)
    assert alice.last_login is not None
    assert alice.addin_sessions.get().client.endswith("SSO testidp")


def test_the_provider_leg_uses_its_own_state_nonce_pkce_and_client_secret(
    org: Org, idp: OidcProvider
) -> None:
    client = Client()
    _, challenge = _addin_pair()
    start = _authorize(
        client,
        provider="testidp",
        code_challenge=challenge,
        code_challenge_method="S256",
        state="addin-state",
    )
    sent = {k: v[0] for k, v in parse_qs(urlsplit(start["Location"]).query).items()}
    assert start["Location"].startswith(f"{idp.issuer}/authorize?")
    assert sent["response_type"] == "code"
    assert sent["redirect_uri"] == CALLBACK
    assert sent["code_challenge_method"] == "S256"
    # The add-in's values never reach the provider: the CRM's leg has its own.
    assert sent["code_challenge"] != challenge
    assert sent["state"] != "addin-state"
    assert len(sent["nonce"]) >= 32

    back = requests.get(start["Location"], allow_redirects=False, timeout=10).headers["Location"]
    page = client.get(_local(back))
    assert page.status_code == 200
    (exchange,) = idp.token_requests
    assert s256(exchange["code_verifier"]) == sent["code_challenge"]
    assert exchange["authorization"].startswith("Basic ")  # the secret, never in the URL
    assert "client_secret" not in exchange
    assert idp.client_secret not in start["Location"]


def test_the_last_page_loads_office_js_under_its_own_policy_and_shows_no_code(
    org: Org, idp: OidcProvider
) -> None:
    dialog = run_dialog(Client())
    html = dialog.page.content.decode()
    policy = dialog.page["Content-Security-Policy"]
    assert "script-src 'self' https://appsforoffice.microsoft.com" in policy
    assert "unsafe-inline" not in policy
    assert "frame-ancestors 'none'" in policy
    assert '<script src="https://appsforoffice.microsoft.com/lib/1/hosted/office.js">' in html
    assert "mailconnector/sso_done.js" in html
    assert dialog.page["Referrer-Policy"] == "no-referrer"
    visible = re.sub(r"<script.*?</script>", "", html, flags=re.S)
    assert dialog.message["code"] not in visible


# --- The provider leg refused --------------------------------------------------------------


def _replace_state(url: str) -> str:
    return re.sub(r"state=[^&]+", "state=" + secrets.token_urlsafe(32), url)


def test_a_callback_with_another_state_is_refused(org: Org, idp: OidcProvider) -> None:
    dialog = run_dialog(Client(), tamper=_replace_state)
    assert dialog.page.status_code == 400
    assert dialog.message["status"] == "error"
    assert dialog.message["error"] == "sso_invalid"
    assert "code" not in dialog.message
    assert "start again" in dialog.page.content.decode()
    _coop(*dialog.responses)


def test_a_callback_in_another_browser_than_the_one_that_started_is_refused(
    org: Org, idp: OidcProvider
) -> None:
    dialog = run_dialog(Client(), callback_client=Client())
    assert dialog.page.status_code == 400
    assert dialog.message["error"] == "sso_invalid"
    # The attempt is known, so the add-in gets its state back with the error.
    assert dialog.message["state"] == dialog.state
    assert "another window" in dialog.page.content.decode()


def test_a_replayed_callback_is_refused(org: Org, idp: OidcProvider) -> None:
    client = Client()
    seen: list[str] = []
    dialog = run_dialog(client, tamper=lambda url: seen.append(url) or url)
    assert dialog.page.status_code == 200
    again = client.get(_local(seen[0]))
    assert again.status_code == 400
    assert "already finished" in again.content.decode()


@pytest.mark.parametrize(
    ("claims", "other_key", "reason"),
    [
        ({"nonce": "not-the-nonce-of-this-attempt"}, False, "nonce mismatch"),
        ({"nonce": None}, False, "nonce mismatch"),
        ({}, True, "bad signature"),
        ({"exp": 1_000_000_000, "iat": 999_999_000}, False, "expired"),
        ({"iss": "https://evil.example"}, False, "issuer"),
        ({"aud": "another-client"}, False, "audience"),
        ({"aud": ["crm-addin", "another-client"]}, False, "authorized party"),
        ({"iat": 4_000_000_000}, False, "issued in the future"),
    ],
    ids=[
        "nonce-mismatch",
        "no-nonce",
        "other-key",
        "expired",
        "other-issuer",
        "other-audience",
        "several-audiences-without-azp",
        "issued-in-future",
    ],
)
def test_an_id_token_that_does_not_verify_is_refused(
    org: Org,
    idp: OidcProvider,
    caplog: pytest.LogCaptureFixture,
    claims: dict[str, Any],
    other_key: bool,
    reason: str,
) -> None:
    idp.id_token_claims = claims
    idp.sign_with_other_key = other_key
    with caplog.at_level(logging.WARNING, logger="mailconnector.sso"):
        dialog = run_dialog(Client())
    assert dialog.page.status_code == 400
    assert dialog.message["error"] == "sso_invalid"
    assert dialog.message["state"] == dialog.state
    assert "could not be verified" in dialog.page.content.decode()
    assert any(reason in r.getMessage() for r in caplog.records), caplog.text
    assert not User.objects.get(pk=org.alice.pk).addin_sessions.exists()


def test_the_user_cancelling_at_the_provider_is_reported_to_the_addin(
    org: Org, idp: OidcProvider
) -> None:
    idp.deny = "access_denied"
    dialog = run_dialog(Client())
    assert dialog.page.status_code == 403
    assert dialog.message == {
        "type": "crm-sso",
        "status": "error",
        "error": "sso_denied",
        "detail": "Test IdP did not sign you in: The user said no",
        "state": dialog.state,
    }
    _coop(*dialog.responses)


# --- Users ---------------------------------------------------------------------------------


def test_an_unknown_user_is_refused_with_a_clear_message_and_no_account_is_made(
    org: Org, idp: OidcProvider
) -> None:
    idp.user["email"] = "mallory@elsewhere.test"
    users = User.objects.count()
    dialog = run_dialog(Client())
    assert dialog.page.status_code == 403
    assert dialog.message["error"] == "sso_unknown_user"
    page = dialog.page.content.decode()
    assert "No CRM account" in page
    assert "No CRM account matches mallory@elsewhere.test" in page
    assert "does not create accounts" in page
    assert User.objects.count() == users


def test_an_inactive_user_is_refused(org: Org, idp: OidcProvider) -> None:
    org.alice.is_active = False
    org.alice.save()
    dialog = run_dialog(Client())
    assert dialog.page.status_code == 403
    assert dialog.message["error"] == "sso_inactive_user"
    assert "deactivated" in dialog.page.content.decode()


def test_an_address_the_provider_has_not_verified_is_refused(org: Org, idp: OidcProvider) -> None:
    idp.user["email_verified"] = False
    dialog = run_dialog(Client())
    assert dialog.page.status_code == 403
    assert "has not verified the address alice@crm.test" in dialog.page.content.decode()


def test_the_email_matches_whatever_its_case(org: Org, idp: OidcProvider) -> None:
    idp.user["email"] = "Alice@CRM.test"
    client = Client()
    dialog = run_dialog(client)
    assert dialog.message["status"] == "ok"
    tokens = redeem(client, dialog.message["code"], dialog.verifier)
    assert tokens.json()["user"]["username"] == "alice"


def test_a_task_pane_on_an_allowed_origin_is_named_as_the_message_target(
    org: Org, idp: OidcProvider, settings: Any
) -> None:
    settings.ADDIN_ALLOWED_ORIGINS = ["https://addin.example.com"]
    dialog = run_dialog(Client(), origin="https://addin.example.com")
    assert dialog.result["target_origin"] == "https://addin.example.com"
    own = run_dialog(Client(), origin=CRM)
    assert own.result["target_origin"] is None


def test_users_can_be_matched_on_a_username_claim(
    org: Org, idp: OidcProvider, settings: Any
) -> None:
    settings.ADDIN_SSO_PROVIDERS = [
        idp.settings_entry(claim="preferred_username", match="username")
    ]
    idp.user |= {"preferred_username": "bob", "email": "unrelated@elsewhere.test"}
    client = Client()
    dialog = run_dialog(client)
    assert dialog.page.status_code == 200
    tokens = redeem(client, dialog.message["code"], dialog.verifier)
    assert tokens.json()["user"]["username"] == "bob"


# --- The add-in's leg: authorize and token -------------------------------------------------


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"provider": "nope"}, "not configured"),
        ({"code_challenge_method": "plain"}, "S256"),
        ({"code_challenge": "too-short"}, "S256"),
        ({"state": ""}, "valid state"),
        ({"origin": "https://evil.example"}, "origin is not allowed"),
    ],
    ids=["unknown-provider", "plain-method", "bad-challenge", "no-state", "foreign-origin"],
)
def test_authorize_refuses_a_bad_request_with_a_page(
    db: None, idp: OidcProvider, params: dict[str, str], expected: str
) -> None:
    _, challenge = _addin_pair()
    query = {
        "provider": "testidp",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "state": "s",
        **params,
    }
    response = Client().get(AUTHORIZE, query, HTTP_ACCEPT="application/json")
    assert response.status_code == 400
    assert response["Content-Type"].startswith("text/html")
    assert expected in response.content.decode()
    assert "crm_sso" not in response.cookies
    _coop(response)


def test_an_unreachable_provider_gives_a_clear_page(db: None, settings: Any) -> None:
    dead = OidcProvider()
    dead.stop()
    settings.ADDIN_SSO_PROVIDERS = [dead.settings_entry()]
    _, challenge = _addin_pair()
    response = Client().get(
        AUTHORIZE,
        {
            "provider": "testidp",
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            "state": "s",
        },
    )
    assert response.status_code == 502
    assert "Test IdP could not be reached" in response.content.decode()
    _coop(response)


def test_a_wrong_code_verifier_is_refused_and_spends_the_code(org: Org, idp: OidcProvider) -> None:
    client = Client()
    dialog = run_dialog(client)
    code = dialog.message["code"]
    wrong = redeem(client, code, secrets.token_urlsafe(48))
    assert wrong.status_code == 400
    assert wrong["Content-Type"] == "application/problem+json"
    assert wrong.json()["code"] == "sso_invalid"
    right = redeem(client, code, dialog.verifier)
    assert right.status_code == 400
    assert right.json()["code"] == "sso_invalid"
    _coop(wrong, right)


def test_the_crm_code_works_once(org: Org, idp: OidcProvider) -> None:
    client = Client()
    dialog = run_dialog(client)
    first = redeem(client, dialog.message["code"], dialog.verifier)
    second = redeem(client, dialog.message["code"], dialog.verifier)
    assert first.status_code == 200
    assert second.status_code == 400
    assert second.json()["code"] == "sso_invalid"
    assert User.objects.get(pk=org.alice.pk).addin_sessions.count() == 1


@pytest.mark.parametrize(("seconds", "status"), [(110, 200), (121, 400)])
def test_the_crm_code_lives_two_minutes(
    org: Org, idp: OidcProvider, monkeypatch: pytest.MonkeyPatch, seconds: int, status: int
) -> None:
    client = Client()
    dialog = run_dialog(client)
    later = timezone.now() + timedelta(seconds=seconds)
    monkeypatch.setattr(timezone, "now", lambda: later)
    response = redeem(client, dialog.message["code"], dialog.verifier)
    assert response.status_code == status, response.content


def test_a_code_from_a_deactivated_user_no_longer_works(org: Org, idp: OidcProvider) -> None:
    client = Client()
    dialog = run_dialog(client)
    org.alice.is_active = False
    org.alice.save()
    response = redeem(client, dialog.message["code"], dialog.verifier)
    assert response.status_code == 400
    assert response.json()["code"] == "sso_invalid"


def test_the_token_endpoint_names_a_bad_field(db: None, idp: OidcProvider) -> None:
    response = Client().post(
        TOKEN, {"code": "x", "code_verifier": "short"}, content_type="application/json"
    )
    assert response.status_code == 400
    assert response.json()["code"] == "validation_error"
    assert set(response.json()["fields"]) == {"code_verifier"}
    _coop(response)


def test_an_outdated_addin_is_told_to_update_at_the_token_endpoint(
    db: None, idp: OidcProvider, settings: Any
) -> None:
    settings.ADDIN_MIN_VERSION = "2.0.0"
    response = redeem(Client(), "x" * 43, "v" * 43, HTTP_X_ADDIN_VERSION="1.0.0")
    assert response.status_code == 426
    assert response.json()["code"] == "addin_outdated"
    _coop(response)


def test_the_code_exchange_is_throttled_by_client_address(
    org: Org, idp: OidcProvider, settings: Any
) -> None:
    client = Client()
    dialog = run_dialog(client)
    answers = [
        redeem(client, secrets.token_urlsafe(32), dialog.verifier)
        for _ in range(settings.AXES_FAILURE_LIMIT)
    ]
    assert [a.status_code for a in answers[:-1]] == [400] * (settings.AXES_FAILURE_LIMIT - 1)
    locked = answers[-1]
    assert locked.status_code == 429
    assert locked.json()["code"] == "rate_limited"
    assert int(locked["Retry-After"]) > 0
    _coop(locked)
    # Even the right code waits: the lock is on the client, not on one code.
    still = redeem(client, dialog.message["code"], dialog.verifier)
    assert still.status_code == 429
    # Another address is not affected.
    other = run_dialog(Client(REMOTE_ADDR="10.0.0.7"))
    ok = redeem(Client(REMOTE_ADDR="10.0.0.7"), other.message["code"], other.verifier)
    assert ok.status_code == 200


def test_a_success_clears_the_failures_of_the_address(
    org: Org, idp: OidcProvider, settings: Any
) -> None:
    client = Client()
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert redeem(client, secrets.token_urlsafe(32), "v" * 43).status_code == 400
    dialog = run_dialog(client)
    assert redeem(client, dialog.message["code"], dialog.verifier).status_code == 200
    assert redeem(client, secrets.token_urlsafe(32), "v" * 43).status_code == 400


# --- Around the flow -----------------------------------------------------------------------


def test_meta_offers_the_configured_providers(db: None, idp: OidcProvider) -> None:
    meta = Client().get("/api/addin/v1/meta").json()
    assert meta["login_methods"]["sso"] == [{"id": "testidp", "name": "Test IdP"}]


def test_the_schema_documents_the_single_sign_on_endpoints(db: None) -> None:
    schema = Client().get("/api/addin/v1/schema/", HTTP_ACCEPT="application/json").json()
    paths = schema["paths"]
    assert set(paths["/api/addin/v1/auth/sso/authorize"]["get"]["responses"]) >= {"302", "400"}
    token = paths["/api/addin/v1/auth/sso/token"]["post"]
    assert set(token["responses"]) >= {"200", "400", "426", "429"}
    assert "SsoTokenInput" in json.dumps(token["requestBody"])


def test_the_test_provider_itself_refuses_a_wrong_verifier(idp: OidcProvider) -> None:
    verifier = secrets.token_urlsafe(48)
    at_idp = requests.get(
        f"{idp.issuer}/authorize",
        params={
            "response_type": "code",
            "client_id": idp.client_id,
            "redirect_uri": CALLBACK,
            "scope": "openid",
            "state": "s",
            "nonce": "n",
            "code_challenge": s256(verifier),
            "code_challenge_method": "S256",
        },
        allow_redirects=False,
        timeout=10,
    )
    code = parse_qs(urlsplit(at_idp.headers["Location"]).query)["code"][0]
    answer = requests.post(
        f"{idp.issuer}/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": CALLBACK,
            "code_verifier": secrets.token_urlsafe(48),
        },
        auth=(idp.client_id, quote_plus(idp.client_secret, safe="")),
        timeout=10,
    )
    assert answer.status_code == 400
    assert answer.json()["error"] == "invalid_grant"


# --- Settings ------------------------------------------------------------------------------


def test_providers_come_from_the_environment_with_secrets_apart(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(
        "ADDIN_SSO_PROVIDERS",
        json.dumps(
            [
                {
                    "id": "corp-idp",
                    "name": "Corp",
                    "issuer": "https://id.corp.example",
                    "client_id": "crm",
                }
            ]
        ),
    )
    monkeypatch.setenv("ADDIN_SSO_CORP_IDP_CLIENT_SECRET", "from-env")
    (provider,) = crm_settings._sso_providers()
    assert provider["client_secret"] == "from-env"
    assert provider["discovery_url"] == "https://id.corp.example/.well-known/openid-configuration"
    assert provider["claim"] == "email"
    assert provider["match"] == "email"


A_PROVIDER = {"id": "a", "name": "A", "issuer": "https://id.example", "client_id": "c"}


@pytest.mark.parametrize(
    ("entry", "secret", "variable"),
    [
        ("not json", "x", "ADDIN_SSO_PROVIDERS"),
        (json.dumps([A_PROVIDER | {"issuer": "http://id.example"}]), "x", "ADDIN_SSO_PROVIDERS"),
        (json.dumps([A_PROVIDER | {"client_secret": "no"}]), "x", "ADDIN_SSO_PROVIDERS"),
        (json.dumps([A_PROVIDER | {"scopes": "email"}]), "x", "ADDIN_SSO_PROVIDERS"),
        (json.dumps([A_PROVIDER | {"signing_algs": ["HS256"]}]), "x", "ADDIN_SSO_PROVIDERS"),
        (json.dumps([A_PROVIDER, A_PROVIDER]), "x", "ADDIN_SSO_PROVIDERS"),
        (json.dumps([A_PROVIDER]), "", "ADDIN_SSO_A_CLIENT_SECRET"),
    ],
    ids=[
        "not-json",
        "plain-http-issuer",
        "secret-in-json",
        "no-openid-scope",
        "symmetric-algorithm",
        "same-id-twice",
        "no-secret",
    ],
)
def test_a_malformed_provider_setting_fails_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, entry: str, secret: str, variable: str
) -> None:
    monkeypatch.setenv("ADDIN_SSO_PROVIDERS", entry)
    monkeypatch.setenv("ADDIN_SSO_A_CLIENT_SECRET", secret)
    with pytest.raises(ImproperlyConfigured, match=variable):
        crm_settings._sso_providers()
