"""Password login of the add-in (`POST /api/addin/v1/auth/login`), lockout, tokens, logout.

Failed logins are counted by django-axes per username + address, on the API and on the web
login alike. The clock is moved by patching `django.utils.timezone.now` (and axes' own
import of it).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings
from django.db import connection
from django.test import Client
from rest_framework.test import APIClient

from mailconnector.models import AddinSession, AddinToken
from tests.conftest import Clock, Org
from tests.factories import PASSWORD, UserFactory

pytestmark = pytest.mark.postgres

API = "/api/addin/v1/auth/"
CONNECTOR_CALL = "/api/addin/v1/auth/sessions"  # any call that needs a bearer token


@pytest.fixture
def api() -> APIClient:
    return APIClient()


def login(api: APIClient, username: str, password: str = PASSWORD, **extra: Any) -> Any:
    return api.post(
        API + "login", {"username": username, "password": password}, format="json", **extra
    )


def bearer(token: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}


# --- It works ------------------------------------------------------------------------------


def test_login_with_the_right_password_returns_tokens_and_the_user(api: APIClient, org: Org):
    response = login(
        api,
        "alice",
        HTTP_USER_AGENT="Mozilla/5.0 (Windows NT 10.0) Outlook/16.0",
        HTTP_X_ADDIN_VERSION="1.4.2",
        REMOTE_ADDR="192.0.2.10",
    )

    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 15 * 60
    assert body["user"] == {
        "id": org.alice.pk,
        "username": "alice",
        "name": org.alice.get_full_name(),
        "email": "alice@crm.test",
    }
    assert body["access_token"] != body["refresh_token"]
    assert response["Cache-Control"] == "no-store"
    session = AddinSession.objects.get(pk=body["session_id"])
    assert session.user == org.alice
    assert session.ip == "192.0.2.10"
    assert session.client == "Outlook add-in 1.4.2 · Mozilla/5.0 (Windows NT 10.0) Outlook/16.0"
    # The access token opens the API as alice.
    listed = api.get(CONNECTOR_CALL, **bearer(body["access_token"]))
    assert listed.status_code == 200
    assert [s["id"] for s in listed.json()] == [session.pk]
    org.alice.refresh_from_db()
    assert org.alice.last_login is not None


def test_an_unknown_user_and_a_wrong_password_get_the_same_answer(api: APIClient, org: Org):
    inactive = UserFactory(username="gone", is_active=False)

    wrong_password = login(api, "alice", "not her password")
    unknown_user = login(api, "nobody-by-that-name", "not her password")
    inactive_user = login(api, inactive.username)  # the right password of a disabled user

    for response in (wrong_password, unknown_user, inactive_user):
        assert response.status_code == 401
        assert response["Content-Type"] == "application/problem+json"
        assert response["WWW-Authenticate"] == 'Bearer realm="crm"'
    assert wrong_password.json() == unknown_user.json() == inactive_user.json()
    assert wrong_password.json()["code"] == "invalid_credentials"
    assert not AddinSession.objects.exists()


def test_missing_fields_are_a_validation_error_naming_them(api: APIClient, org: Org):
    response = api.post(API + "login", {"username": "alice"}, format="json")

    assert response.status_code == 400
    assert response.json()["code"] == "validation_error"
    assert set(response.json()["fields"]) == {"password"}


def test_an_outdated_addin_cannot_log_in(api: APIClient, org: Org, settings: Any):
    settings.ADDIN_MIN_VERSION = "2.0.0"

    response = login(api, "alice", HTTP_X_ADDIN_VERSION="1.9.9")

    assert response.status_code == 426
    assert response.json()["code"] == "addin_outdated"


# --- Lockout -------------------------------------------------------------------------------


def test_repeated_failures_lock_the_username_at_this_address_with_retry_after(
    api: APIClient, org: Org, clock: Clock
):
    limit = settings.AXES_FAILURE_LIMIT
    answers = [login(api, "alice", f"guess {i}").status_code for i in range(limit - 1)]
    assert answers == [401] * (limit - 1)

    locking = login(api, "alice", "one guess too many")
    assert locking.status_code == 429
    # Locked: even the right password is refused, with the time to wait.
    locked = login(api, "alice")
    assert locked.status_code == 429
    assert locked["Content-Type"] == "application/problem+json"
    assert locked.json()["code"] == "rate_limited"
    cool_off = round(settings.AXES_COOLOFF_TIME * 3600)
    assert 0 < int(locked["Retry-After"]) <= cool_off
    assert locked.json()["retry_after"] == int(locked["Retry-After"])
    # The same user from another address, and another user from this one, are not locked.
    assert login(api, "alice", REMOTE_ADDR="198.51.100.7").status_code == 200
    assert login(api, "bob").status_code == 200

    clock.advance(seconds=cool_off + 1)
    assert login(api, "alice").status_code == 200


def test_unknown_usernames_are_locked_out_like_real_ones(api: APIClient, org: Org):
    for i in range(settings.AXES_FAILURE_LIMIT):
        login(api, "nobody", f"guess {i}")

    assert login(api, "nobody", "another").status_code == 429


def test_failed_web_logins_count_towards_the_add_in_lockout(api: APIClient, org: Org):
    web = Client()
    for i in range(settings.AXES_FAILURE_LIMIT - 1):
        web.post("/login/", {"username": "alice", "password": f"guess {i}"})

    assert login(api, "alice", "one more guess").status_code == 429
    assert login(api, "alice").status_code == 429


def test_a_successful_login_resets_the_failure_count(api: APIClient, org: Org):
    for i in range(settings.AXES_FAILURE_LIMIT - 1):
        login(api, "alice", f"guess {i}")
    assert login(api, "alice").status_code == 200

    answers = [login(api, "alice", f"again {i}").status_code for i in range(2)]
    assert answers == [401, 401]


# --- Access tokens -------------------------------------------------------------------------


def test_no_token_unknown_token_and_malformed_header_are_refused(api: APIClient, org: Org):
    anonymous = api.get(CONNECTOR_CALL)
    unknown = api.get(CONNECTOR_CALL, **bearer("x" * 43))
    malformed = api.get(CONNECTOR_CALL, HTTP_AUTHORIZATION="Bearer two parts")

    assert anonymous.status_code == 401
    assert anonymous.json()["code"] == "not_authenticated"
    for response in (unknown, malformed):
        assert response.status_code == 401
        assert response.json()["code"] == "token_invalid"
        assert 'error="invalid_token"' in response["WWW-Authenticate"]


def test_a_refresh_token_is_not_an_access_token(api: APIClient, org: Org):
    tokens = login(api, "alice").json()

    response = api.get(CONNECTOR_CALL, **bearer(tokens["refresh_token"]))

    assert response.status_code == 401
    assert response.json()["code"] == "token_invalid"


def test_an_access_token_expires_after_its_lifetime(api: APIClient, org: Org, clock: Clock):
    tokens = login(api, "alice").json()

    clock.advance(seconds=tokens["expires_in"] - 1)
    assert api.get(CONNECTOR_CALL, **bearer(tokens["access_token"])).status_code == 200
    clock.advance(seconds=1)
    expired = api.get(CONNECTOR_CALL, **bearer(tokens["access_token"]))

    assert expired.status_code == 401
    assert expired.json()["code"] == "token_expired"


def test_use_is_recorded_at_most_once_a_minute(api: APIClient, org: Org, clock: Clock):
    tokens = login(api, "alice").json()
    session = AddinSession.objects.get(pk=tokens["session_id"])
    logged_in_at = session.last_used_at

    clock.advance(seconds=30)
    api.get(CONNECTOR_CALL, **bearer(tokens["access_token"]))
    session.refresh_from_db()
    assert session.last_used_at == logged_in_at

    clock.advance(seconds=31)
    api.get(CONNECTOR_CALL, **bearer(tokens["access_token"]))
    session.refresh_from_db()
    assert session.last_used_at > logged_in_at + timedelta(seconds=60)


def test_tokens_are_stored_only_hashed(api: APIClient, org: Org):
    first = login(api, "alice").json()
    second = api.post(
        API + "refresh", {"refresh_token": first["refresh_token"]}, format="json"
    ).json()
    secrets = {
        first["access_token"],
        first["refresh_token"],
        second["access_token"],
        second["refresh_token"],
    }

    # Every row of every table, as a dump would hold them.
    found = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f'SELECT * FROM "{table}"')  # noqa: S608 - our own table names
            text = repr(cursor.fetchall())
            found += [(table, s) for s in secrets if s in text]
            assert PASSWORD not in text, table

    assert found == []
    assert AddinToken.objects.count() == 4


# --- Logout --------------------------------------------------------------------------------


def test_logout_ends_this_session_and_only_this_one(api: APIClient, org: Org):
    here = login(api, "alice").json()
    elsewhere = login(api, "alice").json()

    response = api.post(API + "logout", **bearer(here["access_token"]))

    assert response.status_code == 204
    after = api.get(CONNECTOR_CALL, **bearer(here["access_token"]))
    assert after.status_code == 401
    assert after.json()["code"] == "session_expired"
    refreshed = api.post(API + "refresh", {"refresh_token": here["refresh_token"]}, format="json")
    assert refreshed.json()["code"] == "session_expired"
    assert api.get(CONNECTOR_CALL, **bearer(elsewhere["access_token"])).status_code == 200
    session = AddinSession.objects.get(pk=here["session_id"])
    assert session.revoked_reason == AddinSession.EndReason.LOGOUT


def test_logout_with_the_refresh_token_when_the_access_token_expired(
    api: APIClient, org: Org, clock: Clock
):
    tokens = login(api, "alice").json()
    clock.advance(hours=1)

    response = api.post(API + "logout", {"refresh_token": tokens["refresh_token"]}, format="json")

    assert response.status_code == 204
    assert AddinSession.objects.get(pk=tokens["session_id"]).revoked_at is not None


def test_logout_without_any_token_is_not_authenticated(api: APIClient, org: Org):
    response = api.post(API + "logout", {}, format="json")

    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"


# --- Schema --------------------------------------------------------------------------------


def test_the_schema_describes_the_login_endpoints_and_their_errors(api: APIClient, org: Org):
    schema = api.get("/api/addin/v1/schema/", HTTP_ACCEPT="application/json").json()

    login_op = schema["paths"]["/api/addin/v1/auth/login"]["post"]
    assert {"200", "400", "401", "426", "429"} <= set(login_op["responses"])
    assert "security" not in login_op  # no token needed to log in
    assert "security" not in schema
    mfa_op = schema["paths"]["/api/addin/v1/auth/mfa"]["post"]
    assert "mfa_invalid" in mfa_op["responses"]["401"]["description"]
    sessions_op = schema["paths"]["/api/addin/v1/auth/sessions"]["get"]
    assert sessions_op["security"] == [{"addinBearer": []}]
    assert schema["components"]["securitySchemes"]["addinBearer"]["scheme"] == "bearer"
