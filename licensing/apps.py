from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.core import checks


class LicensingConfig(AppConfig):
    name = "licensing"
    verbose_name = "Licensing"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from licensing import services  # noqa: F401  (connects the status-cache invalidation)

        checks.register(check_public_key, checks.Tags.security)


def check_public_key(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """A malformed LICENSE_PUBLIC_KEY stops start-up naming the variable (house rule)."""
    from django.conf import settings

    from licensing import keys

    value = getattr(settings, "LICENSE_PUBLIC_KEY", "")
    if not value:
        return []
    try:
        keys.load_public_key(value)
    except ValueError as exc:
        return [
            checks.Error(
                f"The environment variable LICENSE_PUBLIC_KEY is malformed: {exc}.",
                hint="Set it to the base64 public key printed by `manage.py license_keygen`.",
                id="licensing.E001",
            )
        ]
    return []
