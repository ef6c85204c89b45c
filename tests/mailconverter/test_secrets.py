"""Mailbox secrets at rest: never in clear, readable after a key rotation."""

from __future__ import annotations

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
