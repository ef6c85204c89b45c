"""Add-in sessions: refresh rotation and reuse, idle and absolute limits, revocation, and the
user's list of sessions (`/api/addin/v1/auth/refresh`, `sessions`, `sessions/{id}`)."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient

from crm.models import User
from mailconnector import auth
from mailconnector.models import AddinSession, ConnectorPolicy
from tests.conftest import Clock, Org
from tests.factories import PASSWORD

pytestmark = pytest.mark.postgres

API = "/api/addin/v1/auth/"
SESSIONS = API + "sessions"


@pytest.fixture
def api() -> APIClient:
    return APIClient()


def login(api: APIClient, username: str, **extra: Any) -> dict[str, Any]:
    response = api.post(
        API + "login", {"username": username, "password": PASSWORD}, format="json", **extra
    )
    assert response.status_code == 200, response.content
    return dict(response.json())


def refresh(api: APIClient, token: str) -> Any:
    return api.post(API + "refresh", {"refresh_token": token}, format="json")


def call(api: APIClient, tokens: dict[str, Any]) -> Any:
    return api.get(SESSIONS, HTTP_AUTHORIZATION=f"Bearer {tokens['access_token']}")


def code(response: Any) -> str:
    return str(response.json()["code"])


# --- Refresh -------------------------------------------------------------------------------


def test_refresh_rotates_both_tokens_and_keeps_the_session(api: APIClient, org: Org, clock: Clock):
    first = login(api, "alice")
    clock.advance(minutes=20)
    assert code(call(api, first)) == "token_expired"

    response = refresh(api, first["refresh_token"])

    assert response.status_code == 200
    assert response["Cache-Control"] == "no-store"
    second = response.json()
    assert second["session_id"] == first["session_id"]
    assert second["access_token"] != first["access_token"]
    assert second["refresh_token"] != first["refresh_token"]
    assert second["user"]["username"] == "alice"
    assert call(api, second).status_code == 200


def test_a_used_refresh_token_coming_back_ends_the_whole_session(api: APIClient, org: Org):
    stolen = login(api, "alice")
    rotated = refresh(api, stolen["refresh_token"]).json()

    replay = refresh(api, stolen["refresh_token"])

    assert replay.status_code == 401
    assert code(replay) == "session_expired"
    # Whoever holds the newer tokens loses them too.
    assert code(call(api, rotated)) == "session_expired"
    assert code(refresh(api, rotated["refresh_token"])) == "session_expired"
    session = AddinSession.objects.get(pk=stolen["session_id"])
    assert session.revoked_reason == AddinSession.EndReason.REFRESH_REUSE


def test_a_reused_refresh_token_leaves_other_sessions_alone(api: APIClient, org: Org):
    laptop = login(api, "alice")
    phone = login(api, "alice")
    refresh(api, laptop["refresh_token"])

    refresh(api, laptop["refresh_token"])

    assert call(api, phone).status_code == 200


def test_unknown_refresh_tokens_and_access_tokens_do_not_refresh(api: APIClient, org: Org):
    tokens = login(api, "alice")

    for token in ("x" * 43, tokens["access_token"], "not a token at all!"):
        response = refresh(api, token)
        assert response.status_code == 401
        assert code(response) == "token_invalid"
    assert call(api, tokens).status_code == 200


def test_refresh_without_a_token_is_a_validation_error(api: APIClient, org: Org):
    response = api.post(API + "refresh", {}, format="json")

    assert response.status_code == 400
    assert "refresh_token" in response.json()["fields"]


# --- Idle and absolute limits --------------------------------------------------------------


def test_a_session_unused_beyond_the_idle_timeout_ends(api: APIClient, org: Org, clock: Clock):
    tokens = login(api, "alice")

    clock.advance(days=7, seconds=1)

    assert code(call(api, tokens)) == "session_expired"
    assert code(refresh(api, tokens["refresh_token"])) == "session_expired"


def test_use_keeps_a_session_alive_until_its_absolute_lifetime(
    api: APIClient, org: Org, clock: Clock
):
    tokens = login(api, "alice")
    for _ in range(4):  # day 6, 12, 18, 24: never idle for 7 days
        clock.advance(days=6)
        response = refresh(api, tokens["refresh_token"])
        assert response.status_code == 200, response.content
        tokens = response.json()

    clock.advance(days=6)  # day 30: the absolute lifetime is over

    assert code(refresh(api, tokens["refresh_token"])) == "session_expired"
    assert AddinSession.objects.get(pk=tokens["session_id"]).revoked_at is None


def test_the_access_token_never_outlives_the_session(api: APIClient, org: Org, clock: Clock):
    ConnectorPolicy.objects.create(absolute_hours=1)
    tokens = login(api, "alice")
    clock.advance(minutes=55)

    last = refresh(api, tokens["refresh_token"]).json()

    assert 5 * 60 - 5 <= last["expires_in"] <= 5 * 60  # what is left of the hour


def test_a_shorter_policy_applies_to_existing_sessions_at_once(
    api: APIClient, org: Org, clock: Clock
):
    tokens = login(api, "alice")
    clock.advance(minutes=61)
    tokens = refresh(api, tokens["refresh_token"]).json()

    ConnectorPolicy.objects.create(absolute_hours=1)

    assert code(refresh(api, tokens["refresh_token"])) == "session_expired"
    assert AddinSession.objects.get(pk=tokens["session_id"]).revoked_at is None
    assert auth.session_policy() == {
        "idle_minutes": 7 * 24 * 60,
        "absolute_hours": 1,
        "access_token_seconds": 15 * 60,
    }


def test_an_administrator_sets_the_access_token_lifetime(api: APIClient, org: Org):
    ConnectorPolicy.objects.create(access_token_seconds=120, idle_minutes=30)

    tokens = login(api, "alice")

    assert tokens["expires_in"] == 120


# --- Revocation ----------------------------------------------------------------------------


def test_a_password_change_ends_every_session_of_the_user(api: APIClient, org: Org):
    laptop = login(api, "alice")
    phone = login(api, "alice")
    bobs = login(api, "bob")

    org.alice.set_password("a brand new passphrase")
    org.alice.save()

    for tokens in (laptop, phone):
        assert code(call(api, tokens)) == "session_expired"
        assert code(refresh(api, tokens["refresh_token"])) == "session_expired"
    assert call(api, bobs).status_code == 200
    reasons = set(
        AddinSession.objects.filter(user=org.alice).values_list("revoked_reason", flat=True)
    )
    assert reasons == {AddinSession.EndReason.PASSWORD_CHANGED}


def test_deactivating_a_user_ends_every_session(api: APIClient, org: Org):
    tokens = login(api, "alice")

    org.alice.is_active = False
    org.alice.save()

    assert code(call(api, tokens)) == "session_expired"
    assert AddinSession.objects.get(pk=tokens["session_id"]).revoked_reason == "deactivated"


def test_a_bulk_deactivation_without_signals_still_stops_the_tokens(api: APIClient, org: Org):
    tokens = login(api, "alice")

    User.objects.filter(pk=org.alice.pk).update(is_active=False)

    assert code(call(api, tokens)) == "session_expired"
    assert code(refresh(api, tokens["refresh_token"])) == "session_expired"


def test_editing_other_details_of_the_user_keeps_his_sessions(api: APIClient, org: Org):
    tokens = login(api, "alice")

    org.alice.first_name = "Alicia"
    org.alice.save()
    User.objects.get(pk=org.alice.pk).save(update_fields=["last_login"])

    assert call(api, tokens).status_code == 200


# --- The user's sessions -------------------------------------------------------------------


def test_the_user_lists_his_working_sessions_newest_use_first(
    api: APIClient, org: Org, clock: Clock
):
    old = login(api, "alice", HTTP_X_ADDIN_VERSION="1.0.0", REMOTE_ADDR="192.0.2.1")
    clock.advance(minutes=5)
    ended = login(api, "alice")
    api.post(API + "logout", HTTP_AUTHORIZATION=f"Bearer {ended['access_token']}")
    login(api, "bob")
    clock.advance(minutes=5)
    current = login(api, "alice", HTTP_X_ADDIN_VERSION="1.2.0", REMOTE_ADDR="192.0.2.2")

    response = call(api, current)

    assert response.status_code == 200
    listed = response.json()
    assert [s["id"] for s in listed] == [current["session_id"], old["session_id"]]
    assert [s["current"] for s in listed] == [True, False]
    assert listed[1]["client"] == "Outlook add-in 1.0.0"
    assert listed[1]["ip"] == "192.0.2.1"
    assert set(listed[0]) == {
        "id",
        "client",
        "ip",
        "created_at",
        "last_used_at",
        "ends_at",
        "current",
    }


def test_the_user_ends_another_of_his_sessions(api: APIClient, org: Org):
    here = login(api, "alice")
    lost_laptop = login(api, "alice")

    response = api.delete(
        f"{SESSIONS}/{lost_laptop['session_id']}",
        HTTP_AUTHORIZATION=f"Bearer {here['access_token']}",
    )

    assert response.status_code == 204
    assert code(call(api, lost_laptop)) == "session_expired"
    assert call(api, here).status_code == 200


def test_someone_elses_session_is_not_found(api: APIClient, org: Org):
    alices = login(api, "alice")
    bobs = login(api, "bob")

    theirs = api.delete(
        f"{SESSIONS}/{bobs['session_id']}", HTTP_AUTHORIZATION=f"Bearer {alices['access_token']}"
    )
    missing = api.delete(
        f"{SESSIONS}/999999", HTTP_AUTHORIZATION=f"Bearer {alices['access_token']}"
    )

    assert theirs.status_code == missing.status_code == 404
    assert theirs.json() == missing.json()
    assert call(api, bobs).status_code == 200


def test_the_session_list_needs_a_token(api: APIClient, org: Org):
    response = api.get(SESSIONS)

    assert response.status_code == 401
    assert code(response) == "not_authenticated"
