"""Files: stored once by content, shown as Documents, linked to records."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from crm.models.records import Record

# Image types worth a thumbnail; anything else (SVG, PSD, EPS: a parser's attack surface) gets none.
THUMBNAIL_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp"})


class Document(models.Model):
    """One distinct file. The same bytes arriving ten times are one Document, stored once.

    The storage name is derived from the sha256 only, never from user text, so hostile
    filenames can never become paths.
    """

    sha256 = models.CharField(max_length=64, unique=True)
    file = models.FileField(max_length=200)
    title = models.CharField(max_length=255)
    content_type = models.CharField(max_length=255, default="application/octet-stream")
    size = models.PositiveBigIntegerField()
    # Made on first request (crm.services.thumbnails.of), not while the file arrives: most are
    # never looked at, and making one costs more than storing the email that carried it.
    thumbnail = models.FileField(max_length=200, blank=True)
    no_thumbnail = models.BooleanField(default=False)  # tried: the bytes are no safe image
    folder = models.CharField(max_length=100, blank=True, default="Email attachments")
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    created_at = models.DateTimeField()

    def __str__(self) -> str:
        return self.title

    @property
    def may_have_thumbnail(self) -> bool:
        if self.thumbnail:
            return True
        return not self.no_thumbnail and self.content_type.lower() in THUMBNAIL_TYPES


class DocumentLink(models.Model):
    document = models.ForeignKey(  # indexed by document_link_unique, which it leads
        Document, on_delete=models.CASCADE, related_name="links", db_index=False
    )
    record = models.ForeignKey(Record, on_delete=models.CASCADE, related_name="document_links")
    linked_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["document", "record"], name="document_link_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.document_id} → {self.record_id}"
