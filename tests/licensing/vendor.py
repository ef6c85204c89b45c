"""A license vendor for tests: its own key pair, and keys issued the way license_issue does."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from licensing import keys

CRM_URL = "https://crm.example.com"


@dataclass
class Vendor:
    private_key: Ed25519PrivateKey = field(default_factory=keys.generate_private_key)

    @property
    def public_key(self) -> str:
        return keys.public_key_b64(self.private_key.public_key())

    def payload(self, **overrides: Any) -> keys.LicensePayload:
        issued = overrides.pop("issued_at", datetime.now(UTC).replace(microsecond=0))
        values: dict[str, Any] = {
            "license_id": "lic-0001",
            "installation": "Acme Ltd",
            "crm_url": CRM_URL,
            "users": 3,
            "features": (keys.FEATURE_MAILCONNECTOR,),
            "issued_at": issued,
            "expires_at": issued + timedelta(days=365),
        }
        values.update(overrides)
        return keys.LicensePayload(**values)

    def key(self, **overrides: Any) -> str:
        return keys.issue(self.payload(**overrides), self.private_key)

    def sign_raw(self, data: bytes) -> str:
        """Any bytes, validly signed: content checks are reached only past the signature."""
        return f"{keys.b64url_encode(data)}.{keys.b64url_encode(self.private_key.sign(data))}"
