"""What `meta` tells the add-in before anything else: versions, login methods, limits."""

from __future__ import annotations

from typing import Any

from django.conf import settings

API_VERSIONS = ["v1"]


def describe(crm_version: str) -> dict[str, Any]:
    from licensing.services import license_status
    from mailconnector import auth

    state = license_status()
    return {
        "product": "CRM Mail Connector",
        "crm_version": crm_version,
        "api_versions": API_VERSIONS,
        "min_addin_version": settings.ADDIN_MIN_VERSION,
        "login_methods": {
            "password": True,
            "totp": True,
            "sso": [
                {"id": p["id"], "name": p["name"]}
                for p in getattr(settings, "ADDIN_SSO_PROVIDERS", [])
            ],
        },
        "limits": {"max_email_bytes": settings.ADDIN_MAX_EMAIL_BYTES},
        "session_policy": auth.session_policy() if hasattr(auth, "session_policy") else {},
        "license": {"active": state.active, "code": state.code, "reason": state.reason},
    }
