"""License keys: issue (vendor side, private key) and verify (CRM side, public key).

Pure: no models, no settings. A key is `base64url(payload) "." base64url(signature)`, without
padding, where the payload is canonical JSON (sorted keys, no spaces, ASCII) and the signature
is Ed25519 over exactly those payload bytes.

Verification is strict on purpose: a license has exactly one valid text, so every change to a
key, down to one bit, is refused. That is why the base64 parts must re-encode to themselves
(Python's decoder ignores stray bits in the last character) and the payload must be canonical.
The signature is checked before the JSON is parsed, so nothing unauthenticated is interpreted.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from typing import Any
from urllib.parse import urlsplit

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

# A real key is a few hundred characters; refusing big inputs first keeps junk cheap.
MAX_KEY_CHARS = 8192
SIGNATURE_BYTES = 64
RAW_KEY_BYTES = 32
FEATURE_MAILCONNECTOR = "mailconnector"

# Column sizes of licensing.models.License: a verified payload always fits them.
MAX_LICENSE_ID = 100
MAX_INSTALLATION = 200
MAX_URL = 500
MAX_FEATURE = 50
MAX_FEATURES = 20
MAX_USERS = 1_000_000

TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")
_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")
_FIELDS = frozenset(
    {"license_id", "installation", "crm_url", "users", "features", "issued_at", "expires_at"}
)
_DEFAULT_PORTS = {"http": 80, "https": 443}
_HOST_NAME = re.compile(r"[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*")
_IPV6 = re.compile(r"[0-9a-f:.]+")


class InvalidKey(ValueError):
    """A license key that cannot be trusted; `reason` says why in plain words.

    A ValueError rather than a KeyError: `except KeyError` around dict look-ups must never
    swallow a refused license by accident, and str() gives the reason without quotes.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    def __str__(self) -> str:
        return self.reason


@dataclass(frozen=True)
class LicensePayload:
    license_id: str
    installation: str
    crm_url: str
    users: int
    features: tuple[str, ...] = field(default=(FEATURE_MAILCONNECTOR,))
    issued_at: datetime = field(default_factory=lambda: datetime.now(UTC).replace(microsecond=0))
    expires_at: datetime | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "license_id": self.license_id,
            "installation": self.installation,
            "crm_url": self.crm_url,
            "users": self.users,
            "features": list(self.features),
            "issued_at": format_timestamp(self.issued_at),
            "expires_at": format_timestamp(self.expires_at) if self.expires_at else None,
        }

    def has_feature(self, feature: str) -> bool:
        return feature in self.features

    def expired(self, now: datetime) -> bool:
        return self.expires_at is not None and now >= self.expires_at


# --- Issue and verify ----------------------------------------------------------------------


def issue(payload: LicensePayload, private_key: Ed25519PrivateKey) -> str:
    """Sign a payload. The payload goes through the same checks as `verify` applies."""
    data = canonical_json(payload.as_dict())
    parse_payload(data)  # a vendor must never ship a key the CRM would refuse
    signature = private_key.sign(data)
    return f"{b64url_encode(data)}.{b64url_encode(signature)}"


def verify(key: str, public_key: Ed25519PublicKey) -> LicensePayload:
    """The payload of a key signed by `public_key`, or InvalidKey with the reason.

    Surrounding and embedded whitespace is ignored: keys travel by email, which wraps lines.
    """
    if not isinstance(key, str):
        raise InvalidKey("The license key must be text.")
    if len(key) > MAX_KEY_CHARS:
        raise InvalidKey(
            f"The text is too long to be a license key ({len(key):,} characters; "
            f"a key has at most {MAX_KEY_CHARS:,})."
        )
    if not key.isascii():
        raise InvalidKey(
            "The text contains characters that never appear in a license key "
            "(letters, digits, '-', '_' and one '.'). Copy the key again from the vendor's message."
        )
    text = "".join(key.split())
    if not text:
        raise InvalidKey("No license key was given.")
    parts = text.split(".")
    if len(parts) != 2:
        raise InvalidKey(
            "This is not a license key: a key has two parts separated by one dot "
            f"(this text has {len(parts)} parts). It may be cut short; copy it again."
        )
    data = _b64url_decode(parts[0], "content")
    signature = _b64url_decode(parts[1], "signature")
    if len(signature) != SIGNATURE_BYTES:
        raise InvalidKey(
            "The key's signature has the wrong length: the key is damaged or cut short."
        )
    try:
        public_key.verify(signature, data)
    except InvalidSignature:
        raise InvalidKey(
            "The key's signature does not match: the key was changed after it was issued, "
            "or it was not issued by this CRM's license vendor."
        ) from None
    return parse_payload(data)


def parse_payload(data: bytes) -> LicensePayload:
    """Check a payload's JSON field by field; raise InvalidKey naming the first problem."""
    try:
        raw = json.loads(
            data.decode("ascii"),
            object_pairs_hook=_unique_pairs,
            parse_constant=_no_constants,
        )
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        reason = exc.reason if isinstance(exc, InvalidKey) else "it is not valid JSON"
        raise InvalidKey(f"The key's content cannot be read: {reason}.") from None
    if not isinstance(raw, dict):
        raise InvalidKey("The key's content cannot be read: it is not a JSON object.")
    missing = sorted(_FIELDS - raw.keys())
    if missing:
        raise InvalidKey(f"The key's content lacks the field(s) {', '.join(missing)}.")
    extra = sorted(raw.keys() - _FIELDS)
    if extra:
        raise InvalidKey(f"The key's content has unknown field(s) {', '.join(extra)}.")

    license_id = _text(raw, "license_id", MAX_LICENSE_ID)
    installation = _text(raw, "installation", MAX_INSTALLATION)
    crm_url = _text(raw, "crm_url", MAX_URL)
    try:
        normalise_url(crm_url)
    except ValueError as exc:
        raise InvalidKey(f"The key's crm_url is not a usable address: {exc}.") from None
    users = raw["users"]
    if type(users) is not int or not 1 <= users <= MAX_USERS:
        raise InvalidKey(f"The key's users must be a whole number from 1 to {MAX_USERS:,}.")
    features = raw["features"]
    if (
        not isinstance(features, list)
        or len(features) > MAX_FEATURES
        or not all(isinstance(f, str) and 0 < len(f) <= MAX_FEATURE for f in features)
    ):
        raise InvalidKey("The key's features must be a list of names.")
    issued_at = _timestamp(raw, "issued_at")
    expires_at = _timestamp(raw, "expires_at") if raw["expires_at"] is not None else None
    if expires_at is not None and expires_at <= issued_at:
        raise InvalidKey("The key expires before it was issued.")
    payload = LicensePayload(
        license_id=license_id,
        installation=installation,
        crm_url=crm_url,
        users=users,
        features=tuple(features),
        issued_at=issued_at,
        expires_at=expires_at,
    )
    if canonical_json(payload.as_dict()) != data:
        raise InvalidKey("The key's content is not in canonical form: it was not issued as is.")
    return payload


def new_payload(
    *,
    installation: str,
    crm_url: str,
    users: int,
    features: tuple[str, ...] = (FEATURE_MAILCONNECTOR,),
    expires_on: date | None = None,
    now: datetime,
    license_id: str | None = None,
) -> LicensePayload:
    """A payload as the vendor issues it: normalised URL, a fresh id, valid through a day."""
    return LicensePayload(
        license_id=license_id or str(uuid.uuid4()),
        installation=installation.strip(),
        crm_url=normalise_url(crm_url),
        users=users,
        features=tuple(sorted(set(features))),
        issued_at=now.astimezone(UTC).replace(microsecond=0),
        # "Expires 2026-12-31" means usable through that whole day (UTC).
        expires_at=(
            datetime.combine(expires_on, time(23, 59, 59), tzinfo=UTC) if expires_on else None
        ),
    )


# --- URLs ----------------------------------------------------------------------------------


def normalise_url(url: str) -> str:
    """The form two URLs of one CRM share; ValueError (in words) for anything else.

    Scheme and host lowercased, the default port dropped, trailing slashes dropped; the path is
    kept as is (two CRMs may live under one host). User info, query and fragment are refused.
    """
    if not isinstance(url, str) or not url.strip():
        raise ValueError("the address is empty")
    if not url.isascii() or any(c.isspace() for c in url.strip()):
        raise ValueError("the address contains spaces or characters outside ASCII")
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise ValueError(f"{url!r} does not start with http:// or https://")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"{url!r} contains a user name or password")
    if parts.query or parts.fragment or url.rstrip().endswith(("?", "#")):
        raise ValueError(f"{url!r} has a query or fragment")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise ValueError(f"{url!r} has no host name")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{url!r} has an invalid port") from None
    if ":" in host:
        if not _IPV6.fullmatch(host):
            raise ValueError(f"{url!r} has an invalid IPv6 address")
        netloc = f"[{host}]"
    elif _HOST_NAME.fullmatch(host):
        netloc = host
    else:
        raise ValueError(f"{url!r} has an invalid host name")
    if port is not None and port != _DEFAULT_PORTS[scheme]:
        netloc = f"{netloc}:{port}"
    return f"{scheme}://{netloc}{parts.path.rstrip('/')}"


def same_crm(a: str, b: str) -> bool:
    """Whether two URLs name the same CRM; a malformed one names none."""
    try:
        return normalise_url(a) == normalise_url(b)
    except ValueError:
        return False


# --- Key pairs -----------------------------------------------------------------------------


def generate_private_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def private_key_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def public_key_pem(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def public_key_b64(key: Ed25519PublicKey) -> str:
    """The raw 32-byte public key in standard base64: the value of LICENSE_PUBLIC_KEY."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode("ascii")


def load_private_key(data: str | bytes) -> Ed25519PrivateKey:
    """A PEM (PKCS#8) or raw base64 Ed25519 private key; ValueError in words otherwise."""
    text = data.decode("ascii", "replace") if isinstance(data, bytes) else data
    if "-----BEGIN" in text:
        try:
            key = serialization.load_pem_private_key(text.encode("ascii"), password=None)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"not a readable PEM private key ({exc})") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError("the PEM private key is not an Ed25519 key")
        return key
    return Ed25519PrivateKey.from_private_bytes(_raw_key(text, "private"))


def load_public_key(data: str | bytes) -> Ed25519PublicKey:
    """A raw base64 (standard or URL-safe) or PEM Ed25519 public key; ValueError otherwise."""
    text = data.decode("ascii", "replace") if isinstance(data, bytes) else data
    if "-----BEGIN" in text:
        try:
            key = serialization.load_pem_public_key(text.encode("ascii"))
        except (ValueError, TypeError) as exc:
            raise ValueError(f"not a readable PEM public key ({exc})") from None
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError("the PEM public key is not an Ed25519 key")
        return key
    return Ed25519PublicKey.from_public_bytes(_raw_key(text, "public"))


# --- Encoding helpers ----------------------------------------------------------------------


def canonical_json(value: Mapping[str, Any]) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode(
        "ascii"
    )


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def format_timestamp(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError("license timestamps must carry a time zone")
    return moment.astimezone(UTC).strftime(TIMESTAMP_FORMAT)


def _b64url_decode(part: str, what: str) -> bytes:
    damaged = f"The key's {what} is damaged (it is not base64url text): copy the key again."
    if not part or not _BASE64URL.fullmatch(part) or len(part) % 4 == 1:
        raise InvalidKey(damaged)
    try:
        data = base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    except (binascii.Error, ValueError):
        raise InvalidKey(damaged) from None
    if b64url_encode(data) != part:  # stray bits in the last character
        raise InvalidKey(damaged)
    return data


def _raw_key(text: str, kind: str) -> bytes:
    cleaned = "".join(text.split())
    try:
        raw = base64.b64decode(
            cleaned.replace("-", "+").replace("_", "/") + "=" * (-len(cleaned) % 4),
            validate=True,
        )
    except (binascii.Error, ValueError):
        raise ValueError(f"the {kind} key is neither PEM nor base64") from None
    if len(raw) != RAW_KEY_BYTES:
        raise ValueError(
            f"the {kind} key is {len(raw)} bytes once decoded; an Ed25519 key is {RAW_KEY_BYTES}"
        )
    return raw


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for name, value in pairs:
        if name in result:
            raise InvalidKey(f"the field {name} appears twice")
        result[name] = value
    return result


def _no_constants(name: str) -> Any:
    raise InvalidKey(f"{name} is not a number")


def _text(raw: dict[str, Any], name: str, limit: int) -> str:
    value = raw[name]
    if not isinstance(value, str) or not value.strip() or len(value) > limit:
        raise InvalidKey(f"The key's {name} must be text of 1 to {limit} characters.")
    if any(not c.isprintable() for c in value):
        raise InvalidKey(f"The key's {name} contains control characters.")
    return value


def _timestamp(raw: dict[str, Any], name: str) -> datetime:
    value = raw[name]
    if not isinstance(value, str) or not _TIMESTAMP.fullmatch(value):
        raise InvalidKey(f"The key's {name} must be a time like 2026-12-31T23:59:59Z.")
    try:
        return datetime.strptime(value, TIMESTAMP_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        raise InvalidKey(f"The key's {name} is not a real date and time.") from None
