from __future__ import annotations

from django.apps import AppConfig


class MailconverterConfig(AppConfig):
    name = "mailconverter"
    verbose_name = "Mail converter"
    default_auto_field = "django.db.models.BigAutoField"
