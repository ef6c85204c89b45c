from __future__ import annotations

from django.apps import AppConfig


class MailconverterConfig(AppConfig):
    name = "mailconverter"
    verbose_name = "Mail converter"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # The ticket pages' "Mail information" and "Mark as spam" (crm.web.extensions).
        from mailconverter import extensions

        extensions.install()

        # Comments added in the CRM to a converter ticket are mailed to the customer.
        from crm import hooks
        from mailconverter import replies

        hooks.comment_added.connect(replies.mail_comment, dispatch_uid="mailconverter.replies")
