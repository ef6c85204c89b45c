"""The "Outgoing mail" settings page and its test button, against a real SMTP server (aiosmtpd)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.urls import reverse

from crm.models import OutgoingMailSettings, User
from tests.conftest import Org
from tests.crm.smtp_peer import SmtpPeer, free_port

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS"),
]

URL = "/settings/outgoing-mail/"
TEST_URL = "/settings/outgoing-mail/test/"
PASSWORD = "s3cret-Smtp-pa55"


def _client(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _form(**changes: Any) -> dict[str, Any]:
    return {
        "host": "smtp.crm.example",
        "port": "587",
        "security": "starttls",
        "verify_certificate": "on",
        "username": "crm@crm.example",
        "password": "",
        "from_central": "",
        "central_address": "",
        "central_name": "",
        "open_tracking": "on",
        "hourly_cap": "60",
        "timeout_seconds": "2",
    } | changes


def _save(client: Client, **changes: Any) -> Any:
    return client.post(URL, _form(**changes))


@pytest.fixture
def admin(org: Org) -> Client:
    org.admin.email = "admin@crm.example"
    org.admin.save()
    return _client(org.admin)


def test_the_urls_are_the_documented_ones() -> None:
    assert reverse("crm:outgoing_settings") == URL
    assert reverse("crm:outgoing_test") == TEST_URL


def test_an_administrator_saves_the_server_and_the_password_is_never_shown(
    admin: Client,
) -> None:
    page = admin.get(URL)
    assert page.status_code == 200
    assert "Send all CRM mail from one central address" in page.content.decode()

    response = _save(admin, password=PASSWORD)
    assert response.status_code == 302
    row = OutgoingMailSettings.objects.get()
    assert row.host == "smtp.crm.example"
    assert row.password == PASSWORD
    # Encrypted at rest, and write-only on the page.
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM crm_outgoingmailsettings")
        assert PASSWORD not in repr(cursor.fetchall())
    html = admin.get(URL).content.decode()
    assert PASSWORD not in html
    assert row.secret not in html
    assert "A password is saved" in html
    assert "Outgoing mail settings saved." in html


def test_a_blank_password_keeps_the_saved_one_and_remove_clears_it(admin: Client) -> None:
    _save(admin, password=PASSWORD)
    _save(admin, host="smtp2.crm.example")
    row = OutgoingMailSettings.objects.get()
    assert (row.host, row.password) == ("smtp2.crm.example", PASSWORD)
    _save(admin, clear_password="on")
    assert OutgoingMailSettings.objects.get().password == ""


@pytest.mark.parametrize(
    ("changes", "field", "words"),
    [
        ({"port": "0"}, "port", "from 1 to 65535"),
        ({"from_central": "on"}, "central_address", "Enter the central address"),
        ({"central_address": "not an address"}, "central_address", "not an email address"),
        ({"host": "smtp example.com"}, "host", "without spaces"),
        ({"hourly_cap": "0"}, "hourly_cap", "greater than or equal to 1"),
    ],
)
def test_bad_input_is_refused_naming_the_field(
    admin: Client, changes: dict[str, str], field: str, words: str
) -> None:
    response = _save(admin, **changes)
    assert response.status_code == 400
    assert response.context["form"].errors[field][0].find(words) >= 0
    assert not OutgoingMailSettings.objects.exists()


def test_the_page_does_not_exist_for_other_users(org: Org) -> None:
    alice = _client(org.alice)
    assert alice.get(URL).status_code == 404
    assert _save(alice, password=PASSWORD).status_code == 404
    assert alice.post(TEST_URL, {"to": "x@crm.example"}).status_code == 404
    assert not OutgoingMailSettings.objects.exists()


def test_without_login_the_page_asks_to_log_in() -> None:
    response = Client().get(URL)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


# --- The test button -----------------------------------------------------------------------


@pytest.fixture
def peer() -> Iterator[SmtpPeer]:
    p = SmtpPeer(login=("crm@crm.example", PASSWORD)).start()
    yield p
    p.stop()


def _test(admin: Client, to: str = "me@crm.example") -> str:
    response = admin.post(TEST_URL, {"to": to})
    assert response.status_code == 200
    return str(response.context["answer"])


@pytest.mark.smtp
def test_the_test_button_sends_a_mail_and_shows_the_servers_answer(
    admin: Client, peer: SmtpPeer
) -> None:
    _save(admin, host=peer.host, port=peer.port, security="none", password=PASSWORD)
    answer = _test(admin)
    assert answer.startswith("Sent.")
    assert "250 2.0.0 Ok: queued as 4XyZ7Q" in answer
    [received] = peer.received
    assert received.rcpt_tos == ("me@crm.example",)
    assert received.message["Subject"] == "Test mail from the CRM"
    assert received.mail_from == "admin@crm.example"


@pytest.mark.smtp
def test_the_test_button_says_when_the_password_is_wrong(admin: Client, peer: SmtpPeer) -> None:
    _save(admin, host=peer.host, port=peer.port, security="none", password="wrong")
    answer = _test(admin)
    assert answer.startswith("Not sent.")
    assert "refused the user name or password" in answer
    assert "535" in answer
    assert "wrong" not in answer
    assert peer.received == []


@pytest.mark.smtp
def test_the_test_button_says_when_nothing_answers(admin: Client) -> None:
    port = free_port()
    _save(admin, host="127.0.0.1", port=port, security="none")
    answer = _test(admin)
    assert answer == (
        f"Not sent. Nothing answers at 127.0.0.1:{port}: the connection was refused. "
        "Check the server name and port."
    )


@pytest.mark.smtp
def test_the_test_button_says_when_tls_fails(admin: Client, peer: SmtpPeer) -> None:
    # A plain SMTP server configured as SSL/TLS, then as STARTTLS (which it does not offer).
    _save(admin, host=peer.host, port=peer.port, security="ssl", password=PASSWORD)
    assert "The TLS handshake with" in _test(admin)
    _save(admin, host=peer.host, port=peer.port, security="starttls", password=PASSWORD)
    assert "does not offer STARTTLS" in _test(admin)


@pytest.mark.smtp
def test_the_test_button_says_when_the_server_stalls(admin: Client) -> None:
    # A listening socket that never greets: the client waits its timeout, then gives up.
    import socket

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        _save(admin, host="127.0.0.1", port=port, security="none", timeout_seconds="1")
        answer = _test(admin)
    assert answer == f"Not sent. The server at 127.0.0.1:{port} did not answer within 1 second."


def test_the_test_button_refuses_a_malformed_address(admin: Client) -> None:
    _save(admin, password=PASSWORD)
    response = admin.post(TEST_URL, {"to": "me@crm.example\r\nBcc: x@evil.example"})
    assert response.status_code == 400
    assert "line break" in response.context["test_form"].errors["to"][0]
