"""The vendor's commands (license_keygen, license_issue) and the CRM's (license_activate)."""

from __future__ import annotations

import io
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from licensing import keys
from licensing.models import License
from tests.conftest import Org
from tests.licensing.vendor import CRM_URL, Vendor


def _run(*args: str, stdin: str | None = None) -> str:
    out = io.StringIO()
    if stdin is not None:
        import sys

        saved, sys.stdin = sys.stdin, io.StringIO(stdin)
        try:
            call_command(*args, stdout=out)
        finally:
            sys.stdin = saved
    else:
        call_command(*args, stdout=out)
    return out.getvalue()


def _keygen(tmp_path: Path) -> tuple[Path, str]:
    private = tmp_path / "vendor.pem"
    output = _run("license_keygen", "--private-key", str(private))
    public = next(
        line.split("=", 1)[1] for line in output.splitlines() if line.startswith("LICENSE_PUBLIC")
    )
    return private, public


def _issue(private: Path, *extra: str, users: str = "3", url: str = CRM_URL) -> str:
    return _run(
        "license_issue",
        "--private-key",
        str(private),
        "--installation",
        "Acme Ltd",
        "--crm-url",
        url,
        "--users",
        users,
        *extra,
    ).strip()


# --- license_keygen --------------------------------------------------------------------------


def test_keygen_writes_a_private_key_only_its_owner_can_read(tmp_path: Path) -> None:
    private, public = _keygen(tmp_path)
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert private.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    loaded = keys.load_private_key(private.read_bytes())
    assert keys.public_key_b64(loaded.public_key()) == public


def test_keygen_can_write_the_public_key_too(tmp_path: Path) -> None:
    output = _run(
        "license_keygen",
        "--private-key",
        str(tmp_path / "k.pem"),
        "--public-key",
        str(tmp_path / "k.pub"),
    )
    public = (tmp_path / "k.pub").read_text().strip()
    assert f"LICENSE_PUBLIC_KEY={public}" in output
    keys.load_public_key(public)


def test_keygen_never_overwrites_a_key(tmp_path: Path) -> None:
    private, _ = _keygen(tmp_path)
    before = private.read_bytes()
    with pytest.raises(CommandError, match="already exists; refusing to overwrite"):
        _run("license_keygen", "--private-key", str(private))
    assert private.read_bytes() == before
    public = tmp_path / "existing.pub"
    public.write_text("keep me")
    with pytest.raises(CommandError, match="already exists"):
        _run(
            "license_keygen",
            "--private-key",
            str(tmp_path / "new.pem"),
            "--public-key",
            str(public),
        )
    assert not (tmp_path / "new.pem").exists()
    assert public.read_text() == "keep me"


# --- license_issue ---------------------------------------------------------------------------


def test_issue_prints_a_key_with_what_was_asked(tmp_path: Path) -> None:
    private, public = _keygen(tmp_path)
    key = _issue(
        private,
        "--expires",
        "2099-12-31",
        "--features",
        "mailconnector,sync",
        url="HTTPS://CRM.Example.com:443/",
        users="25",
    )
    payload = keys.verify(key, keys.load_public_key(public))
    assert payload.installation == "Acme Ltd"
    assert payload.crm_url == "https://crm.example.com"  # normalised once, by the vendor
    assert payload.users == 25
    assert payload.features == ("mailconnector", "sync")
    assert payload.expires_at == datetime(2099, 12, 31, 23, 59, 59, tzinfo=UTC)
    assert abs(payload.issued_at - datetime.now(UTC)) < timedelta(minutes=1)


def test_issue_defaults_to_the_connector_feature_and_no_expiry(tmp_path: Path) -> None:
    private, public = _keygen(tmp_path)
    payload = keys.verify(_issue(private), keys.load_public_key(public))
    assert payload.features == ("mailconnector",)
    assert payload.expires_at is None


@pytest.mark.parametrize(
    ("extra", "users", "url", "message"),
    [
        ((), "0", CRM_URL, "--users must be at least 1"),
        (("--expires", "31/12/2099"), "3", CRM_URL, "--expires must be a date like 2026-12-31"),
        (("--expires", "2001-01-01"), "3", CRM_URL, "--expires 2001-01-01 is already past"),
        ((), "3", "crm.example.com", "--crm-url is not usable"),
        ((), "3", "https://user:pw@crm.example.com", "user name or password"),
    ],
)
def test_issue_refuses_bad_input_in_words(
    tmp_path: Path, extra: tuple[str, ...], users: str, url: str, message: str
) -> None:
    private, _ = _keygen(tmp_path)
    with pytest.raises(CommandError, match=message):
        _issue(private, *extra, users=users, url=url)


def test_issue_refuses_a_file_that_is_not_a_private_key(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("hello")
    with pytest.raises(CommandError, match="is not a usable private key"):
        _issue(junk)
    with pytest.raises(CommandError, match="Cannot read the private key"):
        _issue(tmp_path / "missing.pem")


# --- license_activate ------------------------------------------------------------------------


@pytest.fixture
def trusted(tmp_path: Path, settings: Any) -> Path:
    """A vendor key pair made by license_keygen, whose public key this CRM trusts."""
    private, public = _keygen(tmp_path)
    settings.LICENSE_PUBLIC_KEY = public
    settings.CRM_BASE_URL = CRM_URL
    return private


@pytest.mark.django_db
def test_keygen_issue_activate_round_trip(org: Org, trusted: Path) -> None:
    key = _issue(trusted, "--expires", (datetime.now(UTC).date() + timedelta(days=400)).isoformat())
    output = _run("license_activate", key)
    assert "License activated for Acme Ltd (https://crm.example.com)." in output
    assert "Users: 0 of 3 enabled." in output
    license_ = License.objects.get()
    assert license_.key == key
    assert license_.activated_by == org.admin


@pytest.mark.django_db
def test_activate_reads_the_key_from_a_file_or_stdin(
    org: Org, trusted: Path, tmp_path: Path
) -> None:
    key_file = tmp_path / "acme.key"
    key_file.write_text(_issue(trusted) + "\n")
    _run("license_activate", "--file", str(key_file), "--user", "admin")
    renewal = _issue(trusted, users="9")
    output = _run("license_activate", "--file", "-", stdin=renewal)
    assert "Users: 0 of 9 enabled." in output
    assert License.objects.count() == 2


@pytest.mark.django_db
def test_activate_says_why_a_key_is_refused(org: Org, trusted: Path) -> None:
    key = _issue(trusted, url="https://crm.other.com")
    with pytest.raises(CommandError) as caught:
        _run("license_activate", key)
    assert str(caught.value) == (
        "The key was not activated: This key is for https://crm.other.com, but this CRM's "
        "address is https://crm.example.com. Ask your vendor for a key issued for this address."
    )
    assert not License.objects.exists()


@pytest.mark.django_db
def test_activate_refuses_a_key_from_another_vendor(org: Org, trusted: Path) -> None:
    with pytest.raises(CommandError, match="not issued by this CRM's license vendor"):
        _run("license_activate", Vendor().key())


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "Give the key, or --file with the key"),
        (("abc", "--file", "x"), "Give the key, or --file with the key"),
        (("--file", "/nonexistent/key"), "Cannot read /nonexistent/key"),
        (("abc", "--user", "alice"), "'alice' is not an active administrator"),
    ],
)
def test_activate_refuses_bad_arguments(
    org: Org, trusted: Path, args: tuple[str, ...], message: str
) -> None:
    with pytest.raises(CommandError, match=message):
        _run("license_activate", *args)


@pytest.mark.django_db
def test_activate_needs_an_administrator(trusted: Path) -> None:
    with pytest.raises(CommandError, match="No active administrator"):
        _run("license_activate", _issue(trusted))


@pytest.mark.django_db
def test_enable_gives_seats_to_named_users_and_refuses_past_the_limit(
    org: Org, vendor: Vendor
) -> None:
    from licensing import services

    services.activate(actor=org.admin, key=vendor.key(users=2))
    out = io.StringIO()
    call_command("license_enable", "alice", "bob", stdout=out)
    assert "alice, bob" in out.getvalue()
    assert services.status(org.alice).active
    with pytest.raises(CommandError, match="Not enabled"):
        call_command("license_enable", "charlie", stdout=io.StringIO())
    assert not services.status(org.charlie).active
    with pytest.raises(CommandError, match="No active user nobody"):
        call_command("license_enable", "nobody", stdout=io.StringIO())
