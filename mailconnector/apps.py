from __future__ import annotations

from django.apps import AppConfig


class MailconnectorConfig(AppConfig):
    name = "mailconnector"
    verbose_name = "Mail connector"

    def ready(self) -> None:
        # Connects the handlers that end add-in sessions on password change or deactivation.
        from mailconnector import signals  # noqa: F401
