"""Mailbox secrets at rest: never in clear, readable after a key rotation."""

from __future__ import annotations

import io
from typing import Any

import pytest
from cryptography.fernet import Fernet

from mailconverter import secrets


def test_a_secret_is_stored_encrypted_and_read_back(settings: Any) -> None:
    settings.FIELD_ENCRYPTION_KEY = Fernet.generate_key().decode()
    token = secrets.encrypt("hunter2 ünïcode")
    assert "hunter2" not in token
    assert secrets.decrypt(token) == "hunter2 ünïcode"


def test_without_a_configured_key_one_is_derived_from_the_secret_key(settings: Any) -> None:
    settings.FIELD_ENCRYPTION_KEY = ""
    token = secrets.encrypt("pw")
    assert secrets.decrypt(token) == "pw"
    settings.SECRET_KEY = "another secret key, another derived key"
    with pytest.raises(secrets.SecretError):
        secrets.decrypt(token)


def test_rotation_keeps_old_tokens_readable_and_rewrites_them_with_the_new_key(
    settings: Any,
) -> None:
    old, new = Fernet.generate_key().decode(), "a passphrase works as a key too"
    settings.FIELD_ENCRYPTION_KEY = old
    token = secrets.encrypt("pw")
    settings.FIELD_ENCRYPTION_KEY = f"{new},{old}"
    assert secrets.decrypt(token) == "pw"
    rotated = secrets.rotate(token)
    settings.FIELD_ENCRYPTION_KEY = new
    assert secrets.decrypt(rotated) == "pw"
    with pytest.raises(secrets.SecretError):
        secrets.decrypt(token)


@pytest.mark.django_db
def test_the_rotate_command_rewrites_every_kind_of_stored_secret(settings: Any, org: Any) -> None:
    from django.core.management import call_command

    from crm.models import OutgoingMailSettings
    from mailconverter.models import Mailbox, MailboxSmtp

    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.FIELD_ENCRYPTION_KEY = old
    box = Mailbox(name="support", host="imap.example.com", username="s@x.test", owner=org.admin)
    box.set_password("mailbox-pw")
    box.oauth2_refresh_token = secrets.encrypt("refresh-pw")
    box.save()
    smtp = MailboxSmtp(mailbox=box, username="info@x.test")
    smtp.set_password("info-pw")
    smtp.save()
    outgoing = OutgoingMailSettings(host="smtp.example.com")
    outgoing.set_password("smtp-pw")
    outgoing.save()

    settings.FIELD_ENCRYPTION_KEY = f"{new},{old}"
    call_command("rotate_secrets", stdout=io.StringIO())
    settings.FIELD_ENCRYPTION_KEY = new  # the old key dropped: everything still reads

    box.refresh_from_db()
    smtp.refresh_from_db()
    outgoing.refresh_from_db()
    assert box.password == "mailbox-pw"
    assert secrets.decrypt(box.oauth2_refresh_token) == "refresh-pw"
    assert secrets.decrypt(smtp.secret) == "info-pw"
    assert outgoing.password == "smtp-pw"
