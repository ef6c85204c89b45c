"""The TOTP step of the add-in's login (`POST /api/addin/v1/auth/mfa`), with real codes.

Codes come from pyotp, an implementation of RFC 6238 independent of django-otp's.
"""

from __future__ import annotations

import time
from base64 import b32encode
from typing import Any

import pyotp
import pytest
from django_otp.plugins.otp_totp.models import TOTPDevice
from rest_framework.test import APIClient

from crm.models import User
from mailconnector.models import AddinSession
from tests.conftest import Clock, Org
from tests.factories import PASSWORD

pytestmark = pytest.mark.postgres

API = "/api/addin/v1/auth/"


@pytest.fixture
def api() -> APIClient:
    return APIClient()


def enrol(user: User) -> pyotp.TOTP:
    """A confirmed device for the user, and the app on his phone that shares its secret."""
    device = TOTPDevice.objects.create(user=user, name="phone", confirmed=True)
    return pyotp.TOTP(b32encode(device.bin_key).decode())


@pytest.fixture
def phone(org: Org) -> pyotp.TOTP:
    return enrol(org.alice)


def login(api: APIClient, username: str = "alice", password: str = PASSWORD) -> Any:
    return api.post(API + "login", {"username": username, "password": password}, format="json")


def mfa(api: APIClient, mfa_token: str, code: str) -> Any:
    return api.post(API + "mfa", {"mfa_token": mfa_token, "code": code}, format="json")


def next_code(phone: pyotp.TOTP) -> str:
    """The code of the next time step: valid (one step of tolerance) and not used yet."""
    return str(phone.at(time.time() + 30))


def wrong(code: str) -> str:
    return f"{(int(code) + 1) % 1_000_000:06d}"


def test_with_totp_on_the_password_alone_gives_no_tokens(api: APIClient, phone: pyotp.TOTP):
    response = login(api)

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "mfa_required"
    assert body["methods"] == ["totp"]
    assert body["expires_in"] == 300
    assert "access_token" not in body
    assert not AddinSession.objects.exists()
    assert response["Cache-Control"] == "no-store"


def test_the_right_code_finishes_the_login(api: APIClient, org: Org, phone: pyotp.TOTP):
    mfa_token = login(api).json()["mfa_token"]

    response = mfa(api, mfa_token, phone.now())

    assert response.status_code == 200
    tokens = response.json()
    assert tokens["user"]["username"] == "alice"
    assert AddinSession.objects.get(pk=tokens["session_id"]).user == org.alice
    listed = api.get(API + "sessions", HTTP_AUTHORIZATION=f"Bearer {tokens['access_token']}")
    assert listed.status_code == 200


def test_a_code_works_only_once(api: APIClient, phone: pyotp.TOTP):
    code = phone.now()
    assert mfa(api, login(api).json()["mfa_token"], code).status_code == 200

    again = mfa(api, login(api).json()["mfa_token"], code)

    assert again.status_code == 401
    assert again.json()["code"] == "mfa_invalid"


def test_a_wrong_code_is_refused_and_the_login_can_go_on(
    api: APIClient, phone: pyotp.TOTP, clock: Clock
):
    mfa_token = login(api).json()["mfa_token"]

    refused = mfa(api, mfa_token, wrong(phone.now()))
    clock.advance(seconds=2)  # django-otp waits a second after a wrong code
    accepted = mfa(api, mfa_token, phone.now())

    assert refused.status_code == 401
    assert refused["Content-Type"] == "application/problem+json"
    assert refused.json()["code"] == "mfa_invalid"
    assert refused.json()["attempts_left"] == 4
    assert accepted.status_code == 200


def test_a_code_right_after_a_wrong_one_must_wait(api: APIClient, phone: pyotp.TOTP):
    mfa_token = login(api).json()["mfa_token"]
    mfa(api, mfa_token, wrong(phone.now()))

    hurried = mfa(api, mfa_token, phone.now())

    assert hurried.status_code == 429
    assert hurried.json()["code"] == "rate_limited"
    assert int(hurried["Retry-After"]) >= 1


def test_the_mfa_token_works_once(api: APIClient, phone: pyotp.TOTP):
    mfa_token = login(api).json()["mfa_token"]
    assert mfa(api, mfa_token, phone.now()).status_code == 200

    replay = mfa(api, mfa_token, next_code(phone))

    assert replay.status_code == 401
    assert replay.json()["code"] == "mfa_invalid"
    assert replay.json()["attempts_left"] == 0
    assert AddinSession.objects.count() == 1


def test_the_mfa_token_expires_after_five_minutes(api: APIClient, phone: pyotp.TOTP, clock: Clock):
    mfa_token = login(api).json()["mfa_token"]

    clock.advance(minutes=5, seconds=1)
    late = mfa(api, mfa_token, phone.now())

    assert late.status_code == 401
    assert late.json()["attempts_left"] == 0
    assert not AddinSession.objects.exists()


def test_five_wrong_codes_end_the_login_attempt(
    api: APIClient, phone: pyotp.TOTP, clock: Clock, settings: Any
):
    settings.AXES_FAILURE_LIMIT = 50  # this test is about the challenge's own limit
    mfa_token = login(api).json()["mfa_token"]
    left = []
    for _ in range(5):
        clock.advance(seconds=20)
        left.append(mfa(api, mfa_token, wrong(phone.now())).json()["attempts_left"])
    clock.advance(seconds=20)

    after = mfa(api, mfa_token, phone.now())

    assert left == [4, 3, 2, 1, 0]
    assert after.status_code == 401
    assert after.json()["attempts_left"] == 0
    # A new login with the password starts a new attempt.
    assert mfa(api, login(api).json()["mfa_token"], phone.now()).status_code == 200


def test_wrong_codes_count_as_failed_logins_for_the_lockout(
    api: APIClient, phone: pyotp.TOTP, clock: Clock, settings: Any
):
    for i in range(settings.AXES_FAILURE_LIMIT - 2):
        assert login(api, password=f"guess {i}").status_code == 401
    mfa_token = login(api).json()["mfa_token"]
    assert mfa(api, mfa_token, wrong(phone.now())).status_code == 401
    clock.advance(seconds=2)

    locking = mfa(api, mfa_token, wrong(phone.now()))
    clock.advance(seconds=5)

    assert locking.status_code == 429
    assert "Retry-After" in locking
    # Locked: neither the right code nor the right password gets in now.
    assert mfa(api, mfa_token, phone.now()).status_code == 429
    assert login(api).status_code == 429


def test_a_successful_code_resets_the_failure_count(
    api: APIClient, phone: pyotp.TOTP, clock: Clock, settings: Any
):
    for i in range(settings.AXES_FAILURE_LIMIT - 1):
        login(api, password=f"guess {i}")

    assert mfa(api, login(api).json()["mfa_token"], phone.now()).status_code == 200
    assert login(api, password="one more guess").status_code == 401


def test_the_mfa_token_is_bound_to_its_user(api: APIClient, org: Org, phone: pyotp.TOTP):
    bobs_phone = enrol(org.bob)
    alices_token = login(api).json()["mfa_token"]

    response = mfa(api, alices_token, bobs_phone.now())

    assert response.status_code in (401, 429)
    assert not AddinSession.objects.filter(user=org.bob).exists()


def test_an_unknown_mfa_token_is_refused(api: APIClient, phone: pyotp.TOTP):
    response = mfa(api, "A" * 43, phone.now())

    assert response.status_code == 401
    assert response.json()["code"] == "mfa_invalid"
    assert response.json()["attempts_left"] == 0


@pytest.mark.parametrize("code", ["12ab56", "12345", "\u0661\u0662\u0663\u0664\u0665\u0666"])
def test_a_code_that_is_not_six_digits_is_a_validation_error(
    api: APIClient, phone: pyotp.TOTP, code: str
):
    mfa_token = login(api).json()["mfa_token"]

    response = mfa(api, mfa_token, code)

    assert response.status_code == 400
    assert set(response.json()["fields"]) == {"code"}


def test_a_device_still_being_set_up_does_not_ask_for_a_code(api: APIClient, org: Org):
    TOTPDevice.objects.create(user=org.alice, name="unfinished", confirmed=False)

    response = login(api)

    assert "access_token" in response.json()


def test_a_password_change_ends_a_login_waiting_for_its_code(
    api: APIClient, org: Org, phone: pyotp.TOTP
):
    mfa_token = login(api).json()["mfa_token"]

    org.alice.set_password("changed by the helpdesk")
    org.alice.save()

    response = mfa(api, mfa_token, phone.now())
    assert response.status_code == 401
    assert response.json()["attempts_left"] == 0
