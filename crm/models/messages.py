"""Emails stored whole on records: the Messages relation."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from crm.models.documents import Document
from crm.models.records import Record


class Message(models.Model):
    """One distinct email; the same email stored by two users or two mailboxes is one row."""

    class Direction(models.TextChoices):
        INCOMING = "incoming", "Incoming"
        OUTGOING = "outgoing", "Outgoing"

    class Source(models.TextChoices):
        ADDIN = "addin", "Outlook add-in"
        CONVERTER = "converter", "Mail converter"
        CRM = "crm", "Sent from the CRM"
        IMPORT = "import", "Imported"

    class Completeness(models.TextChoices):
        FULL = "full", "Whole message"
        PARTIAL = "partial", "Partial (attachments follow)"

    identity = models.CharField(max_length=64)  # unique: Meta
    raw = models.FileField(max_length=200)  # content-addressed; the exact bytes received
    raw_sha256 = models.CharField(max_length=64)
    size = models.PositiveBigIntegerField()
    message_id = models.CharField(max_length=998, blank=True)
    # Certified mail (PEC): the Message-ID the provider certified (X-Riferimento-Message-ID),
    # on the envelope and its original. It can differ from both their own Message-IDs, and a
    # customer's reply may quote only it; None for any other email.
    certified_id = models.CharField(max_length=998, null=True, blank=True)
    subject = models.TextField(blank=True)
    from_name = models.CharField(max_length=255, blank=True)
    from_address = models.CharField(max_length=320, blank=True)
    sender = models.CharField(max_length=320, blank=True)
    # [{"name": ..., "email": ...}, ...]
    to = models.JSONField(default=list, blank=True)
    cc = models.JSONField(default=list, blank=True)
    bcc = models.JSONField(default=list, blank=True)
    reply_to = models.JSONField(default=list, blank=True)
    date = models.DateTimeField(null=True, blank=True)
    in_reply_to = models.CharField(max_length=998, blank=True)
    references = models.JSONField(default=list, blank=True)
    auto_submitted = models.CharField(max_length=100, blank=True)
    text_body = models.TextField(blank=True)
    html_body = models.TextField(blank=True)
    direction = models.CharField(max_length=8, choices=Direction.choices)
    source = models.CharField(max_length=16, choices=Source.choices)
    completeness = models.CharField(
        max_length=8, choices=Completeness.choices, default=Completeness.FULL
    )
    defects = models.JSONField(default=list, blank=True)
    stored_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    stored_at = models.DateTimeField()

    class Meta:
        # Declared here rather than with unique=/db_index= on the fields: on PostgreSQL those
        # add a second, pattern-matching index to each column, which no query uses and every
        # stored email pays for.
        constraints = [models.UniqueConstraint(fields=["identity"], name="message_identity")]
        indexes = [
            models.Index(fields=["-date"], name="message_by_date"),
            models.Index(fields=["message_id"], name="message_by_message_id"),
            models.Index(fields=["certified_id"], name="message_by_certified_id"),
            models.Index(fields=["from_address"], name="message_by_from_address"),
        ]

    def __str__(self) -> str:
        return self.subject or "(no subject)"


class MessageLink(models.Model):
    # Indexed by message_link_unique and message_link_by_record, which they lead.
    message = models.ForeignKey(
        Message, on_delete=models.CASCADE, related_name="links", db_index=False
    )
    record = models.ForeignKey(
        Record, on_delete=models.CASCADE, related_name="message_links", db_index=False
    )
    linked_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    via = models.CharField(max_length=16, choices=Message.Source.choices)
    linked_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["message", "record"], name="message_link_unique"),
        ]
        indexes = [models.Index(fields=["record", "-linked_at"], name="message_link_by_record")]

    def __str__(self) -> str:
        return f"{self.message_id} → {self.record_id}"


class Attachment(models.Model):
    """A part of a message (attachment or inline image) and the Document holding its bytes."""

    message = models.ForeignKey(  # indexed by attachment_unique_part, which it leads
        Message, on_delete=models.CASCADE, related_name="attachments", db_index=False
    )
    document = models.ForeignKey(Document, on_delete=models.PROTECT, related_name="attachments")
    filename = models.CharField(max_length=255)
    content_type = models.CharField(max_length=255)
    content_id = models.CharField(max_length=255, blank=True)
    inline = models.BooleanField(default=False)
    part_path = models.CharField(max_length=1000)  # up to 50 MIME levels deep
    size = models.PositiveBigIntegerField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["message", "part_path"], name="attachment_unique_part"),
        ]
        ordering = ["message", "id"]

    def __str__(self) -> str:
        return self.filename


class QuarantinedMessage(models.Model):
    """An email that could not be stored: its exact bytes and why, for an administrator."""

    raw = models.FileField(max_length=200)
    raw_sha256 = models.CharField(max_length=64)
    size = models.PositiveBigIntegerField()
    source = models.CharField(max_length=16, choices=Message.Source.choices)
    origin = models.CharField(max_length=500, blank=True, help_text="File, mailbox or client.")
    error = models.TextField()
    attempts = models.PositiveIntegerField(default=1)
    created_at = models.DateTimeField()
    resolved_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.origin or self.source}: {self.error[:60]}"
