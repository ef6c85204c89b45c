"""The user's account page (/account/): setting up TOTP, and ending his add-in sessions."""

from __future__ import annotations

import re
from typing import Any

import pyotp
import pytest
from django.test import Client
from django_otp.plugins.otp_totp.models import TOTPDevice
from lxml import html as lxml_html
from rest_framework.test import APIClient

from crm.models import User
from mailconnector import auth
from mailconnector.models import AddinSession
from tests.conftest import Org
from tests.factories import PASSWORD

pytestmark = pytest.mark.postgres

PAGE = "/account/"


def browser(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def text(response: Any) -> str:
    return " ".join(lxml_html.fromstring(response.content.decode()).text_content().split())


def shown_secret(response: Any) -> str:
    doc = lxml_html.fromstring(response.content.decode())
    return "".join(doc.xpath("//code[@class='totp-secret']")[0].text_content().split())


def add_in_session(user: User, client: str = "Outlook add-in 1.0.0") -> dict[str, Any]:
    return auth.issue_tokens(user=user, client=client, ip="192.0.2.5")


def test_the_page_needs_a_login(org: Org):
    response = Client().get(PAGE)

    assert response.status_code == 302
    assert response["Location"].startswith("/login/")


def test_every_page_links_to_my_account(org: Org):
    response = browser(org.alice).get("/")

    doc = lxml_html.fromstring(response.content.decode())
    assert doc.xpath("//header//a[@href='/account/' and normalize-space()='My account']")


def test_setting_up_totp_shows_a_qr_code_and_the_secret_then_a_code_turns_it_on(org: Org):
    web = browser(org.alice)

    web.post(PAGE + "totp/start/")
    page = web.get(PAGE)

    assert page.status_code == 200
    assert "no-store" in page["Cache-Control"]  # the secret is on it
    device = TOTPDevice.objects.get(user=org.alice)
    assert not device.confirmed
    body = page.content.decode()
    assert re.search(r"<svg[^>]*class=\"totp-qr\"", body)
    secret = shown_secret(page)
    assert pyotp.TOTP(secret).byte_secret() == device.bin_key
    # The page policy forbids inline scripts and styles: the QR code needs neither.
    assert "'unsafe-inline'" not in page["Content-Security-Policy"]
    assert "style=" not in body
    assert not re.search(r"<script(?![^>]*\bsrc=)", body)

    refused = web.post(PAGE + "totp/confirm/", {"code": "000000"})
    assert "does not match" in text(refused)
    device.refresh_from_db()
    assert not device.confirmed

    web.post(PAGE + "totp/confirm/", {"code": pyotp.TOTP(secret).now()})

    device.refresh_from_db()
    assert device.confirmed
    assert "Two-step login is on" in text(web.get(PAGE))
    api_login = APIClient().post(
        "/api/addin/v1/auth/login", {"username": "alice", "password": PASSWORD}, format="json"
    )
    assert api_login.json()["status"] == "mfa_required"


def test_a_set_up_can_be_cancelled(org: Org):
    web = browser(org.alice)
    web.post(PAGE + "totp/start/")

    web.post(PAGE + "totp/cancel/")

    assert not TOTPDevice.objects.filter(user=org.alice).exists()
    assert "Set up two-step login" in text(web.get(PAGE))


def test_turning_totp_off_asks_for_the_password(org: Org):
    TOTPDevice.objects.create(user=org.alice, name="phone", confirmed=True)
    web = browser(org.alice)

    refused = web.post(PAGE + "totp/remove/", {"password": "not my password"})
    assert "Wrong password" in text(refused)
    assert TOTPDevice.objects.filter(user=org.alice).exists()

    web.post(PAGE + "totp/remove/", {"password": PASSWORD})

    assert not TOTPDevice.objects.filter(user=org.alice).exists()
    assert "Two-step login is off" in text(web.get(PAGE))


def test_the_user_sees_his_add_in_sessions_and_no_one_elses(org: Org):
    add_in_session(org.alice, "Outlook add-in 1.2.0 · Outlook on the web")
    add_in_session(org.bob, "Bob's Outlook")

    page = text(browser(org.alice).get(PAGE))

    assert "Outlook add-in 1.2.0 · Outlook on the web" in page
    assert "192.0.2.5" in page
    assert "Bob's Outlook" not in page


def test_ending_one_session_stops_its_tokens(org: Org):
    lost = add_in_session(org.alice, "The lost laptop")
    kept = add_in_session(org.alice, "The desk computer")
    web = browser(org.alice)

    web.post(f"{PAGE}sessions/{lost['session_id']}/end/")

    api = APIClient()
    call = api.get(
        "/api/addin/v1/auth/sessions", HTTP_AUTHORIZATION=f"Bearer {lost['access_token']}"
    )
    assert call.json()["code"] == "session_expired"
    page = text(web.get(PAGE))
    assert "The lost laptop" not in page
    assert "The desk computer" in page
    assert AddinSession.objects.get(pk=kept["session_id"]).revoked_at is None


def test_ending_all_sessions(org: Org):
    for n in range(3):
        add_in_session(org.alice, f"Client {n}")
    bobs = add_in_session(org.bob)
    web = browser(org.alice)

    response = web.post(PAGE + "sessions/end-all/", follow=True)

    assert "3 sessions ended" in text(response)
    assert not AddinSession.objects.filter(user=org.alice, revoked_at__isnull=True).exists()
    assert AddinSession.objects.get(pk=bobs["session_id"]).revoked_at is None
    assert "not logged in anywhere" in text(response)


def test_someone_elses_session_cannot_be_ended_from_the_page(org: Org):
    bobs = add_in_session(org.bob)

    response = browser(org.alice).post(f"{PAGE}sessions/{bobs['session_id']}/end/")

    assert response.status_code == 404
    assert AddinSession.objects.get(pk=bobs["session_id"]).revoked_at is None


def test_the_actions_accept_only_post(org: Org):
    web = browser(org.alice)

    assert web.get(PAGE + "totp/start/").status_code == 405
    assert web.get(PAGE + "sessions/end-all/").status_code == 405
