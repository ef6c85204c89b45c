"""XOAUTH2 mailboxes (Microsoft 365, Gmail): a stored OAuth2 token, refreshed before it expires.

The boundary: Microsoft's and Google's OAuth2 servers cannot be reached from the tests, so
`tests.mailconverter.oauth2_server.IdentityProvider` stands in for them (token endpoint with
rotating refresh tokens, tokeninfo and RFC 7662 introspection) on a loopback port. Everything
else is real: a private Dovecot whose oauth2 passdb asks that provider whether an access token
is live (Dovecot's own OAuth2 support, as a Gmail or Exchange Online IMAP server checks its
tokens), PostgreSQL for the row lock, the scan loop and its ledger.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from django.db import connection, connections
from django.utils import timezone

from crm.exceptions import Forbidden, Invalid
from crm.models import Record
from mailconverter import oauth2, scanner, secrets, services
from mailconverter.models import Folder, LedgerEntry, Mailbox, Rule, ScanRun
from tests.conftest import Org
from tests.mailconverter.conftest import DOVECOT, Account, Dovecot
from tests.mailconverter.helpers import mail
from tests.mailconverter.oauth2_server import IdentityProvider

SCOPE = "https://outlook.office.com/IMAP.AccessAsUser.All offline_access"


@dataclass
class OAuth2Dovecot(Dovecot):
    """The shared test Dovecot plus an oauth2 passdb that asks the provider about tokens.

    PLAIN stays (the tests deliver mail with it); XOAUTH2 and OAUTHBEARER tokens are checked by
    tokeninfo (an unknown or expired token: "Invalid token") and then introspection, which names
    the account and says whether the token is active.
    """

    provider_url: str = ""

    def config(self) -> str:
        base = super().config()
        mechanisms = "auth_mechanisms = plain login"
        if base.count(mechanisms) != 1 or base.count("passdb {") != 1:
            raise RuntimeError("the shared Dovecot config changed: update OAuth2Dovecot")
        passdb = (
            "passdb {\n  driver = oauth2\n  mechanisms = xoauth2 oauthbearer\n"
            f"  args = {self.root}/dovecot-oauth2.conf.ext\n}}\n"
        )
        return base.replace(mechanisms, f"{mechanisms} xoauth2 oauthbearer").replace(
            "passdb {", passdb + "passdb {"
        )

    def start(self) -> None:
        (self.root / "dovecot-oauth2.conf.ext").write_text(
            f"tokeninfo_url = {self.provider_url}/tokeninfo?access_token=\n"
            f"introspection_url = {self.provider_url}/introspect\n"
            "introspection_mode = post\n"
            "force_introspection = yes\n"
            "username_attribute = username\n"
            "active_attribute = active\n"
            "active_value = true\n"
            "timeout_msecs = 10000\n"
        )
        super().start()


@pytest.fixture(scope="module")
def identity_provider() -> Iterator[IdentityProvider]:
    provider = IdentityProvider()
    provider.start()
    try:
        yield provider
    finally:
        provider.stop()


@pytest.fixture
def provider(identity_provider: IdentityProvider) -> IdentityProvider:
    identity_provider.refresh_requests.clear()
    identity_provider.delay = 0.0
    identity_provider.lifetime = 3600
    return identity_provider


@pytest.fixture(scope="module")
def oauth2_dovecot(identity_provider: IdentityProvider) -> Iterator[OAuth2Dovecot]:
    if not Path(DOVECOT).exists():
        pytest.skip("dovecot is not installed (apt-get install dovecot-imapd)")
    root = Path(tempfile.mkdtemp(prefix="crm-dovecot-oauth2-"))
    root.chmod(0o755)
    server = OAuth2Dovecot(root=root, provider_url=identity_provider.url)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def account(oauth2_dovecot: OAuth2Dovecot) -> Account:
    return oauth2_dovecot.add_account()


def connect(
    org: Org, provider: IdentityProvider, *, user: str = "u@crm.test", port: int = 143
) -> tuple[Mailbox, str]:
    """A mailbox signed in as the administrator would: its refresh token from the consent."""
    mailbox = Mailbox.objects.create(
        name=f"support {user}",
        host="127.0.0.1",
        port=port,
        security=Mailbox.Security.NONE,
        username=user,
        address="support@crm.test",
        owner=org.admin,
    )
    refresh_token = provider.issue_refresh_token(user)
    services.set_oauth2(
        actor=org.admin,
        mailbox=mailbox,
        token_endpoint=provider.token_url,
        client_id=provider.client_id,
        client_secret=provider.client_secret,
        refresh_token=refresh_token,
        scope=SCOPE,
    )
    Folder.objects.create(mailbox=mailbox, name="INBOX", selected=True)
    Rule.objects.create(mailbox=mailbox, name="every message", actions=[{"type": "create_ticket"}])
    return mailbox, refresh_token


def tickets() -> list[str]:
    return list(
        Record.objects.filter(module__name="Tickets", deleted_at=None)
        .order_by("pk")
        .values_list("data__title", flat=True)
    )


def stored_row(mailbox: Mailbox) -> str:
    """The mailbox's row as a database dump would hold it."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM mailconverter_mailbox WHERE id = %s", [mailbox.pk])
        return repr(cursor.fetchone())


def question(subject: str) -> bytes:
    return mail("customer_question_with_attachment.eml").replace(
        b"Subject: Photo of the printer", f"Subject: {subject}".encode()
    )


# --- scans over XOAUTH2 ------------------------------------------------------------------------


@pytest.mark.imap
@pytest.mark.django_db
def test_a_scan_over_xoauth2_converts_mail_and_reuses_the_token_while_it_lives(
    account: Account, org: Org, provider: IdentityProvider
) -> None:
    first = account.deliver(question("Printer jam"))
    mailbox, _ = connect(org, provider, user=account.user, port=account.server.port)

    check = services.test_connection(mailbox)
    run = scanner.scan(mailbox)

    assert check.ok, check.message
    assert check.message.startswith(f"Connected to 127.0.0.1:{account.server.port}")
    assert run.status == ScanRun.Status.OK, run.error
    assert run.counts == {"created": 1}
    assert tickets() == ["Printer jam"]
    assert account.flags() == {first: {b"\\Seen"}}
    # "Test connection" got the first access token; the scan used it, as does the next one.
    assert len(provider.refresh_requests) == 1

    second = account.deliver(question("Toner empty"))
    again = scanner.scan(Mailbox.objects.get(pk=mailbox.pk))

    assert again.status == ScanRun.Status.OK, again.error
    assert tickets() == ["Printer jam", "Toner empty"]
    assert account.flags() == {first: {b"\\Seen"}, second: {b"\\Seen"}}
    assert len(provider.refresh_requests) == 1


@pytest.mark.imap
@pytest.mark.django_db
def test_an_expired_access_token_is_refreshed_before_the_login(
    account: Account, org: Org, provider: IdentityProvider
) -> None:
    account.deliver(question("Printer jam"))
    mailbox, original_refresh = connect(org, provider, user=account.user, port=account.server.port)
    expired = provider.issue_access_token(account.user, lifetime=-60)
    mailbox.oauth2_access_token = secrets.encrypt(expired)
    mailbox.oauth2_expires_at = timezone.now() - timedelta(minutes=1)
    mailbox.save()

    run = scanner.scan(mailbox)

    assert run.status == ScanRun.Status.OK, run.error
    assert tickets() == ["Printer jam"]
    [request] = provider.refresh_requests
    assert request["grant_type"] == "refresh_token"
    assert request["refresh_token"] == original_refresh
    assert request["scope"] == SCOPE
    stored = Mailbox.objects.get(pk=mailbox.pk)
    access, refresh = (
        secrets.decrypt(stored.oauth2_access_token),
        secrets.decrypt(stored.oauth2_refresh_token),
    )
    assert access != expired
    assert access in provider.live_access_tokens(account.user)
    assert stored.oauth2_expires_at is not None
    assert stored.oauth2_expires_at > timezone.now() + timedelta(minutes=55)
    # The provider rotated the refresh token: the old one is dead, the stored one is the new.
    assert refresh != original_refresh
    assert provider.refresh_token_is_live(refresh)
    assert not provider.refresh_token_is_live(original_refresh)
    row = stored_row(stored)
    for plain in (access, refresh, provider.client_secret):
        assert plain not in row


@pytest.mark.imap
@pytest.mark.django_db
def test_a_revoked_refresh_token_fails_in_words_and_the_mail_waits_for_a_new_one(
    account: Account, org: Org, provider: IdentityProvider
) -> None:
    uid = account.deliver(question("Printer jam"))
    mailbox, refresh_token = connect(org, provider, user=account.user, port=account.server.port)
    provider.revoke(refresh_token)

    check = services.test_connection(mailbox)
    run = scanner.scan(mailbox)

    words = "The token endpoint refused the refresh token: invalid_grant"
    assert not check.ok
    assert words in check.message
    assert "reconnect the mailbox" in check.message
    assert run.status == ScanRun.Status.FAILED
    assert words in run.error
    assert tickets() == []
    assert not LedgerEntry.objects.filter(mailbox=mailbox).exists()
    assert b"\\Seen" not in account.flags()[uid]

    services.set_oauth2(
        actor=org.admin,
        mailbox=mailbox,
        token_endpoint=provider.token_url,
        client_id=provider.client_id,
        client_secret="",  # kept: the page never shows it back
        refresh_token=provider.issue_refresh_token(account.user),
        scope=SCOPE,
    )
    after = scanner.scan(mailbox)

    assert after.status == ScanRun.Status.OK, after.error
    assert tickets() == ["Printer jam"]
    assert account.flags() == {uid: {b"\\Seen"}}


@pytest.mark.imap
@pytest.mark.django_db
def test_an_access_token_the_server_refuses_is_reported_in_words(
    account: Account, org: Org, provider: IdentityProvider
) -> None:
    mailbox, _ = connect(org, provider, user=account.user, port=account.server.port)
    # A token revoked at the provider while its stored expiry says it still lives.
    mailbox.oauth2_access_token = secrets.encrypt("at-revoked-by-the-tenant-admin")
    mailbox.oauth2_expires_at = timezone.now() + timedelta(hours=1)
    mailbox.save()

    check = services.test_connection(mailbox)

    assert not check.ok
    assert f"The server refused the OAuth2 access token for {account.user}" in check.message
    assert "AUTHENTICATIONFAILED" in check.message


# --- the token itself ------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_token_expiring_within_five_minutes_is_refreshed_and_a_later_one_is_not(
    org: Org, provider: IdentityProvider
) -> None:
    mailbox, _ = connect(org, provider)
    live = provider.issue_access_token("u@crm.test", lifetime=600)
    mailbox.oauth2_access_token = secrets.encrypt(live)
    mailbox.oauth2_expires_at = timezone.now() + timedelta(minutes=10)
    mailbox.save()

    assert oauth2.access_token(mailbox) == live
    assert provider.refresh_requests == []

    mailbox.oauth2_expires_at = timezone.now() + timedelta(minutes=4)
    mailbox.save()
    renewed = oauth2.access_token(mailbox)

    assert renewed != live
    assert renewed in provider.live_access_tokens("u@crm.test")
    assert len(provider.refresh_requests) == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_two_workers_asking_for_a_token_at_once_refresh_it_once(
    org: Org, provider: IdentityProvider
) -> None:
    mailbox, _ = connect(org, provider)
    provider.delay = 0.5  # a slow token endpoint: the second worker arrives meanwhile
    start = threading.Barrier(2)
    tokens: list[str] = []
    failures: list[BaseException] = []

    def worker() -> None:
        try:
            own = Mailbox.objects.get(pk=mailbox.pk)  # each worker loads its own row
            start.wait()
            tokens.append(oauth2.access_token(own))
        except BaseException as exc:
            failures.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert failures == []
    assert len(tokens) == 2
    assert tokens[0] == tokens[1]
    assert len(provider.refresh_requests) == 1
    stored = Mailbox.objects.get(pk=mailbox.pk)
    assert provider.refresh_token_is_live(secrets.decrypt(stored.oauth2_refresh_token))


@pytest.mark.django_db
def test_a_wrong_client_secret_is_told_as_such(org: Org, provider: IdentityProvider) -> None:
    mailbox, _ = connect(org, provider)
    mailbox.oauth2_client_secret = secrets.encrypt("not the secret")
    mailbox.save()

    check = services.test_connection(mailbox)

    assert not check.ok
    assert check.message.startswith(
        "The token endpoint refused the client id or secret: invalid_client"
    )


@pytest.mark.django_db
def test_an_unreachable_token_endpoint_is_told_as_such(
    org: Org, provider: IdentityProvider
) -> None:
    mailbox, _ = connect(org, provider)
    closed = IdentityProvider()
    closed.start()
    url = closed.token_url
    closed.stop()
    mailbox.oauth2_token_url = url
    mailbox.save()

    check = services.test_connection(mailbox)

    assert not check.ok
    assert check.message.startswith("The OAuth2 token endpoint 127.0.0.1:")
    assert "could not be reached" in check.message


# --- the administrator's settings --------------------------------------------------------------


@pytest.mark.django_db
def test_only_an_administrator_signs_a_mailbox_in(org: Org, provider: IdentityProvider) -> None:
    mailbox, _ = connect(org, provider)

    with pytest.raises(Forbidden):
        services.set_oauth2(
            actor=org.bob,
            mailbox=mailbox,
            token_endpoint=provider.token_url,
            client_id="someone else's app",
            client_secret="x",
            refresh_token="y",
        )

    assert Mailbox.objects.get(pk=mailbox.pk).oauth2_client_id == provider.client_id


@pytest.mark.django_db
def test_bad_oauth2_settings_are_refused_naming_the_fields(org: Org) -> None:
    mailbox = Mailbox.objects.create(name="gmail", host="imap.gmail.com", owner=org.admin)

    with pytest.raises(Invalid) as refused:
        services.set_oauth2(
            actor=org.admin,
            mailbox=mailbox,
            token_endpoint="http://oauth2.googleapis.com/token",  # plain HTTP off loopback
            client_id=" ",
            client_secret="secret",
            refresh_token="",
        )

    assert set(refused.value.fields) == {"token_endpoint", "client_id", "refresh_token"}
    assert "https://" in refused.value.fields["token_endpoint"]
    assert Mailbox.objects.get(pk=mailbox.pk).auth == Mailbox.Auth.PLAIN


@pytest.mark.django_db
def test_oauth2_secrets_are_stored_encrypted_and_survive_a_key_rotation(
    org: Org, provider: IdentityProvider, settings: Any
) -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.FIELD_ENCRYPTION_KEY = old
    mailbox, refresh_token = connect(org, provider)
    row = stored_row(mailbox)
    assert refresh_token not in row
    assert provider.client_secret not in row

    settings.FIELD_ENCRYPTION_KEY = f"{new},{old}"
    assert services.rotate_secrets() == 2  # client secret and refresh token
    settings.FIELD_ENCRYPTION_KEY = new

    token = oauth2.access_token(Mailbox.objects.get(pk=mailbox.pk))
    assert token in provider.live_access_tokens("u@crm.test")
