from __future__ import annotations

from django.conf import settings
from django.db import models

from crm.models.records import Record


class Comment(models.Model):
    record = models.ForeignKey(  # indexed by comment_by_record, which it leads
        Record, on_delete=models.CASCADE, related_name="comments", db_index=False
    )
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # A customer's comment (from mail) has an address instead of a user.
    author_address = models.EmailField(blank=True)
    body = models.TextField()
    created_at = models.DateTimeField()
    via_mail = models.BooleanField(default=False)
    # What became of mailing this comment to the customer ("Mailed to …", "Not mailed: …");
    # blank when nobody was to be mailed. Written by the app that mails it (crm.hooks).
    mail_note = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["record", "-created_at"], name="comment_by_record")]

    def __str__(self) -> str:
        return f"Comment on {self.record_id} at {self.created_at:%Y-%m-%d %H:%M}"
