"""Secrets at rest (mailbox and SMTP passwords, later OAuth2 tokens): Fernet with key rotation.

Keys come from `settings.FIELD_ENCRYPTION_KEY`, comma-separated: the first key encrypts, every
key decrypts (`MultiFernet`), so rotation is "put the new key first, run `rotate` over the
stored tokens, then drop the old key". An entry is either a Fernet key (32 url-safe base64
bytes, as `Fernet.generate_key()` prints) or any passphrase, stretched with SHA-256.

When the setting is empty, one key is derived from `SECRET_KEY` (HKDF-like, with a label of
its own so it never equals a key used elsewhere). That keeps first runs working, at a price
that the settings comment states: changing SECRET_KEY makes stored secrets unreadable.

Settings are read when a key is needed, never at import. It lives in `crm` because both the CRM
(the outgoing server's password) and the mail converter (mailbox passwords) keep secrets;
`mailconverter.secrets` re-exports it. The derivation label keeps its original wording: changing
it would make every secret stored without a configured key unreadable.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

__all__ = ["SecretError", "decrypt", "encrypt", "rotate"]

_DERIVATION_LABEL = b"crm-mail-connector/mailconverter/field-encryption/v1"


class SecretError(Exception):
    """A stored secret cannot be read with the configured keys."""


def encrypt(plain: str) -> str:
    return _fernet(*_key_material()).encrypt(plain.encode("utf-8")).decode("ascii")


def decrypt(token: str) -> str:
    if not token:
        return ""
    try:
        return _fernet(*_key_material()).decrypt(token.encode("ascii")).decode("utf-8")
    except (InvalidToken, UnicodeError) as exc:
        raise SecretError(
            "A stored password cannot be decrypted with FIELD_ENCRYPTION_KEY: was the key "
            "changed without keeping the old one in the list?"
        ) from exc


def rotate(token: str) -> str:
    """Re-encrypt `token` with the first key (it may have been written with an older one)."""
    if not token:
        return ""
    try:
        return _fernet(*_key_material()).rotate(token.encode("ascii")).decode("ascii")
    except InvalidToken as exc:
        raise SecretError("A stored password cannot be decrypted with any key.") from exc


def _key_material() -> tuple[str, str]:
    from django.conf import settings

    return getattr(settings, "FIELD_ENCRYPTION_KEY", "") or "", settings.SECRET_KEY


@lru_cache(maxsize=8)
def _fernet(configured: str, secret_key: str) -> MultiFernet:
    entries = [e.strip() for e in configured.split(",") if e.strip()]
    if entries:
        keys = [_as_fernet_key(e) for e in entries]
    else:
        derived = hmac.new(secret_key.encode("utf-8"), _DERIVATION_LABEL, hashlib.sha256)
        keys = [base64.urlsafe_b64encode(derived.digest())]
    return MultiFernet([Fernet(k) for k in keys])


def _as_fernet_key(entry: str) -> bytes:
    try:
        raw = base64.urlsafe_b64decode(entry.encode("ascii"))
        if len(raw) == 32:
            return entry.encode("ascii")
    except (binascii.Error, ValueError, UnicodeError):
        pass
    return base64.urlsafe_b64encode(hashlib.sha256(entry.encode("utf-8")).digest())
