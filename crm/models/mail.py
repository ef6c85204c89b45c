"""Sending mail: the outgoing server's settings and one row per email on its way out.

ARCHITECTURE.md, "Sending mail". The email itself is a Message (stored once, before the first
attempt); `OutgoingMail` follows its delivery, so a retry re-sends the stored bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import Q

from crm import secrets
from crm.models.messages import Message
from crm.models.records import Record


class SmtpSecurity(models.TextChoices):
    SSL = "ssl", "SSL/TLS"
    STARTTLS = "starttls", "STARTTLS"
    NONE = "none", "None (loopback and tests only)"


@dataclass(frozen=True)
class SmtpSettings:
    """Where and how one email is handed over: the CRM's server or an "info" mailbox's.

    A plain value, so that the mail converter can describe its mailboxes' servers to the
    sending core without the CRM knowing about mailboxes.
    """

    host: str
    port: int
    security: str = SmtpSecurity.STARTTLS
    username: str = ""
    password: str = ""
    verify_certificate: bool = True
    timeout_seconds: float = 30

    def __repr__(self) -> str:  # never print the password into a log or a traceback
        return f"SmtpSettings({self.host}:{self.port}, {self.security}, user={self.username!r})"

    def to_stored(self) -> dict[str, Any]:
        """For a queued email's row: the password encrypted (crm.secrets)."""
        return {
            "host": self.host,
            "port": self.port,
            "security": self.security,
            "username": self.username,
            "secret": secrets.encrypt(self.password) if self.password else "",
            "verify_certificate": self.verify_certificate,
            "timeout_seconds": self.timeout_seconds,
        }

    @classmethod
    def from_stored(cls, data: dict[str, Any]) -> SmtpSettings:
        fields = {k: v for k, v in data.items() if k != "secret"}
        return cls(**fields, password=secrets.decrypt(data.get("secret", "")))


class OutgoingMailSettings(models.Model):
    """The one outgoing server (row pk=1), set by an administrator."""

    host = models.CharField("SMTP server", max_length=255, blank=True)
    port = models.PositiveIntegerField(default=587)
    security = models.CharField(
        max_length=8, choices=SmtpSecurity.choices, default=SmtpSecurity.STARTTLS
    )
    verify_certificate = models.BooleanField(default=True)
    username = models.CharField("user name", max_length=320, blank=True)
    # Fernet token (crm.secrets); the password itself is never stored nor shown.
    secret = models.TextField(blank=True, editable=False)
    from_central = models.BooleanField(
        "send all CRM mail from one central address",
        default=False,
        help_text="Otherwise each user's mail leaves from the user's own address.",
    )
    central_address = models.EmailField(blank=True)
    central_name = models.CharField(max_length=255, blank=True)
    open_tracking = models.BooleanField(default=True)
    hourly_cap = models.PositiveIntegerField(
        "automatic mails per hour and sending address",
        default=60,
        help_text="Comments and automatic answers beyond it are refused until the hour passes.",
    )
    timeout_seconds = models.PositiveIntegerField(default=30)
    modified_at = models.DateTimeField(null=True, blank=True)
    modified_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )

    class Meta:
        verbose_name = "outgoing mail settings"
        verbose_name_plural = "outgoing mail settings"
        constraints = [models.CheckConstraint(condition=Q(pk=1), name="outgoing_settings_single")]

    def __str__(self) -> str:
        return self.host or "(no outgoing server)"

    @property
    def password(self) -> str:
        return secrets.decrypt(self.secret)

    def set_password(self, plain: str) -> None:
        self.secret = secrets.encrypt(plain) if plain else ""

    @property
    def configured(self) -> bool:
        return bool(self.host)

    def smtp_settings(self) -> SmtpSettings:
        return SmtpSettings(
            host=self.host,
            port=self.port,
            security=self.security,
            username=self.username,
            password=self.password,
            verify_certificate=self.verify_certificate,
            timeout_seconds=self.timeout_seconds,
        )


class OutgoingMail(models.Model):
    """One email sent from the CRM, from the moment it is stored until the server takes it."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RETRYING = "retrying", "Waiting to retry"
        SENT = "sent", "Sent"
        FAILED = "failed", "Not delivered"

    message = models.ForeignKey(Message, on_delete=models.PROTECT, related_name="deliveries")
    record = models.ForeignKey(Record, on_delete=models.CASCADE, related_name="outgoing_mails")
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    envelope_from = models.CharField(max_length=320)
    # Every envelope recipient (To, Cc and Bcc); Bcc is kept only here, never in the message.
    recipients = models.JSONField(default=list)
    bcc = models.JSONField(default=list, blank=True)
    automatic = models.BooleanField(default=False)
    # The server for this email when it is not the CRM's own (an "info" mailbox's), with its
    # password encrypted; emptied once the email is sent or given up.
    smtp = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.QUEUED)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    smtp_response = models.TextField(blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField()
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(
                fields=["next_attempt_at"],
                condition=Q(status__in=["queued", "retrying"]),
                name="outgoing_due",
            ),
            models.Index(fields=["record", "-created_at"], name="outgoing_by_record"),
            models.Index(
                fields=["envelope_from", "-created_at"],
                condition=Q(automatic=True),
                name="outgoing_automatic_by_sender",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.message_id} → {', '.join(self.recipients)} ({self.status})"


# --- Templates and open tracking (compose on a record) --------------------------------------


class EmailTemplate(models.Model):
    """A text administrators prepare once, with merge fields like `{{ contact.first_name }}`.

    Rendered by crm.services.mail_templates (a whitelist substitution, never the Django template
    engine), so an administrator's text cannot reach anything but the record's visible fields.
    """

    name = models.CharField(max_length=200, unique=True)
    module = models.ForeignKey(
        "crm.Module",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="+",
        help_text="Offered only on this module's records; empty: on every record.",
    )
    subject = models.CharField(max_length=900, blank=True)
    body_html = models.TextField(
        "body",
        blank=True,
        help_text="HTML. Merge fields: {{ record.number }}, {{ record.<field> }}, "
        "{{ contact.first_name }}, {{ company.name }}, {{ user.first_name }}, …",
    )
    is_active = models.BooleanField("offered on the compose page", default=True)
    modified_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class MailCopy(models.Model):
    """One envelope of an email sent with open tracking: the stored Message is one, but each
    tracked recipient receives a copy carrying his own image (crm.services.tracking)."""

    outgoing = models.ForeignKey(OutgoingMail, on_delete=models.CASCADE, related_name="copies")
    # The recipient record whose image this copy carries; none for the untracked rest (Bcc,
    # addresses on no record).
    record = models.ForeignKey(Record, null=True, on_delete=models.SET_NULL, related_name="+")
    recipients = models.JSONField(default=list)
    # Handed over (or refused for good) at; a retry sends only the copies still without it.
    sent_at = models.DateTimeField(null=True, blank=True)
    refused = models.TextField(blank=True)  # the server's answer when it refused them

    def __str__(self) -> str:
        return f"copy of {self.outgoing_id} → {', '.join(self.recipients)}"


class MailOpen(models.Model):
    """How often one recipient record's copy of an email was opened (its image fetched).

    Indicative only: mail clients may prefetch images, or block them. Counted at most once an
    hour per (message, record).
    """

    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="opens")
    record = models.ForeignKey(Record, on_delete=models.CASCADE, related_name="+")
    count = models.PositiveIntegerField(default=1)
    first_at = models.DateTimeField()
    last_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["message", "record"], name="mail_open_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.message_id} opened by {self.record_id}: {self.count}"
